"""Per-token divergences between next-token distributions: the losses of generative KD.

Introduced in notebook 10_generative_kd. Logits are [..., V] (V = vocabulary size; the leading dims are
batch and positions), p = softmax(teacher_logits / T), q = softmax(student_logits / T), per position:

- forward_kl = KL(p || q) = sum_v p_v (log p_v - log q_v): mode-covering (the student must put mass
  wherever the teacher does); token-level KD, supervised KD and sequence-level KD use it.
- reverse_kl = KL(q || p) = sum_v q_v (log q_v - log p_v): mode-seeking (the student may drop teacher
  modes but is punished for mass where the teacher has little), as in MiniLLM (Gu et al., ICLR 2024).
- generalized_jsd(beta) = beta KL(p || m) + (1 - beta) KL(q || m) with m = beta p + (1 - beta) q, the
  generalized JSD of GKD (Agarwal et al., ICLR 2024, with P = teacher, Q = student). It is 0 at beta = 0
  and at beta = 1 exactly; near the ends it is a *scaled* KL: JSD(beta) / beta -> forward KL as beta -> 0
  and JSD(beta) / (1 - beta) -> reverse KL as beta -> 1. scaled=True divides by beta (1 - beta), which
  keeps the minimiser and extends continuously to forward KL at beta = 0 and reverse KL at beta = 1.

No T^2 factor here (losses.kd_loss multiplies by T^2 for Hinton's gradient scale; multiply yourself if you
want it). The teacher is detached. mask (shape [...], bool or 0/1, True = count this position) drops
padding and prompt positions; reduction "mean" averages over counted positions, "sum" adds them up,
"none" returns the [...] per-position values with dropped positions set to 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kd_lessons.losses import check_float, check_T, check_unit_interval

__all__ = ["check_beta", "check_pair", "check_mask", "forward_kl", "reverse_kl", "generalized_jsd",
           "topk_logprobs", "topk_mass", "topk_kd_loss"]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------- input checks

def check_beta(beta) -> float:
    """GKD's beta weights the teacher in the mixture, so it must lie in [0, 1]."""
    return check_unit_interval("beta", beta, "beta=0.5 is the symmetric JSD; small beta behaves like forward KL, "
                               "beta near 1 like reverse KL")


def _check_vocab_logits(name: str, logits) -> None:
    """Logits must be finite float tensors [..., V] with at least one position and V >= 1."""
    check_float(name, logits)
    if logits.dim() < 1 or logits.numel() == 0:
        raise ValueError(f"{name} must be a non-empty [..., vocab_size] tensor, got shape {list(logits.shape)}.")


def check_pair(student_logits, teacher_logits) -> None:
    """Teacher and student logits must cover the same positions with the same vocabulary."""
    _check_vocab_logits("student_logits", student_logits)
    _check_vocab_logits("teacher_logits", teacher_logits)
    s, t = list(student_logits.shape), list(teacher_logits.shape)
    if s[:-1] == t[:-1] and s[-1] != t[-1]:
        raise ValueError(f"vocabulary mismatch: the student's logits have {s[-1]} tokens (shape {s}) but the "
                         f"teacher's have {t[-1]} (shape {t}); per-token KD needs one shared tokenizer (same "
                         "tokens in the same order). Build the student with the teacher's vocabulary, or use a "
                         "cross-tokenizer loss: kd_lessons.generative.cross_tokenizer (uld_loss, alignment_loss).")
    if s != t:
        raise ValueError(f"student_logits has shape {s} but teacher_logits has shape {t}; both must be "
                         "[..., vocab_size] for the same sequences and positions (same batch, same length).")


def check_mask(mask, positions: torch.Size) -> torch.Tensor | None:
    """A mask is None or a bool / 0-1 tensor over the positions, selecting at least one of them."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor of shape {list(positions)} (True = count the position), "
                         f"got {type(mask).__name__}.")
    if mask.shape != positions:
        raise ValueError(f"mask has shape {list(mask.shape)} but the logits have positions {list(positions)}; "
                         "pass one entry per position (e.g. attention_mask, or labels != pad_id).")
    if mask.dtype != torch.bool:
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be bool or hold only 0 and 1 (1 = count the position), got other values; "
                             "use mask.bool() on an attention mask.")
        mask = mask == 1
    if not bool(mask.any()):
        raise ValueError("mask selects no position (all False): there is nothing to distil; check the padding "
                         "and prompt masks (True marks tokens that count).")
    return mask


def _reduce(per_position: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Apply the mask and the reduction to [...] per-position values."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    if mask is not None:
        per_position = torch.where(mask, per_position, torch.zeros_like(per_position))
    if reduction == "none":
        return per_position
    total = per_position.sum()
    if reduction == "sum":
        return total
    count = per_position.numel() if mask is None else int(mask.sum())
    return total / count


def _log_probs(student_logits, teacher_logits, T, mask):
    """Checked inputs -> (log q, log p, mask) at temperature T; the teacher is detached."""
    check_pair(student_logits, teacher_logits)
    T = check_T(T)
    mask = check_mask(mask, student_logits.shape[:-1])
    log_q = F.log_softmax(student_logits / T, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach() / T, dim=-1)
    return log_q, log_p, mask


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) over the last dim, with 0 log 0 = 0 (F.kl_div's convention)."""
    return F.kl_div(log_b, log_a, reduction="none", log_target=True).sum(dim=-1)


# ---------------------------------------------------------------- full-vocabulary divergences

def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T=1.0, mask=None,
               reduction: str = "mean") -> torch.Tensor:
    """KL(teacher || student) per token: mode-covering, the word-level KD loss.

    Introduced in notebook 10_generative_kd.
    """
    log_q, log_p, mask = _log_probs(student_logits, teacher_logits, T, mask)
    return _reduce(_kl(log_p, log_q), mask, reduction)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T=1.0, mask=None,
               reduction: str = "mean") -> torch.Tensor:
    """KL(student || teacher) per token: mode-seeking, MiniLLM's choice. Introduced in notebook 10_generative_kd."""
    log_q, log_p, mask = _log_probs(student_logits, teacher_logits, T, mask)
    return _reduce(_kl(log_q, log_p), mask, reduction)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta, T=1.0, mask=None,
                    reduction: str = "mean", scaled: bool = False) -> torch.Tensor:
    """GKD's generalized JSD(beta), between forward and reverse KL. Introduced in notebook 10_generative_kd.

    JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q (p teacher, q student).
    0 <= JSD(beta) <= h(beta) = -beta log beta - (1 - beta) log(1 - beta) <= log 2. Exactly 0 at beta = 0
    and 1; JSD/beta -> KL(p || q) as beta -> 0, JSD/(1 - beta) -> KL(q || p) as beta -> 1. scaled=True
    returns JSD / (beta (1 - beta)), with those limits at the two ends (same minimiser inside).
    """
    beta = check_beta(beta)
    log_q, log_p, mask = _log_probs(student_logits, teacher_logits, T, mask)
    if scaled and beta == 0.0:
        return _reduce(_kl(log_p, log_q), mask, reduction)
    if scaled and beta == 1.0:
        return _reduce(_kl(log_q, log_p), mask, reduction)
    if beta in (0.0, 1.0):  # m equals q (or p): both terms vanish by the definition
        jsd = (log_q * 0.0).sum(dim=-1)  # zero, but keeps the graph so backward() works
    else:
        # log m = logsumexp(log beta + log p, log(1 - beta) + log q): stable for tiny probabilities
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
        jsd = beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
    if scaled:
        jsd = jsd / (beta * (1.0 - beta))
    return _reduce(jsd, mask, reduction)


# ---------------------------------------------------------------- top-k (what an API returns)

def _check_k(k, vocab_size: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab_size:
        raise ValueError(f"k must be an int in [1, {vocab_size}] (the vocabulary size), got k={k!r}; "
                         "APIs typically return k=5 or k=20.")
    return k


def topk_logprobs(teacher_logits: torch.Tensor, k: int, T=1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """What an LLM API returns: the top-k token ids and their full-vocabulary log-probs. Notebook 10_generative_kd.

    Returns (topk_idx int64 [..., k], topk_logprobs float [..., k]), sorted from the most likely token;
    the log-probs are log softmax(teacher_logits / T) over the whole vocabulary, so their exps sum to
    topk_mass <= 1. Detached: an API sends numbers, not a graph.
    """
    _check_vocab_logits("teacher_logits", teacher_logits)
    k, T = _check_k(k, teacher_logits.shape[-1]), check_T(T)
    values, idx = F.log_softmax(teacher_logits.detach() / T, dim=-1).topk(k, dim=-1)
    return idx, values


def topk_mass(teacher_logits: torch.Tensor, k: int, T=1.0) -> torch.Tensor:
    """How much of the teacher's probability its top-k tokens hold (per position).

    Introduced in notebook 10_generative_kd.
    """
    return topk_logprobs(teacher_logits, k, T)[1].exp().sum(dim=-1)


def _check_topk(student_logits, topk_idx, topk_lp) -> None:
    _check_vocab_logits("student_logits", student_logits)
    vocab = student_logits.shape[-1]
    if not isinstance(topk_idx, torch.Tensor) or topk_idx.dtype != torch.int64:
        kind = topk_idx.dtype if isinstance(topk_idx, torch.Tensor) else type(topk_idx).__name__
        raise ValueError(f"topk_idx must be an int64 tensor of token ids, got {kind}; use topk_logprobs(...) "
                         "or torch.as_tensor(ids).long().")
    check_float("topk_logprobs", topk_lp)
    if topk_idx.shape != topk_lp.shape or topk_idx.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(f"topk_idx {list(topk_idx.shape)} and topk_logprobs {list(topk_lp.shape)} must both be "
                         f"[..., k] over the student's positions {list(student_logits.shape[:-1])}.")
    _check_k(topk_idx.shape[-1], vocab)
    if bool((topk_idx < 0).any()) or bool((topk_idx >= vocab).any()):
        raise ValueError(f"topk_idx holds ids from {int(topk_idx.min())} to {int(topk_idx.max())} but the student "
                         f"has a vocabulary of {vocab}: teacher and student must share one tokenizer (different "
                         "tokenizers: kd_lessons.generative.cross_tokenizer).")
    ordered = topk_idx.sort(dim=-1).values
    if bool((ordered[..., 1:] == ordered[..., :-1]).any()):
        raise ValueError("topk_idx repeats a token id within one position; each of the k ids must differ.")
    if bool((topk_lp > 1e-5).any()) or bool((topk_lp.exp().sum(dim=-1) > 1 + 1e-4).any()):
        raise ValueError("topk_logprobs must be log-probabilities (<= 0, their exps summing to <= 1), got values "
                         "that look like logits; pass log_softmax over the whole vocabulary (topk_logprobs()).")


def topk_kd_loss(student_logits: torch.Tensor, topk_idx: torch.Tensor, topk_logprobs: torch.Tensor,
                 renormalize: bool = True, T=1.0, mask=None, reduction: str = "mean") -> torch.Tensor:
    """Forward KL from a teacher that shows only its top-k log-probs (an API). Introduced in notebook 10_generative_kd.

    With P = sum of the teacher's k probs p_i and q = softmax(student_logits / T) over the full vocabulary:
    - renormalize=True: the teacher's k probs are scaled up to sum to 1 (p_i / P), as if the teacher put
      nothing elsewhere; loss = sum_i (p_i / P) (log(p_i / P) - log q_i). Its minimiser puts ALL the
      student's mass on the k tokens, so the student ends up more confident than the teacher (its top-k
      mass -> 1 instead of P): the tail the API did not show is taught to be impossible.
    - renormalize=False: the k tokens plus one 'rest' bucket holding the remaining mass (1 - P for the
      teacher, 1 - sum_i q_i for the student); loss = KL over these k + 1 outcomes. Its minimiser keeps the
      student's tail mass at the teacher's 1 - P (how it spreads inside the tail is left free).
    With k = V both equal forward_kl. topk_logprobs are taken as given (already at the teacher's T); T
    softens only the student here. The teacher's numbers carry no gradient.
    """
    _check_topk(student_logits, topk_idx, topk_logprobs)
    T = check_T(T)
    mask = check_mask(mask, student_logits.shape[:-1])
    log_q_all = F.log_softmax(student_logits / T, dim=-1)
    log_q = log_q_all.gather(-1, topk_idx)
    log_p = topk_logprobs.detach()
    if renormalize:
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
        per_position = _kl(log_p, log_q)
    else:
        finfo = torch.finfo(log_q_all.dtype)
        # the student's non-top-k tokens; a huge finite fill (not -inf) keeps the gradient finite when k = V
        outside = log_q_all.scatter(-1, topk_idx, finfo.min / 2)
        log_q_rest = torch.logsumexp(outside, dim=-1, keepdim=True)    # log(1 - sum_i q_i), stable
        p_rest = 1.0 - log_p.exp().sum(dim=-1, keepdim=True)
        p_rest = torch.where(p_rest > 4 * finfo.eps * log_p.shape[-1], p_rest, 0.0)  # rounding of the sum -> 0
        log_p_rest = p_rest.clamp_min(finfo.tiny).log()
        rest = torch.where(p_rest > 0, p_rest * (log_p_rest - log_q_rest), torch.zeros_like(p_rest))
        per_position = _kl(log_p, log_q) + rest[..., 0]
    return _reduce(per_position, mask, reduction)
