"""Speculative sampling: a small draft proposes, the target verifies in one pass, and the text is still the target's.

Introduced in lesson 16 (LLM distillation as practised; Leviathan et al., 2023; Chen et al., 2023). Each round the draft
proposes gamma ids one at a time from q = softmax(draft / T) with its key/value cache; the target scores the
last committed id and all gamma proposals in ONE cached forward pass (gamma + 1 distributions p); proposal i
is kept with probability min(1, p(x_i) / q(x_i)); at the first rejection the next id is drawn from
norm(max(0, p - q)), and when all are kept one bonus id is drawn from p. Both caches are then cut back to the
committed text. The ids are distributed exactly as the target's own samples at T
(tests/test_generative_speculative.py checks it by a chi-square test); only the cost changes. `verify` is the
accept / resample step (exercise 34 of lesson 09), `target_only` the cached baseline, and the formulas give
the expected ids per target call, the theoretical speedup and the per-token acceptance 1 - TV(p, q).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kd_lessons.generative.kv_cache import _attend, cached_generate
from kd_lessons.generative.transformer import CharTransformer, _device

__all__ = ["SpecResult", "verify", "speculative_generate", "target_only", "expected_tokens_per_call",
           "theoretical_speedup", "alpha_from_counts", "acceptance_rate", "exact_alpha"]


@dataclass
class SpecResult:
    """Prompt + new ids and what it cost: proposals, acceptances, rejections, forward calls of each model."""

    ids: torch.Tensor      # [prompt + num_tokens]
    new_tokens: int
    proposed: int = 0      # draft ids offered to the target
    accepted: int = 0      # of them kept
    rejected: int = 0      # rounds that ended at a rejection (the rest kept all and drew a bonus id)
    target_calls: int = 0  # target forward passes (one per round)
    draft_calls: int = 0   # draft forward passes

    @property
    def acceptance(self) -> float:
        """Kept / proposed (proposals after a rejection are never tested, so this is below alpha)."""
        return self.accepted / self.proposed if self.proposed else float("nan")

    @property
    def alpha_hat(self) -> float:
        """The per-token acceptance estimated from the counts (alpha_from_counts)."""
        return alpha_from_counts(self.accepted, self.rejected)

    @property
    def tokens_per_call(self) -> float:
        """New ids per target forward pass: 1 for target-only decoding, up to gamma + 1 here."""
        return self.new_tokens / self.target_calls if self.target_calls else float("nan")


def verify(p: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor, u: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The accept / resample step: (ids kept, distribution of the next id). Notebook 16; exercise 34.

    p [k + 1, V]: the target's probabilities at each proposal and after the last one; q [k, V]: the draft's;
    tokens [k]: the proposals; u [k]: uniforms. Proposal i is kept while u_i < min(1, p_i(x_i) / q_i(x_i));
    at the first rejection j the next id comes from norm(max(0, p_j - q_j)), and after k kept from p_k (bonus).
    """
    k = tokens.shape[0]
    rows = torch.arange(k, device=tokens.device)
    px, qx = p[rows, tokens], q[rows, tokens]
    kept = u < torch.clamp(px / qx, max=1.0)
    n = k if bool(kept.all()) else int((~kept).int().argmax())
    if n == k:
        return n, p[k]
    residual = (p[n] - q[n]).clamp_min(0.0)
    total = residual.sum()
    return n, residual / total if total > 0 else p[n]  # total 0 only when p == q, where nothing is rejected


def _extend(model: CharTransformer, ids: torch.Tensor, start: int, cache: list) -> torch.Tensor:
    """Logits [n, V] of every new position after feeding ids [1, n] at positions start.. (cache extended)."""
    h = model.tok(ids) + model.pos(torch.arange(start, start + ids.shape[1], device=ids.device))
    for layer, block in enumerate(model.blocks):
        h = h + _attend(block.attn, block.ln1(h), cache, layer)
        h = h + block.mlp(block.ln2(h))
    return model.head(model.ln_f(h))[0]


class _Cached:
    """One model with its key/value cache over the committed text: feed the uncached ids, roll back.

    Each model runs on its own device (a CPU draft can serve a CUDA target): ids go to it, logits stay there.
    """

    def __init__(self, model: CharTransformer):
        self.model, self.cache, self.calls = model, [None] * len(model.blocks), 0
        self.device = _device(model)

    def __len__(self) -> int:
        return 0 if self.cache[0] is None else self.cache[0][0].shape[2]

    def feed(self, seq: list, upto: int) -> torch.Tensor:
        start = len(self)
        self.calls += 1
        return _extend(self.model, torch.tensor([seq[start:upto]], device=self.device), start, self.cache)

    def rollback(self, length: int) -> None:
        self.cache = [kv if kv is None else (kv[0][:, :, :length], kv[1][:, :, :length]) for kv in self.cache]


@contextmanager
def _inference(*models):
    """Eval mode and inference mode inside (only models in train mode are switched, and switched back)."""
    training = [m for m in models if m.training]
    for m in training:
        m.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for m in training:
            m.train()


def _draw(probs: torch.Tensor, generator) -> int:
    where = generator.device if generator is not None else probs.device
    return int(torch.multinomial(probs.float().to(where), 1, generator=generator))


def _prompt(prompt_idx: torch.Tensor, models, num_tokens: int) -> list:
    """The prompt as a list of ids, after checking it fits every model's context with the new ids."""
    if prompt_idx.dim() == 2 and prompt_idx.shape[0] == 1:
        prompt_idx = prompt_idx[0]
    if prompt_idx.dim() != 1 or prompt_idx.is_floating_point():
        raise ValueError(f"prompt_idx must be integer ids [L] (one sequence), got {prompt_idx.dtype} "
                         f"{tuple(prompt_idx.shape)}; run one prompt at a time")
    if prompt_idx.numel() < 1:
        raise ValueError("prompt_idx is empty; pass at least one id (e.g. the id of '\\n')")
    limit = min(m.context for m in models)
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
        raise ValueError(f"num_tokens={num_tokens!r}: use an integer >= 0")
    if prompt_idx.numel() + num_tokens > limit:
        raise ValueError(f"prompt of {prompt_idx.numel()} ids + {num_tokens} new ones exceeds the context of "
                         f"{limit} positions (the smaller model's); shorten the prompt or ask for fewer ids")
    return prompt_idx.tolist()


def _check(target, draft, gamma, T) -> None:
    for name, m in (("target", target), ("draft", draft)):
        if not isinstance(m, CharTransformer):
            raise ValueError(f"{name} must be a CharTransformer (its layers are reused), got {type(m).__name__}")
    if draft.vocab_size != target.vocab_size:
        raise ValueError(f"the draft has {draft.vocab_size} tokens and the target {target.vocab_size}: "
                         "speculative sampling compares their probabilities id by id, so both need the same "
                         "tokenizer; build the draft with the target's vocabulary")
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
        raise ValueError(f"gamma={gamma!r}: the draft proposes gamma ids per round; use an integer >= 1 "
                         "(e.g. 4)")
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not T > 0:
        raise ValueError(f"T={T!r}: use a temperature > 0 (1.0 = the models' own distributions)")


def speculative_generate(target: CharTransformer, draft: CharTransformer, prompt_idx: torch.Tensor,
                         num_tokens: int, gamma: int = 4, T: float = 1.0,
                         generator: torch.Generator | None = None) -> SpecResult:
    """Prompt + num_tokens ids sampled from the target at T, with the draft's proposals. Notebook 16.

    One prompt [L] (or [1, L]); the whole text must fit both contexts. Returns a SpecResult (ids on the
    prompt's device, counts). Same generator seed, same ids.
    """
    _check(target, draft, gamma, T)
    seq = _prompt(prompt_idx, (target, draft), num_tokens)
    start_len, device = len(seq), _device(target)
    out = SpecResult(ids=prompt_idx, new_tokens=num_tokens)
    big, small = _Cached(target), _Cached(draft)
    with _inference(target, draft):
        while len(seq) - start_len < num_tokens:
            L = len(seq)
            k = min(gamma, start_len + num_tokens - L)
            q_rows = []
            for _ in range(k):
                q_rows.append(F.softmax(small.feed(seq, len(seq))[-1].float() / T, dim=-1).to(device))
                seq.append(_draw(q_rows[-1], generator))
            p = F.softmax(big.feed(seq, L + k)[-(k + 1):].float() / T, dim=-1)
            where = generator.device if generator is not None else device
            u = torch.rand(k, generator=generator, device=where).to(device)
            n, dist = verify(p, torch.stack(q_rows), torch.tensor(seq[L:L + k], device=device), u)
            del seq[L + n:]
            seq.append(_draw(dist, generator))
            out.proposed, out.accepted, out.rejected = out.proposed + k, out.accepted + n, out.rejected + (n < k)
            big.rollback(L + n)
            small.rollback(L + n)
    out.target_calls, out.draft_calls = big.calls, small.calls
    out.ids = torch.tensor(seq[:start_len + num_tokens], dtype=torch.long, device=prompt_idx.device)
    return out


def target_only(target: CharTransformer, prompt_idx: torch.Tensor, num_tokens: int, T: float = 1.0,
                generator: torch.Generator | None = None) -> SpecResult:
    """The baseline: the target alone with its key/value cache (kv_cache.cached_generate), one call per id."""
    seq = _prompt(prompt_idx, (target,), num_tokens)
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not T > 0:
        raise ValueError(f"T={T!r}: use a temperature > 0 (1.0 = the model's own distribution)")
    ids = cached_generate(target, torch.tensor(seq, device=prompt_idx.device), num_tokens, T=T, generator=generator)
    return SpecResult(ids=ids, new_tokens=num_tokens, target_calls=max(num_tokens, 1))


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r}: the acceptance rate is a probability in [0, 1]")
    return float(alpha)


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """(1 - alpha^(gamma + 1)) / (1 - alpha): expected ids per target call at acceptance alpha. Notebook 16."""
    alpha = _check_alpha(alpha)
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 0:
        raise ValueError(f"gamma={gamma!r}: use an integer >= 0 (0 = target-only decoding)")
    return float(gamma + 1) if alpha == 1.0 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


def theoretical_speedup(alpha: float, gamma: int, c: float) -> float:
    """(1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1)): Leviathan et al.'s walltime factor. Notebook 16.

    c: the draft's time per forward call over the target's. Assumes a target call on gamma + 1 positions
    costs what a call on one position does (true on parallel hardware; on a CPU it costs more).
    """
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not c >= 0:
        raise ValueError(f"c={c!r}: the draft / target cost ratio must be a number >= 0")
    return expected_tokens_per_call(alpha, gamma) / (gamma * c + 1)


def alpha_from_counts(accepted: int, rejected: int) -> float:
    """accepted / (accepted + rejected): the maximum-likelihood alpha if each proposal is kept with prob alpha.

    Notebook 16. A round stops at its first rejection, so the tested proposals are the kept ones plus one per
    rejecting round; dividing by all proposals would count untested ones as rejected.
    """
    tested = accepted + rejected
    return accepted / tested if tested else float("nan")


def acceptance_rate(target_logits: torch.Tensor, draft_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Per position sum_v min(p_v, q_v) = 1 - TV(p, q): the chance a draft id is kept there. Notebook 16."""
    if target_logits.shape[-1] != draft_logits.shape[-1]:
        raise ValueError(f"the target's logits have {target_logits.shape[-1]} tokens and the draft's "
                         f"{draft_logits.shape[-1]}: speculative sampling needs one shared vocabulary")
    p = F.softmax(target_logits.float() / T, dim=-1)
    q = F.softmax(draft_logits.float() / T, dim=-1)
    return torch.minimum(p, q).sum(-1)


def exact_alpha(target: CharTransformer, draft: CharTransformer, windows: torch.Tensor, T: float = 1.0,
                from_position: int = 0) -> float:
    """Mean of 1 - TV(p, q) over the windows [B, L] (held-out text, or target samples), positions >= from_position.

    Notebook 16. Position t predicts id t + 1: for samples after a prompt of P ids, from_position=P - 1 scores
    the generated ids only.
    """
    _check(target, draft, 1, T)
    if not 0 <= from_position < windows.shape[-1]:
        raise ValueError(f"from_position={from_position!r}: use 0..{windows.shape[-1] - 1} (the windows' positions)")
    with _inference(target, draft):
        x = windows.to(_device(target))
        rate = acceptance_rate(target(x), draft(x.to(_device(draft))).to(x.device), T)
        return float(rate[:, from_position:].mean())
