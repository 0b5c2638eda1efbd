"""The KD loss is where most real bugs hide: exercise 2 writes it, exercises 7 to 13 each fix one bug in it.

Introduced in notebook 09_coding_exercises; the maths is in notebook 03_kl_loss. Most wrong answers
are the source articles' real mistakes (docs/references.md, "Known mistakes in the sources").
"""
from __future__ import annotations

import torch.nn.functional as F

from kd_lessons import losses
from kd_lessons.exercises.core import Exercise, Variant, logit_trials


def _kl(log_q, p, reduction="batchmean"):
    """F.kl_div(input=log q, target=p): KL(p || q) with the given reduction."""
    return F.kl_div(log_q, p, reduction=reduction)


def _soft(z, T):
    """softmax(z / T) over the classes."""
    return F.softmax(z / T, dim=1)


def _log_soft(z, T):
    """log_softmax(z / T) over the classes."""
    return F.log_softmax(z / T, dim=1)


REVERSE_KL = ("Reverse KL is a deliberate, mode-seeking choice in generative / LLM distillation, where the "
              "student generates its own sequences and the teacher scores every token (on-policy: MiniLLM, "
              "Gu et al. ICLR 2024; GKD, Agarwal et al. ICLR 2024; exercise 21), so a student too small to "
              "cover every teacher mode keeps to the likely ones instead of spreading onto text the teacher "
              "finds unlikely. This exercise asks for Hinton's forward KL(teacher || student) for classification.")

KD_VARIANTS = (
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
    Variant("swapped", "Arguments swapped: you computed the reverse KL(student || teacher). " + REVERSE_KL
            + " F.kl_div(input, target) takes the student's log-probabilities as input and the teacher's "
            "probabilities as target.", lambda z, v, T: T * T * _kl(_log_soft(v, T), _soft(z, T))),
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
)

_KD_BODY = '''    log_q = F.log_softmax(student_logits / T, dim=1)   # student: log-probabilities at T
    p = F.softmax(teacher_logits.detach() / T, dim=1)  # teacher: probabilities at the same T
    return T**2 * F.kl_div(log_q, p, reduction="batchmean")
'''


class KDLoss(Exercise):
    """Exercise 2 of notebook 09_coding_exercises: T^2 * KL(teacher || student), batchmean."""

    number, key, title, fn_name = 2, "kd_loss", "KD loss", "my_kd_loss"
    variants, other_mistakes = KD_VARIANTS, ("detached",)
    detach_hint = ("a .detach() (stop-gradient) on the student's side means nothing trains (source 003 put "
                   "tf.stop_gradient on the student).")
    hint_text = ("F.kl_div(input, target) wants the student's *log*-probabilities as input and the "
                 "teacher's probabilities as target, both at the same T. Use reduction='batchmean' and "
                 "multiply by T**2.")
    solution_code = '''def my_kd_loss(student_logits, teacher_logits, T):
    """Return T**2 * KL(teacher's soft targets || student's soft predictions), averaged over the batch."""
''' + _KD_BODY
    reference = staticmethod(losses.kd_loss)

    def trials(self):
        """Random logit pairs; class counts and T differ between trials, so scale mistakes show."""
        return logit_trials()


_KD_FIXED = "def kd_loss_fixed(student_logits, teacher_logits, T):\n"


class _FixKDLoss(KDLoss):
    """A find-and-fix exercise on the KD loss: KDLoss's checker, one bug in kd_loss_fixed."""

    fn_name = "kd_loss_fixed"
    solution_code = _KD_FIXED + _KD_BODY


# ---------------------------------------------------------------- exercises 7 to 13: one bug each


class FixReduction(_FixKDLoss):
    """Exercise 7 of notebook 09_coding_exercises: source 000's nn.KLDivLoss() keeps reduction='mean'."""

    number, key, title, bug = 7, "fix_reduction", "Fix: KL reduction", "reduction_mean"
    hint_text = "What does nn.KLDivLoss() average over by default? The KL of one sample is a sum over classes."
    broken = _KD_FIXED + '''    log_q = F.log_softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits / T, dim=1)
    return T**2 * nn.KLDivLoss()(log_q, p)
'''


class FixTSquared(_FixKDLoss):
    """Exercise 8 of notebook 09_coding_exercises: without T**2 the soft term fades as T grows."""

    number, key, title, bug = 8, "fix_T_squared", "Fix: the T squared factor", "no_T_squared"
    hint_text = "Soft-target gradients shrink like 1/T**2 as T grows. What restores their scale?"
    broken = _KD_FIXED + '''    log_q = F.log_softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits / T, dim=1)
    return F.kl_div(log_q, p, reduction="batchmean")
'''


class FixLogProbs(_FixKDLoss):
    """Exercise 9 of notebook 09_coding_exercises: F.kl_div's input must be log-probabilities."""

    number, key, title, bug = 9, "fix_log_probs", "Fix: KL input", "probs_as_input"
    hint_text = "Read F.kl_div's documentation: which argument must be in log space?"
    broken = _KD_FIXED + '''    q = F.softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits / T, dim=1)
    return T**2 * F.kl_div(q, p, reduction="batchmean")
'''


class FixSwapped(_FixKDLoss):
    """Exercise 10 of notebook 09_coding_exercises: reverse KL where classification KD uses the forward KL."""

    number, key, title, bug = 10, "fix_swapped", "Fix: KL direction", "swapped"
    hint_text = ("KL is not symmetric. " + REVERSE_KL + " In F.kl_div(input, target), which one is the target?")
    broken = _KD_FIXED + '''    log_p = F.log_softmax(teacher_logits / T, dim=1)
    q = F.softmax(student_logits / T, dim=1)
    return T**2 * F.kl_div(log_p, q, reduction="batchmean")
'''


class FixOneSided(_FixKDLoss):
    """Exercise 11 of notebook 09_coding_exercises: the temperature softens only one distribution."""

    number, key, title, bug = 11, "fix_one_sided_T", "Fix: one-sided temperature", "teacher_not_softened"
    hint_text = "Both distributions must be compared at the same temperature."
    broken = _KD_FIXED + '''    log_q = F.log_softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits, dim=1)
    return T**2 * F.kl_div(log_q, p, reduction="batchmean")
'''


class FixStopGradient(_FixKDLoss):
    """Exercise 12 of notebook 09_coding_exercises: source 003's stop-gradient on the student."""

    number, key, title, bug = 12, "fix_stop_gradient", "Fix: stop-gradient", "detached"
    hint_text = ("Which tensor is cut out of the graph? The student must get gradients; only the teacher "
                 "is frozen.")
    broken = _KD_FIXED + '''    log_q = F.log_softmax(student_logits.detach() / T, dim=1)
    p = F.softmax(teacher_logits / T, dim=1)
    return T**2 * F.kl_div(log_q, p, reduction="batchmean")
'''


class FixRawTargets(_FixKDLoss):
    """Exercise 13 of notebook 09_coding_exercises: source 002 uses the teacher's raw logits as targets."""

    number, key, title, bug = 13, "fix_raw_targets", "Fix: logits as targets", "raw_logits_as_targets"
    hint_text = ("Are teacher_logits / T probabilities? And the course's soft term is the KL, which "
                 "differs from the soft cross-entropy by the teacher's entropy.")
    broken = _KD_FIXED + '''    # cross-entropy between the softened student and the softened teacher
    return T**2 * F.cross_entropy(student_logits / T, teacher_logits / T)
'''
