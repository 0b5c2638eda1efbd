"""Generative KD methods as plug-ins for train_lm (loss_fn / batch_fn), each counting what it costs.

Introduced in notebook 10_generative_kd. Every plug-in is a callable `loss_fn(model, x, y)` (and, where
the data changes, a `batch_fn(generator) -> (x, y)`), so all methods share `lm.train_lm`; each registers
(kd_lessons.methods.registry, family "generative") with its paper: `scratch_loss` (cross-entropy, targets -100
skipped); `TokenKD` (per-position forward KL at T mixed with CE by alpha); `transfer_corpus` (cached once) +
`SequenceKD` (CE on text the teacher wrote); `OnPolicyKD` (the student samples with probability lam, the teacher
scores every position: GKD's generalized JSD(beta), or per-token reverse KL; MiniLLM, Gu et al. 2024, optimises
the sequence-level reverse KL by policy gradient: not reproduced); `topk_pool` + `TopKKD` (an API's top-k).

What the teacher prepares once for these plug-ins (the transfer corpus, the top-k pool) and `CostMeter`
(teacher and student forward positions, generated characters, the positions that carry a loss: the lesson's
cost model measured from the runs) are kd_lessons.generative.transfer_data's, re-exported here.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.generative.divergences import forward_kl, generalized_jsd, reverse_kl, topk_kd_loss
from kd_lessons.generative.transfer_data import (
    CostMeter,
    TransferSettings,
    _generation_positions,
    cached_transfer_corpus,
    teacher_logits,
    topk_pool,
    transfer_corpus,
)
from kd_lessons.generative.transformer import generate
from kd_lessons.losses import check_T
from kd_lessons.methods.registry import register

__all__ = ["IGNORE", "CostMeter", "scratch_loss", "teacher_logits", "TokenKD", "TransferSettings", "transfer_corpus",
           "cached_transfer_corpus", "SequenceKD", "OnPolicyKD", "topk_pool", "TopKKD", "DIVERGENCES"]

IGNORE = -100  # a target that cross-entropy skips (prompt positions of teacher-generated text)
DIVERGENCES = ("jsd", "reverse", "forward")
_ON_POLICY = {"beta": "beta", "lam": "lam", "prompt_len": "onpolicy_prompt"}  # OnPolicyKD parameter: recipe key


@register("scratch", "generative", "(no teacher: the baseline)", {},
          build=lambda teacher, rec, meter=None, **_: functools.partial(scratch_loss, meter=meter))
def scratch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, meter: CostMeter | None = None) -> torch.Tensor:
    """Next-character cross-entropy (nats), skipping targets equal to IGNORE: training from the text alone."""
    logits = model(x)
    if meter is not None:
        meter.corpus_batches += 1
        meter.trained_positions += int((y != IGNORE).sum())
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (the weight of the KD term), got alpha={alpha!r}.")
    return float(alpha)


@register("token KD", "generative", "Kim & Rush 2016", {"T": 1.0, "alpha": 1.0}, recipe_keys=("T", "alpha"))
class TokenKD:
    """Token-level KD: alpha T^2 KL(teacher_T || student_T) + (1 - alpha) CE per position. Notebook 10_generative_kd."""

    def __init__(self, teacher: nn.Module, T: float = 1.0, alpha: float = 1.0, meter: CostMeter | None = None):
        self.teacher, self.T, self.alpha = teacher, check_T(T), _check_alpha(alpha)
        self.meter = meter if meter is not None else CostMeter()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.meter.corpus_batches += 1
        self.meter.trained_positions += y.numel()
        student_logits = model(x)
        kd = forward_kl(student_logits, teacher_logits(self.teacher, x, self.meter), T=self.T) * self.T ** 2
        if self.alpha == 1.0:
            return kd
        ce = F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]), y.reshape(-1))
        return self.alpha * kd + (1.0 - self.alpha) * ce


@register("seq-level KD", "generative", "Kim & Rush 2016", {"batch_size": 16}, recipe_keys=("batch_size",))
class SequenceKD:
    """Sequence-level KD: cross-entropy on the teacher's text (prompt targets skipped). Notebook 10_generative_kd.

    `batch_fn` draws batch_size rows of a `transfer_corpus` in epochs (a fresh shuffle each time the rows run
    out, so no row repeats before every row has been read, as a fine-tuning run reads its data); `__call__` is
    the loss_fn.
    """

    def __init__(self, transfer: dict, batch_size: int, meter: CostMeter | None = None):
        ids = transfer.get("ids") if isinstance(transfer, dict) else None
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] < 2:
            raise ValueError("transfer must be the dict of transfer_corpus(...) with ids [n, length + 1]")
        self.ids, self.prompt_len, self.batch_size = ids, int(transfer["prompt_len"]), batch_size
        self.meter = meter if meter is not None else CostMeter()
        self._queue = torch.empty(0, dtype=torch.long)  # row order of the epoch being read

    def batch_fn(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self._queue) < self.batch_size:  # the epoch ran out: append a new shuffle of every row
            self._queue = torch.cat([self._queue, torch.randperm(len(self.ids), generator=generator)])
        rows, self._queue = self.ids[self._queue[:self.batch_size]], self._queue[self.batch_size:]
        x, y = rows[:, :-1], rows[:, 1:].clone()
        y[:, :self.prompt_len - 1] = IGNORE  # those targets are corpus text, not the teacher's
        return x, y

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return scratch_loss(model, x, y, self.meter)  # counts the batch and its positions


@register("reverse KL on-policy", "generative", "Agarwal et al. 2024",  # decorators apply bottom-up: GKD first
          {"divergence": "reverse", "beta": 0.5, "lam": 0.5, "prompt_len": 32}, recipe_keys=_ON_POLICY)
@register("on-policy GKD", "generative", "Agarwal et al. 2024",
          {"divergence": "jsd", "beta": 0.5, "lam": 0.5, "prompt_len": 32}, recipe_keys=_ON_POLICY)
class OnPolicyKD:
    """On-policy distillation (GKD): the student samples, the teacher scores every position. Notebook 10_generative_kd.

    Each step a coin (own generator, seeded) decides: with probability lam the student continues the
    first prompt_len characters of each corpus window with its own samples (at T_sample, eval mode, no
    grad) and the loss is taken on the sampled positions only; otherwise on the corpus window itself.
    divergence: "jsd" (generalized JSD(beta), GKD's default family), "reverse" (per-token reverse KL,
    GKD's reverse-KL variant; MiniLLM optimises a sequence-level version with policy gradients) or
    "forward". `last_x` and `last_sampled` keep the last batch for inspection.
    """

    def __init__(self, teacher: nn.Module, divergence: str = "jsd", beta: float = 0.5, lam: float = 0.5,
                 prompt_len: int = 32, T_sample: float = 1.0, seed: int = 0, meter: CostMeter | None = None):
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}.")
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be a probability in [0, 1] (share of on-policy batches), got lam={lam!r}.")
        if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or prompt_len < 1:
            raise ValueError(f"prompt_len must be an int >= 1 (corpus characters before sampling), got {prompt_len!r}.")
        self.teacher, self.divergence, self.beta, self.lam = teacher, divergence, beta, float(lam)
        self.prompt_len, self.T_sample = prompt_len, check_T(T_sample)
        self.coin = torch.Generator().manual_seed(seed)
        self.sampler = torch.Generator().manual_seed(seed + 1)
        self.meter = meter if meter is not None else CostMeter()
        self.last_x, self.last_sampled = None, False

    def _divergence(self, student_logits, teacher_logits, mask):
        if self.divergence == "jsd":
            return generalized_jsd(student_logits, teacher_logits, self.beta, mask=mask)
        fn = reverse_kl if self.divergence == "reverse" else forward_kl
        return fn(student_logits, teacher_logits, mask=mask)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        if not self.prompt_len < L:
            raise ValueError(f"prompt_len={self.prompt_len} must be shorter than the windows ({L} characters)")
        sampled = bool(torch.rand((), generator=self.coin) < self.lam)
        mask = None
        if sampled:
            num_tokens = L - self.prompt_len
            x = generate(model, x[:, :self.prompt_len].cpu(), num_tokens, T=self.T_sample,
                         generator=self.sampler).to(x.device)  # eval mode + no grad inside; mode restored
            mask = torch.zeros_like(x, dtype=torch.bool)
            mask[:, self.prompt_len - 1:] = True  # distributions of the sampled characters (and the next one)
            self.meter.sampled_batches += 1
            self.meter.student_generated += x.shape[0] * num_tokens
            self.meter.student_generation_positions += _generation_positions(x.shape[0], self.prompt_len,
                                                                             num_tokens, model.context)
        else:
            self.meter.corpus_batches += 1
        self.last_x, self.last_sampled = x.detach(), sampled
        self.meter.trained_positions += x.numel() if mask is None else int(mask.sum())
        return self._divergence(model(x), teacher_logits(self.teacher, x, self.meter), mask)


@register("top-k KD", "generative", "(no paper: an API's top-k)", {"k": 5, "batch_size": 16, "renormalize": True},
          recipe_keys={"k": "topk", "batch_size": "batch_size", "renormalize": "topk_renormalize"})
class TopKKD:
    """Forward KL from cached top-k log-probs, renormalised or with a 'rest' bucket. Notebook 10_generative_kd.

    `batch_fn` draws batch_size windows of a `topk_pool`; `__call__` (the loss_fn) uses their first k
    cached log-probs (kd_lessons.generative.divergences.topk_kd_loss). The teacher is never run here.
    """

    def __init__(self, pool: dict, k: int, batch_size: int, renormalize: bool = True, meter: CostMeter | None = None):
        if not 1 <= k <= pool["idx"].shape[-1]:
            raise ValueError(f"k={k!r}: the pool holds the top {pool['idx'].shape[-1]} log-probs; use 1 <= k <= that")
        self.pool, self.k, self.batch_size, self.renormalize = pool, k, batch_size, renormalize
        self.meter = meter if meter is not None else CostMeter()
        self.rows = None

    def batch_fn(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        self.rows = torch.randint(0, len(self.pool["x"]), (self.batch_size,), generator=generator)
        return self.pool["x"][self.rows], self.pool["y"][self.rows]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.rows is None:
            raise ValueError("TopKKD's loss needs its own batches: pass batch_fn=plugin.batch_fn to train_lm")
        idx = self.pool["idx"][self.rows, :, :self.k].long().to(x.device)
        lp = self.pool["logprobs"][self.rows, :, :self.k].to(x.device)
        self.meter.corpus_batches += 1
        self.meter.trained_positions += y.numel()
        return topk_kd_loss(model(x), idx, lp, renormalize=self.renormalize)
