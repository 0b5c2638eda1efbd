"""Softmax with temperature makes the soft targets, so learners write it and fix a T < 1: exercises 1 and 16.

Introduced in notebook 09_coding_exercises; the maths is in notebook 02_temperature.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lessons import losses
from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call, close, logit_trials

# ---------------------------------------------------------------- exercise 1: softmax with temperature

SOFTMAX_VARIANTS = (
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
)


class SoftmaxWithTemperature(Exercise):
    """Exercise 1 of notebook 09_coding_exercises: softmax(logits / T), the soft targets of KD."""

    number, key, title, fn_name = 1, "softmax_T", "Softmax with temperature", "softmax_with_temperature"
    variants, other_mistakes = SOFTMAX_VARIANTS, ("detached",)
    hint_text = ("Divide the logits by T *before* the softmax and normalise over the classes (the last "
                 "dimension). T > 1 flattens the distribution, T < 1 sharpens it.")
    solution_code = '''def softmax_with_temperature(logits, T):
    """Return softmax(logits / T) over the last dimension (the classes)."""
    return torch.softmax(logits / T, dim=-1)
'''
    reference = staticmethod(losses.soften)

    def trials(self):
        """Random logits at several T, one of them below 1 (which must sharpen)."""
        return [(z, T) for z, _, T in logit_trials()] + [(torch.randn(5, 3) * 3, 0.5)]


# ---------------------------------------------------------------- exercise 16: T < 1 does not soften


class FixSofteningT(Exercise):
    """Exercise 16 of notebook 09_coding_exercises: source 004 'softens' with T = 0.5, which sharpens."""

    number, key, title, fn_name = 16, "fix_softening_T", "Fix: softening temperature", "soft_targets"
    bug, other_mistakes = "sharpened", ("not_probabilities", "T_equals_1", "sharpened", "not_temperature")
    hint_text = "Does T = 0.5 make the distribution flatter or sharper? Compare the entropies."
    broken = '''def soft_targets(teacher_logits):
    T = 0.5  # "soften" the teacher's predictions
    return F.softmax(teacher_logits / T, dim=1)
'''
    solution_code = '''def soft_targets(teacher_logits):
    T = 4.0  # T > 1 softens; T < 1 would sharpen
    return F.softmax(teacher_logits / T, dim=1)
'''

    def _check(self, fn, trials=((4, 10), (6, 5), (3, 7))):
        """fn(teacher_logits) must be softmax(teacher_logits / T) for one T > 1: softer, same ranking."""
        for B, C in trials:
            z = torch.randn(B, C) * 3
            p = call(fn, z.clone())
            if not isinstance(p, torch.Tensor) or p.shape != z.shape:
                got = list(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
                raise Incorrect(f"return a tensor of shape {list(z.shape)} (one distribution per row), "
                                f"got {got}.", None)
            p = p.detach().double()
            if bool((p < 0).any()) or not close(p.sum(dim=1), torch.ones(B)):
                raise Incorrect("each row must be a probability distribution (non-negative, summing to 1 "
                                "over the classes).", "not_probabilities")
            hard = F.softmax(z.double(), dim=1)
            if close(p, hard):
                raise Incorrect("these are the T=1 probabilities: nothing was softened. Use T > 1.", "T_equals_1")
            if bool((losses.entropy(p) < losses.entropy(hard)).all()):
                raise Incorrect("your targets are *sharper* than the teacher's plain softmax (lower "
                                "entropy): T < 1 sharpens (source 004 'softened' with temp=0.5). Softening "
                                "needs T > 1, typically 2-20.", "sharpened")
            if bool((p.argmax(dim=1) != z.argmax(dim=1)).any()):
                raise Incorrect("the most likely class changed: a temperature keeps the teacher's ranking.", None)
            if not _is_one_temperature_above_1(p, z.double()):
                raise Incorrect("your targets are softer, but they are not softmax(teacher_logits / T) for "
                                "one T > 1 shared by all samples (label smoothing or added noise is not "
                                "KD's softening).", "not_temperature")


def _is_one_temperature_above_1(p, z) -> bool:
    """Whether p == softmax(z / T) for a single T > 1 (fitted by least squares on centred log-probabilities)."""
    centred_z = z - z.mean(dim=1, keepdim=True)
    log_p = p.clamp_min(1e-300).log()
    centred_log_p = log_p - log_p.mean(dim=1, keepdim=True)
    inv_T = float((centred_z * centred_log_p).sum() / (centred_z**2).sum())
    return 0 < inv_T < 1 and close(p, F.softmax(z * inv_T, dim=1), rtol=1e-3, atol=1e-5)
