"""Known wrong answers for the coding exercises, each with the hint that names the mistake.

Introduced in notebook 09_coding_exercises. A checker computes every variant on the same inputs
as the learner's function; if the learner's output matches one, its hint names the mistake.
Most variants are modelled on the source articles' real bugs (/work/shared/seeds/ERRATA.md).
"""
from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from kd_lessons.losses import kd_loss


class Variant(NamedTuple):
    """One wrong answer: a short name, the hint shown to the learner, and how to compute it."""

    name: str
    hint: str
    fn: Callable


def _kl(log_q, p, reduction="batchmean"):
    """F.kl_div(input=log q, target=p): KL(p || q) with the given reduction."""
    return F.kl_div(log_q, p, reduction=reduction)


def _soft(z, T):
    """softmax(z / T) over classes."""
    return F.softmax(z / T, dim=1)


def _log_soft(z, T):
    """log_softmax(z / T) over classes."""
    return F.log_softmax(z / T, dim=1)


# ---------------------------------------------------------------- softmax with temperature

SOFTMAX_VARIANTS = [
    Variant("no_temperature", "You ignored T: this is softmax(logits). Divide the logits by T first: "
            "softmax(logits / T).", lambda z, T: F.softmax(z, dim=-1)),
    Variant("times_T", "You multiplied the logits by T; that sharpens when T > 1. Divide instead: "
            "softmax(logits / T).", lambda z, T: F.softmax(z * T, dim=-1)),
    Variant("over_T_squared", "You divided by T**2; the temperature divides the logits once: "
            "softmax(logits / T).", lambda z, T: F.softmax(z / T**2, dim=-1)),
    Variant("dim0", "Your probabilities sum to 1 over the batch (dim=0). Normalise over the classes: "
            "dim=-1 (or dim=1).", lambda z, T: F.softmax(z / T, dim=0)),
    Variant("log_probs", "You returned log-probabilities (log_softmax). Return probabilities: "
            "softmax(logits / T), or .exp() the log-probabilities.", lambda z, T: F.log_softmax(z / T, dim=-1)),
    Variant("T_after_softmax", "You divided the probabilities by T after the softmax, so they no longer "
            "sum to 1. Divide the logits before: softmax(logits / T).", lambda z, T: F.softmax(z, dim=-1) / T),
]

# ---------------------------------------------------------------- KD loss (student_logits, teacher_logits, T)

KD_VARIANTS = [
    Variant("reduction_mean", "Your loss is num_classes times too small: reduction='mean' averages over "
            "the classes as well as the batch (the source articles' nn.KLDivLoss() default). Use "
            "reduction='batchmean'.", lambda z, v, T: T * T * _kl(_log_soft(z, T), _soft(v, T), "mean")),
    Variant("no_T_squared", "Your loss is T**2 times too small: multiply the KL by T**2, so the soft "
            "term's gradient does not shrink like 1/T**2 when you raise T.",
            lambda z, v, T: _kl(_log_soft(z, T), _soft(v, T))),
    Variant("mean_and_no_T_squared", "Your loss is num_classes * T**2 times too small: reduction='mean' "
            "and no T**2 factor (both mistakes of the source articles' nn.KLDivLoss()). Use "
            "reduction='batchmean' and multiply by T**2.",
            lambda z, v, T: _kl(_log_soft(z, T), _soft(v, T), "mean")),
    Variant("times_T", "Your loss is T times too small: the factor is T**2, not T.",
            lambda z, v, T: T * _kl(_log_soft(z, T), _soft(v, T))),
    Variant("reduction_sum", "Your loss is batch_size times too large: reduction='sum' adds the samples "
            "up. Use reduction='batchmean'.", lambda z, v, T: T * T * _kl(_log_soft(z, T), _soft(v, T), "sum")),
    Variant("per_sample", "You returned one loss per sample; average over the batch (sum over classes, "
            "mean over samples: reduction='batchmean').",
            lambda z, v, T: T * T * _kl(_log_soft(z, T), _soft(v, T), "none").sum(dim=1)),
    Variant("probs_as_input", "F.kl_div / nn.KLDivLoss expects log-probabilities as its first argument: "
            "you passed probabilities. Use F.log_softmax(student_logits / T, dim=1).",
            lambda z, v, T: T * T * _kl(_soft(z, T), _soft(v, T))),
    Variant("log_target_not_flagged", "You passed the teacher's log-probabilities as the target without "
            "log_target=True. Pass probabilities, softmax(teacher_logits / T), or set log_target=True.",
            lambda z, v, T: T * T * _kl(_log_soft(z, T), _log_soft(v, T))),
    Variant("swapped", "Arguments swapped: you computed KL(student || teacher). F.kl_div(input, target) "
            "takes the student's log-probabilities as input and the teacher's probabilities as target.",
            lambda z, v, T: T * T * _kl(_log_soft(v, T), _soft(z, T))),
    Variant("teacher_not_softened", "Temperature on one side only: the teacher's probabilities were not "
            "softened. Divide teacher_logits by T too.",
            lambda z, v, T: T * T * _kl(_log_soft(z, T), _soft(v, 1.0))),
    Variant("student_not_softened", "Temperature on one side only: the student's logits were not divided "
            "by T. Use F.log_softmax(student_logits / T, dim=1).",
            lambda z, v, T: T * T * _kl(_log_soft(z, 1.0), _soft(v, T))),
    Variant("no_temperature", "You never used T: both sides were softmaxed at T=1. Divide both logits by T.",
            lambda z, v, T: T * T * _kl(_log_soft(z, 1.0), _soft(v, 1.0))),
    Variant("no_temperature_no_T_squared", "You never used T (no softening, no T**2): this is the "
            "source articles' loss. Divide both logits by T and multiply the KL by T**2.",
            lambda z, v, T: _kl(_log_soft(z, 1.0), _soft(v, 1.0))),
    Variant("soft_cross_entropy", "You computed the soft cross-entropy H(p, q) = KL(p || q) + H(p): same "
            "gradient, but the value is off by the teacher's entropy. Use the KL (F.kl_div).",
            lambda z, v, T: T * T * -(_soft(v, T) * _log_soft(z, T)).sum(1).mean()),
    Variant("soft_cross_entropy_no_T_squared", "You computed the soft cross-entropy without T**2: it is "
            "KL + H(teacher), and T**2 times too small. Use T**2 * KL (F.kl_div, batchmean).",
            lambda z, v, T: -(_soft(v, T) * _log_soft(z, T)).sum(1).mean()),
    Variant("raw_logits_as_targets", "You used the teacher's raw logits as targets. Targets must be "
            "probabilities: softmax(teacher_logits / T) (source 002's CrossEntropyLoss(student/T, teacher/T)).",
            lambda z, v, T: T * T * F.cross_entropy(z / T, v / T)),
    Variant("raw_logits_as_targets_no_T_squared", "You used the teacher's raw logits as targets (and no "
            "T**2). Targets must be probabilities, softmax(teacher_logits / T), and the KL needs T**2.",
            lambda z, v, T: F.cross_entropy(z / T, v / T)),
]

# ---------------------------------------------------------------- full loss (..., y, T, alpha)


def _ce(z, y):
    """The hard-label term: cross-entropy of the plain logits with the true labels."""
    return F.cross_entropy(z, y)


DISTILL_VARIANTS = [
    Variant("alpha_swapped", "alpha weights the wrong term. In this course alpha multiplies the soft "
            "(teacher) term: alpha * kd + (1 - alpha) * CE (Keras's example uses the opposite).",
            lambda z, v, y, T, a: (1 - a) * kd_loss(z, v, T) + a * _ce(z, y)),
    Variant("no_alpha", "You added the two terms without weights (as the source articles do). Use "
            "alpha * kd + (1 - alpha) * CE.", lambda z, v, y, T, a: kd_loss(z, v, T) + _ce(z, y)),
    Variant("soft_only", "The hard-label term is missing: add (1 - alpha) * F.cross_entropy(student_logits, y).",
            lambda z, v, y, T, a: a * kd_loss(z, v, T)),
    Variant("hard_only", "The soft (teacher) term is missing: add alpha * kd_loss.",
            lambda z, v, y, T, a: (1 - a) * _ce(z, y)),
    Variant("ce_on_softened", "The hard-label cross-entropy must use the plain student logits (T=1), "
            "not student_logits / T.", lambda z, v, y, T, a: a * kd_loss(z, v, T) + (1 - a) * _ce(z / T, y)),
    Variant("teacher_argmax_as_label", "The hard target is the ground-truth label y, not the teacher's "
            "argmax (source 004's mistake).",
            lambda z, v, y, T, a: a * kd_loss(z, v, T) + (1 - a) * _ce(z, v.argmax(dim=1))),
    Variant("T_squared_on_everything", "T**2 multiplies only the soft term; you scaled the hard "
            "cross-entropy too.", lambda z, v, y, T, a: T * T * (a * kd_loss(z, v, T) / (T * T) + (1 - a) * _ce(z, y))),
] + [
    Variant(v.name, "In the soft term: " + v.hint,
            (lambda f: lambda z, v, y, T, a: a * f(z, v, T) + (1 - a) * _ce(z, y))(v.fn))
    for v in KD_VARIANTS
]

# ---------------------------------------------------------------- FitNets hint loss (s, t, regressor)

HINT_VARIANTS = [
    Variant("regressor_on_teacher", "The regressor maps the *student's* features to the teacher's width: "
            "regressor(student_features), not regressor(teacher_features) (source 001 writes z_S = W z_T).",
            lambda s, t, r: F.mse_loss(s, r(t))),
    Variant("no_regressor", "You compared the raw student features: pass them through the regressor "
            "first, regressor(student_features).", lambda s, t, r: F.mse_loss(s, t)),
    Variant("reduction_sum", "Your loss is numel times too large: reduction='sum'. Average over all "
            "elements (F.mse_loss's default 'mean').", lambda s, t, r: F.mse_loss(r(s), t, reduction="sum")),
    Variant("sum_per_sample", "You summed over channels and pixels and averaged over the batch; this "
            "course's hint loss averages over all elements (F.mse_loss).",
            lambda s, t, r: F.mse_loss(r(s), t, reduction="sum") / s.shape[0]),
    Variant("half", "You kept FitNets' 1/2 factor; this course's hint_loss is the plain mean squared "
            "error (F.mse_loss).", lambda s, t, r: 0.5 * F.mse_loss(r(s), t)),
    Variant("l1", "You used the absolute error (L1); the FitNets hint is the squared error (F.mse_loss).",
            lambda s, t, r: F.l1_loss(r(s), t)),
    Variant("rmse", "You took a square root (RMSE); the hint loss is the mean squared error itself.",
            lambda s, t, r: F.mse_loss(r(s), t).sqrt()),
]


def matching_variant(variants, learner_outputs, inputs, close) -> Variant | None:
    """The first variant whose outputs match the learner's on every input where both could be computed."""
    for variant in variants:
        compared = 0
        for out, args in zip(learner_outputs, inputs):
            if out is None:
                continue
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. reduction='mean' warns; that is the point here
                    expected = variant.fn(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
            except Exception:  # the variant cannot run here (e.g. channel counts differ): skip this input
                continue
            if not close(out, expected):
                break
            compared += 1
        else:
            if compared:
                return variant
    return None
