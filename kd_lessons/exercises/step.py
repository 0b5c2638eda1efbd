"""The full loss and the training step, where alpha and the teacher's mode go wrong: exercises 3, 6, 14, 15.

Introduced in notebook 09_coding_exercises; the training loop is in notebook 04_distill_mnist. The
step's checker runs the learner's step on a BatchNorm teacher, so train-mode teachers are caught.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons import losses
from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call, close, logit_trials
from kd_lessons.exercises.kl_loss import KD_VARIANTS


def _ce(z, y):
    """The hard-label term: cross-entropy of the plain logits with the true labels."""
    return F.cross_entropy(z, y)


DISTILL_VARIANTS = (
    Variant("alpha_swapped", "alpha weights the wrong term. In this course alpha multiplies the soft "
            "(teacher) term: alpha * kd + (1 - alpha) * CE (Keras's example uses the opposite).",
            lambda z, v, y, T, a: (1 - a) * losses.kd_loss(z, v, T) + a * _ce(z, y)),
    Variant("no_alpha", "You added the two terms without weights (as the source articles do). Use "
            "alpha * kd + (1 - alpha) * CE.", lambda z, v, y, T, a: losses.kd_loss(z, v, T) + _ce(z, y)),
    Variant("soft_only", "The hard-label term is missing: add (1 - alpha) * F.cross_entropy(student_logits, y).",
            lambda z, v, y, T, a: a * losses.kd_loss(z, v, T)),
    Variant("hard_only", "The soft (teacher) term is missing: add alpha * kd_loss.",
            lambda z, v, y, T, a: (1 - a) * _ce(z, y)),
    Variant("ce_on_softened", "The hard-label cross-entropy must use the plain student logits (T=1), not "
            "student_logits / T.", lambda z, v, y, T, a: a * losses.kd_loss(z, v, T) + (1 - a) * _ce(z / T, y)),
    Variant("teacher_argmax_as_label", "The hard target is the ground-truth label y, not the teacher's "
            "argmax (source 004's mistake).",
            lambda z, v, y, T, a: a * losses.kd_loss(z, v, T) + (1 - a) * _ce(z, v.argmax(dim=1))),
    Variant("T_squared_on_everything", "T**2 multiplies only the soft term; you scaled the hard "
            "cross-entropy too.", lambda z, v, y, T, a: a * losses.kd_loss(z, v, T) + T * T * (1 - a) * _ce(z, y)),
) + tuple(  # every KD-loss mistake, made inside the full loss
    Variant(v.name, "In the soft term: " + v.hint,
            (lambda f: lambda z, v, y, T, a: a * f(z, v, T) + (1 - a) * _ce(z, y))(v.fn))
    for v in KD_VARIANTS
)

# ---------------------------------------------------------------- exercises 3 and 14: the full loss


class DistillationLoss(Exercise):
    """Exercise 3 of notebook 09_coding_exercises: alpha * KD + (1 - alpha) * CE, alpha on the soft term."""

    number, key, title, fn_name = 3, "distillation_loss", "Distillation loss with alpha", "my_distillation_loss"
    variants, other_mistakes = DISTILL_VARIANTS, ("detached",)
    hint_text = ("alpha weights the soft term: alpha * T**2 * KL + (1 - alpha) * F.cross_entropy(student_logits, "
                 "y). The hard term uses the plain logits and the true labels.")
    solution_code = '''def my_distillation_loss(student_logits, teacher_logits, y, T, alpha):
    """Return alpha * (KD loss at temperature T) + (1 - alpha) * cross-entropy with the labels y."""
    log_q = F.log_softmax(student_logits / T, dim=1)
    p = F.softmax(teacher_logits.detach() / T, dim=1)
    soft = T**2 * F.kl_div(log_q, p, reduction="batchmean")
    hard = F.cross_entropy(student_logits, y)  # plain logits, true labels
    return alpha * soft + (1 - alpha) * hard
'''
    reference = staticmethod(losses.distillation_loss)

    def trials(self):
        """Random logits and labels; T and alpha differ between trials, so weighting mistakes show."""
        return [(z, v, torch.randint(0, z.shape[1], (z.shape[0],)), T, alpha)
                for (z, v, T), alpha in zip(logit_trials(), (0.7, 0.3, 0.9))]


_HARD_TARGET_LOSS = '''    soft = T**2 * F.kl_div(F.log_softmax(student_logits / T, dim=1),
                           F.softmax(teacher_logits / T, dim=1), reduction="batchmean")
    hard = F.cross_entropy(student_logits, hard_target)
    return alpha * soft + (1 - alpha) * hard
'''


class FixHardTarget(DistillationLoss):
    """Exercise 14 of notebook 09_coding_exercises: source 004 takes the teacher's argmax as the hard target."""

    number, key, title, fn_name = 14, "fix_hard_target", "Fix: the hard target", "distillation_loss_fixed"
    bug = "teacher_argmax_as_label"
    hint_text = "In Hinton's KD, where does the hard target come from: the teacher or the dataset?"
    broken = '''def distillation_loss_fixed(student_logits, teacher_logits, y, T, alpha):
    hard_target = teacher_logits.argmax(dim=1)  # "the hard target is the teacher's prediction"
''' + _HARD_TARGET_LOSS
    solution_code = '''def distillation_loss_fixed(student_logits, teacher_logits, y, T, alpha):
    hard_target = y  # the ground-truth labels, not the teacher's argmax
''' + _HARD_TARGET_LOSS


# ---------------------------------------------------------------- exercises 6 and 15: one training step


@dataclass(frozen=True)
class StepMistake:
    """Which known mistake reference_step makes; the defaults make none. Notebook 09_coding_exercises.

    loss_fn: a wrong loss (one of DISTILL_VARIANTS' fns) instead of distillation_loss; zero_grad=False keeps
    the previous step's gradients in the update.
    """

    loss_fn: Callable | None = None
    zero_grad: bool = True


def reference_step(student, teacher, optimizer, x, y, T, alpha, mistake: StepMistake | None = None):
    """The correct step, or a known wrong one, to compare a learner's with. Notebook 09_coding_exercises."""
    mistake = StepMistake() if mistake is None else mistake
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(x)
    student.train()
    loss = (mistake.loss_fn or losses.distillation_loss)(student(x), teacher_logits, y, T, alpha)
    if mistake.zero_grad:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _step_models(seed: int):
    """A teacher with BatchNorm (so train vs eval mode matters) and a small student, plus one batch."""
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5))
    student = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))
    x, y = torch.randn(8, 6) * 2 + 1, torch.randint(0, 5, (8,))
    for p in student.parameters():  # gradients left over from the previous step
        p.grad = torch.full_like(p, 0.05)
    return teacher.train(), student.train(), x, y


def _run_step(step, seed, T, alpha, *mistake):
    """One step on fresh models: (student, teacher, loss, grad-enabled flag of each teacher forward)."""
    teacher, student, x, y = _step_models(seed)
    flags = []
    hook = teacher.register_forward_hook(lambda m, i, o: flags.append(torch.is_grad_enabled()))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    try:
        loss = step(student, teacher, optimizer, x, y, T, alpha, *mistake)
    finally:
        hook.remove()
    return student, teacher, loss, flags


def _same_params(a: nn.Module, b: nn.Module) -> bool:
    """Whether two modules hold the same parameters and buffers."""
    return all(close(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def _explain_step(student, seed, T, alpha):
    """(message, mistake) naming the wrong step that produces the learner's student, if one does."""
    no_zero, _, _, _ = _run_step(reference_step, seed, T, alpha, StepMistake(zero_grad=False))
    if _same_params(student, no_zero):
        return ("the update includes gradients left over from the previous step: call "
                "optimizer.zero_grad() before loss.backward().", "no_zero_grad")
    for variant in DISTILL_VARIANTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the wrong losses may warn (reduction='mean')
                candidate, _, _, _ = _run_step(reference_step, seed, T, alpha, StepMistake(loss_fn=variant.fn))
        except Exception:
            continue
        if _same_params(student, candidate):
            return ("the update matches a step with a wrong loss: " + variant.hint, variant.name)
    return ("the student's parameters after your step differ from the reference step "
            "(teacher.eval(), torch.no_grad(), distillation_loss, zero_grad, backward, step).", None)


def check_step(fn, trials=((0, 4.0, 0.7), (1, 2.0, 0.3))):
    """Check a step: teacher untouched, student as after the reference step. Notebook 09_coding_exercises."""
    for seed, T, alpha in trials:
        teacher0, student0, _, _ = _step_models(seed)
        student, teacher, loss, flags = _run_step(lambda *a: call(fn, *a), seed, T, alpha)
        ref_student, _, ref_loss, _ = _run_step(reference_step, seed, T, alpha)
        t_now, t_then = teacher.state_dict(), teacher0.state_dict()
        if not flags:
            raise Incorrect("the teacher was never called: compute teacher_logits = teacher(x).", "no_teacher")
        if any(not close(t_now[k], t_then[k]) for k in t_now if "running" not in k and "num_batches" not in k):
            raise Incorrect("the teacher's weights changed: only the student learns; give the optimizer "
                            "student.parameters() only.", "teacher_updated")
        if any(not close(t_now[k], t_then[k]) for k in t_now):
            raise Incorrect("the teacher ran in train mode: its BatchNorm used batch statistics and updated "
                            "its running averages. Call teacher.eval() before teacher(x) (source 000's "
                            "mistake).", "teacher_train_mode")
        if any(p.grad is not None for p in teacher.parameters()) or any(flags):
            raise Incorrect("the teacher's forward pass ran with autograd on: wrap it in torch.no_grad() so "
                            "no graph is built for it and it can never receive gradients.", "teacher_grad")
        if _same_params(student, student0):
            raise Incorrect("the student did not change: call loss.backward() and optimizer.step(), and make "
                            "sure no .detach() (stop-gradient) cuts the student's graph.", "student_not_updated")
        if not _same_params(student, ref_student):
            raise Incorrect(*_explain_step(student, seed, T, alpha))
        if isinstance(loss, torch.Tensor) or not isinstance(loss, numbers.Real):
            raise Incorrect(f"the update is right; return loss.item() (a Python float), not "
                            f"{type(loss).__name__}.", "return_type")
        if not math.isclose(loss, ref_loss, rel_tol=1e-4, abs_tol=1e-6):
            raise Incorrect(f"the update is right but you returned {loss:.5g}; return the loss of this "
                            f"batch, {ref_loss:.5g} (loss.item()).", "return_value")


_STUDENT_UPDATE = '''    student.train()
    loss = distillation_loss(student(x), teacher_logits, y, T, alpha)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
'''


class DistillationStep(Exercise):
    """Exercise 6 of notebook 09_coding_exercises: one step, the teacher in eval mode without gradients."""

    number, key, title, fn_name = 6, "distillation_step", "One distillation training step", "distillation_step"
    other_mistakes = ("no_teacher", "teacher_updated", "teacher_train_mode", "teacher_grad",
                      "student_not_updated", "no_zero_grad", "return_type", "return_value")
    hint_text = ("Teacher: eval mode and torch.no_grad(). Student: train mode, distillation_loss, zero_grad, "
                 "backward, step. Return loss.item().")
    solution_code = '''def distillation_step(student, teacher, optimizer, x, y, T, alpha):
    """Update the student on one batch (x, y) by distillation; return the batch loss as a float."""
    teacher.eval()                 # BatchNorm/Dropout in inference behaviour
    with torch.no_grad():          # no graph for the teacher: it never learns
        teacher_logits = teacher(x)
''' + _STUDENT_UPDATE

    @property
    def mistakes(self) -> tuple[str, ...]:
        """The step's own mistakes, then every wrong loss a step can come from. Notebook 09_coding_exercises."""
        return self.other_mistakes + tuple(v.name for v in DISTILL_VARIANTS)

    def _check(self, fn):
        """Run the learner's step on a BatchNorm teacher next to the reference step."""
        check_step(fn)


class FixTeacherMode(DistillationStep):
    """Exercise 15 of notebook 09_coding_exercises: source 000's teacher runs in train mode, with gradients."""

    number, key, title, fn_name = 15, "fix_teacher_mode", "Fix: the teacher's mode", "distillation_step_fixed"
    bug = "teacher_train_mode"
    hint_text = "Two things are wrong with how the teacher runs: its mode (BatchNorm, Dropout) and autograd."
    broken = '''def distillation_step_fixed(student, teacher, optimizer, x, y, T, alpha):
    teacher.train()
    teacher_logits = teacher(x)
''' + _STUDENT_UPDATE
    solution_code = '''def distillation_step_fixed(student, teacher, optimizer, x, y, T, alpha):
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(x)
''' + _STUDENT_UPDATE
