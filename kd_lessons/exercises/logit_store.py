"""Top-k with a rest bucket as exercise 36: distil from the teacher's k most likely tokens plus one bucket for the rest.

Introduced in notebook 09_coding_exercises; the store and its loss are kd_lessons.generative.logit_store (lesson 16),
the reference is kd_lessons.generative.divergences.topk_kd_loss(renormalize=False). The checker names the usual
mistakes: no rest bucket (renormalised), the rest from log-probs or raw logits instead of probabilities, a log of
a rounding-negative 1 - sum (NaN), the k least likely tokens (an ascending sort), the student's top-k ids.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call, check_function, close, matching_variant
from kd_lessons.generative import divergences as D


def _rest_kl(log_p_top, log_q_top, p_rest, q_rest):
    """KL over the k tokens plus the rest bucket, row mean (p_rest, q_rest: the two rest masses)."""
    kl_top = (log_p_top.exp() * (log_p_top - log_q_top)).sum(-1)
    return (kl_top + torch.xlogy(p_rest, p_rest) - p_rest * q_rest.log()).mean()


def _at_ids(z, v, ids):
    """The teacher's and the student's log-probs at the given ids, and their rest masses (clamped)."""
    log_p, log_q = F.log_softmax(v, -1).gather(-1, ids), F.log_softmax(z, -1).gather(-1, ids)
    return log_p, log_q, (1 - log_p.exp().sum(-1)).clamp_min(0), (1 - log_q.exp().sum(-1)).clamp_min(1e-12)


def _full_k_trial():
    """k = V on rows where 1 - sum of the teacher's probabilities rounds below 0 in float32 (an unclamped log: NaN)."""
    g = torch.Generator().manual_seed(36)
    v = torch.randn(4096, 6, generator=g) * 3
    v = v[(1 - F.log_softmax(v, -1).topk(6, -1).values.exp().sum(-1)) < 0][:16]
    return torch.randn(len(v), 6, generator=g) * 3, v, 6


def trials():
    """(student_logits, teacher_logits, k): [B, V] and [B, L, V] inputs, k = 1 and k = V among them."""
    g = torch.Generator().manual_seed(7)
    out = [(torch.randn(*shape, generator=g) * 3, torch.randn(*shape, generator=g) * 3, k)
           for shape, k in (((4, 10), 3), ((2, 5, 16), 5), ((5, 8), 1))]
    return out + [_full_k_trial()]


def reference(z, v, k):
    idx, lp = D.topk_logprobs(v, k)
    return D.topk_kd_loss(z, idx, lp, renormalize=False)


VARIANTS = (
    Variant("renormalised", "You renormalised the teacher's k probabilities (no rest bucket): that teaches the "
            "student that the tokens outside the top-k are impossible. Keep one more outcome, the rest, with mass "
            "1 - sum of the k probabilities for the teacher and 1 - sum of the student's at the same ids.",
            lambda z, v, k: D.topk_kd_loss(z, *D.topk_logprobs(v, k), renormalize=True)),
    Variant("rest_from_logprobs", "Your rest bucket is 1 - sum of the *log*-probabilities. The rest is a "
            "probability: 1 - sum of exp(log p) over the k tokens (or the logsumexp of the other log-probs).",
            lambda z, v, k: _rest_kl(*_at_ids(z, v, v.topk(k, -1).indices)[:2],
                                     *(1 - t.sum(-1) for t in _at_ids(z, v, v.topk(k, -1).indices)[:2]))),
    Variant("rest_from_logits", "Your rest bucket comes from the raw logits: exp(logit) is not a probability. Take "
            "log_softmax over the whole vocabulary first; the rest is 1 - sum of those k probabilities.",
            lambda z, v, k: _rest_kl(*_at_ids(z, v, v.topk(k, -1).indices)[:2],
                                     *(1 - t.gather(-1, v.topk(k, -1).indices).exp().sum(-1) for t in (v, z)))),
    Variant("ascending_sort", "You kept the k *least* likely tokens: torch.sort sorts in ascending order by default. "
            "Use .topk(k, dim=-1) (largest first) or sort(descending=True)[..., :k].",
            lambda z, v, k: _rest_kl(*_at_ids(z, v, v.sort(-1).indices[..., :k]))),
    Variant("student_ids", "You took the k ids from the *student's* logits. The store holds the teacher's top-k: "
            "pick the ids with the teacher's top-k and read the student's log-probs at those ids.",
            lambda z, v, k: _rest_kl(*_at_ids(z, v, z.topk(k, -1).indices))),
)

NAN_HINT = ("Your loss is NaN (or infinite) where the top-k hold (almost) all the mass, e.g. k = V: 1 - sum p "
            "rounds to 0 or slightly below 0, and its log is -inf or NaN. Clamp the rest (p_rest.clamp_min(0), "
            "q_rest.clamp_min(1e-12)) and write p log p as torch.xlogy(p, p), or take log(rest) as the logsumexp of "
            "the log-probs outside the top-k.")


class TopKRestBucket(Exercise):
    """Exercise 36 of notebook 09_coding_exercises: forward KL over the teacher's top-k plus a rest bucket."""

    number, key, title, fn_name = 36, "topk_rest_bucket", "Top-k with a rest bucket", "topk_rest_kd"
    variants = VARIANTS
    other_mistakes = ("log_of_negative", "detached")
    hint_text = ("log_p = F.log_softmax(teacher_logits, -1); top_lp, idx = log_p.topk(k, dim=-1); read the student "
                 "at the same ids (F.log_softmax(student_logits, -1).gather(-1, idx)); the rests are 1 - sum of "
                 "exp over the k (clamped: rounding can make them slightly negative); KL over the k + 1 outcomes "
                 "per position, then the mean.")
    solution_code = '''def topk_rest_kd(student_logits, teacher_logits, k):
    """Forward KL over the teacher's top-k tokens plus one rest bucket (the remaining mass), mean over positions."""
    top_lp, idx = F.log_softmax(teacher_logits, dim=-1).topk(k, dim=-1)   # the teacher's k most likely tokens
    top_lq = F.log_softmax(student_logits, dim=-1).gather(-1, idx)        # the student at the same ids
    p_rest = (1 - top_lp.exp().sum(-1)).clamp_min(0)                      # rounding can push 1 - sum below 0
    q_rest = (1 - top_lq.exp().sum(-1)).clamp_min(1e-12)
    kl_top = (top_lp.exp() * (top_lp - top_lq)).sum(-1)
    kl_rest = torch.xlogy(p_rest, p_rest) - p_rest * q_rest.log()         # 0 log 0 = 0
    return (kl_top + kl_rest).mean()
'''

    def _check(self, fn) -> None:
        """fn(student_logits, teacher_logits, k) -> scalar loss with a gradient to the student."""
        cases = trials()
        outs = []
        for z, v, k in cases:
            try:
                outs.append(call(fn, z.clone(), v.clone(), k))
            except Incorrect:
                outs.append(None)
        bad = [o is not None and isinstance(o, torch.Tensor) and not bool(torch.isfinite(o).all()) for o in outs]
        if any(bad) and not all(close(o, reference(*c)) for o, c in zip(outs, cases) if o is not None):
            variant = matching_variant(self.variants, outs, cases)
            if variant is not None:
                raise Incorrect(variant.hint, variant.name)
            raise Incorrect(NAN_HINT, "log_of_negative")
        check_function(fn, reference, cases, self.variants, "compute the student's log-probs from student_logits "
                       "without .detach(); only the teacher's side is fixed.")
