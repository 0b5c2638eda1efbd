"""Speculative sampling's accept / resample step as exercise 34: what keeps the target's text exact.

Introduced in notebook 09_coding_exercises; the method is lesson 16's (kd_lessons.generative.speculative.verify
is the reference). The checker names the usual mistakes: the ratio upside down (q/p), accepting only when
p >= q, resampling from p instead of the residual max(0, p - q), a residual left unnormalised or turned the
wrong way round, counting kept proposals past the first rejection, the target's rows read one position late,
and no bonus id when every proposal is kept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call
from kd_lessons.generative import speculative as sp


def _kept(ratio, u):
    k = len(u)
    ok = u < ratio.clamp(max=1.0)
    return k if bool(ok.all()) else int((~ok).int().argmax())


def _rows(p, q, tokens):
    i = torch.arange(len(tokens))
    return p[i, tokens], q[i, tokens]


def _with(p, q, n, residual):
    return (n, p[n]) if n == len(q) else (n, residual(p[n], q[n]))


def _norm(r):
    return r / r.sum()


def _q_over_p(p, q, t, u):
    px, qx = _rows(p, q, t)
    return _with(p, q, _kept(qx / px, u), lambda a, b: _norm((a - b).clamp_min(0)))


def _deterministic(p, q, t, u):
    px, qx = _rows(p, q, t)
    return _with(p, q, _kept((px >= qx).double() * 2, u), lambda a, b: _norm((a - b).clamp_min(0)))


def _resample_p(p, q, t, u):
    n, _ = sp.verify(p, q, t, u)
    return n, p[n]


def _unnormalised(p, q, t, u):
    n, _ = sp.verify(p, q, t, u)
    return _with(p, q, n, lambda a, b: (a - b).clamp_min(0))


def _swapped_residual(p, q, t, u):
    n, _ = sp.verify(p, q, t, u)
    return _with(p, q, n, lambda a, b: _norm((b - a).clamp_min(0)))


def _no_stop(p, q, t, u):
    n, dist = sp.verify(p, q, t, u)
    px, qx = _rows(p, q, t)
    return int((u < (px / qx).clamp(max=1.0)).sum()), dist


def _one_late(p, q, t, u):
    i = torch.arange(len(t))
    return _with(p, q, _kept(p[i + 1, t] / q[i, t], u), lambda a, b: _norm((a - b).clamp_min(0)))


def _no_bonus(p, q, t, u):
    n, dist = sp.verify(p, q, t, u)
    return (n, None) if n == len(t) else (n, dist)


VERIFY_VARIANTS = (
    Variant("q_over_p", "The ratio is upside down: keep proposal x with probability min(1, p(x) / q(x)), the "
            "target's probability over the draft's. With q/p the draft's favourite ids are kept most.", _q_over_p),
    Variant("deterministic", "You kept a proposal only when p(x) >= q(x). Where p(x) < q(x) it must still be "
            "kept with probability p(x) / q(x): compare the uniform u with min(1, p(x) / q(x)).", _deterministic),
    Variant("resample_from_p", "At the first rejection you sampled from p. The kept proposals already gave each "
            "id min(p, q) of its mass; the rest must come from the residual max(0, p - q), renormalised, or the "
            "text is no longer the target's.", _resample_p),
    Variant("unnormalised", "The residual max(0, p - q) sums to 1 - sum(min(p, q)), not 1: divide it by its sum "
            "before sampling from it.", _unnormalised),
    Variant("swapped_residual", "The residual is max(0, p - q), the mass the target wants and the draft did not "
            "offer; you took max(0, q - p).", _swapped_residual),
    Variant("no_stop", "You counted every proposal that passed its test. A round stops at the first rejection: "
            "the ids after it were drawn after a rejected one and must be thrown away.", _no_stop),
    Variant("one_late", "Row i of p is the target's distribution where proposal i was drawn (the same context "
            "as row i of q); you compared proposal i with row i + 1.", _one_late),
    Variant("no_bonus", "When all gamma proposals are kept, the target's last row p[gamma] is free: return it "
            "so one more id is drawn from it (the bonus id; a round always adds at least one id).", _no_bonus),
)


def _trial(g, k, V, u=None):
    p = F.softmax(torch.randn(k + 1, V, generator=g, dtype=torch.float64) * 2, -1)
    q = F.softmax(torch.randn(k, V, generator=g, dtype=torch.float64) * 2, -1)
    tokens = torch.multinomial(q, 1, generator=g)[:, 0]
    return p, q, tokens, torch.rand(k, generator=g, dtype=torch.float64) if u is None else u


def verify_trials():
    """Inputs that tell every variant apart: random rounds, one where all proposals are kept, small cases."""
    g = torch.Generator().manual_seed(34)
    out = [_trial(g, k, V) for k, V in ((3, 5), (4, 6), (2, 4), (3, 5), (5, 7), (1, 3), (4, 5), (3, 6))]
    out.append(_trial(g, 3, 5, torch.full((3,), 1e-3, dtype=torch.float64)))  # every proposal kept: the bonus
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], dtype=torch.float64)
    q = torch.tensor([[0.25, 0.5, 0.25], [0.3, 0.3, 0.4]], dtype=torch.float64)
    out.append((p, q, torch.tensor([1, 2]), torch.tensor([0.5, 0.7], dtype=torch.float64)))
    return out


def _plain(out, k):
    """(n as int, dist or None) from what the learner returned; Incorrect if it is neither."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Incorrect("return a pair (n_kept, next_dist): how many proposals were kept, and the distribution "
                        f"to draw the next id from; got {type(out).__name__}.", None)
    n, dist = out
    try:
        n = int(n)
    except (TypeError, ValueError, RuntimeError):
        raise Incorrect(f"n_kept must be a whole number 0..{k}; got {n!r}.", None) from None
    if dist is not None and not isinstance(dist, torch.Tensor):
        raise Incorrect(f"next_dist must be a tensor over the vocabulary; got {type(dist).__name__}.", None)
    return n, dist


def _same(a, b) -> bool:
    if a[0] != b[0] or (a[1] is None) != (b[1] is None):
        return False
    return a[1] is None or (a[1].shape == b[1].shape and bool(torch.allclose(a[1].double(), b[1].double(),
                                                                            rtol=1e-5, atol=1e-7)))


class SpeculativeAccept(Exercise):
    """Exercise 34 of notebook 09_coding_exercises: speculative sampling's accept / resample step."""

    number, key, title, fn_name = 34, "speculative_accept", "Speculative sampling's accept step", "spec_verify"
    variants = VERIFY_VARIANTS
    hint_text = ("For i = 0..k-1: keep proposal tokens[i] if u[i] < min(1, p[i, x] / q[i, x]); at the first "
                 "rejection i return (i, r / r.sum()) with r = (p[i] - q[i]).clamp(min=0); if all k are kept "
                 "return (k, p[k]), the bonus row.")
    solution_code = '''def spec_verify(p, q, tokens, u):
    """(n kept, next-id distribution) for proposals tokens [k] with target rows p [k+1, V], draft rows q [k, V]."""
    for i, x in enumerate(tokens.tolist()):
        if u[i] >= min(1.0, float(p[i, x] / q[i, x])):   # rejected: draw the next id from the residual
            residual = (p[i] - q[i]).clamp(min=0)
            return i, residual / residual.sum()
    return len(tokens), p[len(tokens)]                    # all kept: the bonus id comes from p's last row
'''

    def _check(self, fn) -> None:
        """fn(p, q, tokens, u) -> (n_kept, next_dist), compared with speculative.verify on every trial."""
        trials = verify_trials()
        outs = [_plain(call(fn, *(a.clone() for a in args)), len(args[2])) for args in trials]
        if all(_same(o, sp.verify(*args)) for o, args in zip(outs, trials)):
            return
        for variant in self.variants:
            if all(_same(o, variant.fn(*args)) for o, args in zip(outs, trials)):
                raise Incorrect(variant.hint, variant.name)
        wrong = next(args for o, args in zip(outs, trials) if not _same(o, sp.verify(*args)))
        n, dist = sp.verify(*wrong)
        raise Incorrect(f"for tokens {wrong[2].tolist()} and u {[round(v, 3) for v in wrong[3].tolist()]} the "
                        f"reference keeps {n} and draws the next id from {[round(v, 3) for v in dist.tolist()]}.",
                        None)
