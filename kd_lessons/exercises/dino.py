"""DINO's two moving averages as exercises 37 and 39 of lesson 09: the centering update and the EMA teacher.

Lesson 18 (kd_lessons.methods.dino is the reference). The checkers name the usual mistakes: centering the student,
a center without EMA or with the momentum the wrong way round, centering after the softmax, a center or target that
carries gradient; for the teacher, a swapped momentum, updating the student, gradients into the teacher and
forgotten BatchNorm buffers.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call, close
from kd_lessons.methods import dino


def reference_center_loss(student_logits, teacher_logits, center, m, tau_s, tau_t):
    """(loss, new center): H(softmax((t - c) / tau_t), softmax(s / tau_s)), then c <- m c + (1 - m) mean(t)."""
    target = dino.teacher_targets(teacher_logits, center, tau_t)
    loss = -(target * F.log_softmax(student_logits / tau_s, dim=-1)).sum(-1).mean()
    return loss, dino.update_center(center, teacher_logits, m)


def _ce(target, s, tau_s):
    return -(target * F.log_softmax(s / tau_s, dim=-1)).sum(-1).mean()


CENTER_VARIANTS = (
    Variant("centered_student", "You centred the student's scores. Centering acts on the *teacher's* scores only "
            "(softmax((teacher_logits - center) / tau_t)): it stops the teacher's targets from always picking the "
            "same prototype; the student is left as it is.",
            lambda s, t, c, m, ts, tt: (_ce(F.softmax(t / tt, -1), s - c, ts), dino.update_center(c, t, m))),
    Variant("no_ema", "Your new center is the batch mean alone. DINO keeps a moving average over batches: "
            "m * center + (1 - m) * teacher_logits.mean(0), so one batch cannot swing it.",
            lambda s, t, c, m, ts, tt: (reference_center_loss(s, t, c, m, ts, tt)[0], t.mean(0))),
    Variant("momentum_swapped", "The momentum weighs the *old* center: m * center + (1 - m) * batch mean. With m = "
            "0.9 you gave the new batch 90% of the weight.",
            lambda s, t, c, m, ts, tt: (reference_center_loss(s, t, c, m, ts, tt)[0], (1 - m) * c + m * t.mean(0))),
    Variant("after_softmax", "You subtracted the center from the teacher's probabilities. It is subtracted from "
            "the scores *before* the softmax (softmax((teacher_logits - center) / tau_t)); after it the targets "
            "are no distribution any more.",
            lambda s, t, c, m, ts, tt: (_ce(F.softmax(t / tt, -1) - c, s, ts), dino.update_center(c, t, m))),
    Variant("center_gradient", "The values are right, but gradient flows into the teacher's scores (through the "
            "center or the targets). The teacher and its center are targets: compute them from "
            "teacher_logits.detach() (or under torch.no_grad()).",
            lambda s, t, c, m, ts, tt: (_ce(F.softmax((t - c) / tt, -1), s, ts), m * c + (1 - m) * t.mean(0))),
)


def _center_trials():
    g = torch.Generator().manual_seed(11)
    out = []
    for B, K, m in ((6, 8, 0.9), (5, 12, 0.7)):
        out.append((torch.randn(B, K, generator=g), torch.randn(B, K, generator=g) + 2 * torch.arange(K) / K,
                    torch.randn(K, generator=g), m, 0.1, 0.04))
    return out


def _pair(out):
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(torch.is_tensor(o) for o in out)):
        raise Incorrect(f"return two tensors, (loss, new_center); got {type(out).__name__}", None)
    return out


class DINOCenter(Exercise):
    """Exercise 37 of lesson 09: DINO's centering, an EMA of the teacher's batch mean applied before its softmax."""

    number, key, title, fn_name = 37, "dino_center", "The DINO centering update", "dino_center_loss"
    variants = CENTER_VARIANTS
    other_mistakes = ("detached",)
    hint_text = ("targets = softmax((teacher_logits.detach() - center) / tau_t); loss = mean over the batch of "
                 "-(targets * log_softmax(student_logits / tau_s)).sum(-1); new_center = m * center + (1 - m) * "
                 "teacher_logits.detach().mean(0), the loss using the *old* center.")
    solution_code = '''def dino_center_loss(student_logits, teacher_logits, center, m, tau_s, tau_t):
    """(loss, new_center): cross-entropy to the centred, sharpened teacher; center <- EMA of the teacher's mean."""
    teacher_logits = teacher_logits.detach()                    # a target: no gradient into the teacher
    targets = F.softmax((teacher_logits - center) / tau_t, dim=-1)   # centre, then sharpen
    loss = -(targets * F.log_softmax(student_logits / tau_s, dim=-1)).sum(-1).mean()
    new_center = m * center + (1 - m) * teacher_logits.mean(0)  # the EMA, for the next batch
    return loss, new_center
'''

    def _check(self, fn) -> None:
        """fn(student_logits, teacher_logits, center, m, tau_s, tau_t) -> (loss, new_center)."""
        trials, outs, wrong, leaks = _center_trials(), [], False, False
        for s, t, c, m, ts, tt in trials:
            s_in, t_in = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
            loss, center = _pair(call(fn, s_in, t_in, c.clone(), m, ts, tt))
            outs.append((loss, center))
            ref_loss, ref_center = reference_center_loss(s, t, c, m, ts, tt)
            if not (close(loss, ref_loss) and close(center, ref_center)):
                wrong = True
                continue
            if not loss.requires_grad:
                raise Incorrect("the values are right but no gradient reaches the student: do not detach "
                                "student_logits.", "detached")
            g_t = torch.autograd.grad(loss, t_in, allow_unused=True, retain_graph=True)[0]
            leaks = leaks or center.requires_grad or (g_t is not None and bool(g_t.abs().sum() > 0))
        if not wrong:
            if leaks:
                raise Incorrect(CENTER_VARIANTS[-1].hint, CENTER_VARIANTS[-1].name)
            return
        for variant in CENTER_VARIANTS[:-1]:
            if all(close(o[0], e[0]) and close(o[1], e[1])
                   for o, e in zip(outs, (variant.fn(*a) for a in trials))):
                raise Incorrect(variant.hint, variant.name)
        raise Incorrect("the loss or the new center differ from the reference (see the hint).", None)


def _ema_models(seed: int):
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()(torch.randn(16, 4) * 3)  # different running statistics in the student
    teacher.requires_grad_(False)
    return teacher, student


def _state(model):
    return [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]


def _ema_run(fn, seed, m):
    teacher, student = _ema_models(seed)
    out = call(fn, teacher, student, m)
    return teacher, student, out


def _wrong_ema(kind):
    """An EMA update with one known mistake (kind: a Variant's name)."""
    def update(teacher, student, m):
        with torch.set_grad_enabled(kind == "grad_into_teacher"):  # that mistake: no torch.no_grad()
            for t, s in zip(teacher.parameters(), student.parameters()):
                if kind == "updated_student":
                    s.data.copy_(m * s + (1 - m) * t)
                else:
                    t.copy_((1 - m) * t + m * s if kind == "swapped_m" else m * t + (1 - m) * s)
            if kind not in ("forgot_buffers", "updated_student"):
                for t, s in zip(teacher.buffers(), student.buffers()):
                    t.copy_(m * t + (1 - m) * s if t.is_floating_point() else s)
    return update


EMA_VARIANTS = (
    Variant("swapped_m", "The momentum weighs the *teacher*: t <- m * t + (1 - m) * s. With m = 0.99 you copied "
            "99% of the student into the teacher each step.", _wrong_ema("swapped_m")),
    Variant("updated_student", "You changed the student. The EMA moves the teacher towards the student "
            "(t <- m t + (1 - m) s); the student only changes by its optimiser.", _wrong_ema("updated_student")),
    Variant("grad_into_teacher", "The values are right, but the teacher's parameters now take part in autograd "
            "(requires_grad or a grad_fn). Do the update in place under torch.no_grad(), on a teacher whose "
            "parameters have requires_grad False: it is never trained by backprop.",
            _wrong_ema("grad_into_teacher")),
    Variant("forgot_buffers", "The parameters are right but BatchNorm's running mean and variance (buffers, not "
            "parameters: model.parameters() skips them) were left behind. Average the floating-point buffers "
            "the same way and copy the others (num_batches_tracked).", _wrong_ema("forgot_buffers")),
)


class EMATeacher(Exercise):
    """Exercise 39 of lesson 09: the EMA teacher, t <- m t + (1 - m) s under no_grad, buffers included."""

    number, key, title, fn_name = 39, "ema_teacher", "The EMA teacher", "ema_update"
    variants = EMA_VARIANTS
    other_mistakes = ("not_in_place",)
    hint_text = ("Under torch.no_grad(): for each (t, s) in zip(teacher.parameters(), student.parameters()): "
                 "t.mul_(m).add_(s, alpha=1 - m). Then the same over zip(teacher.buffers(), student.buffers()) for "
                 "floating-point buffers, t.copy_(s) for the integer ones. Change nothing in the student.")
    solution_code = '''def ema_update(teacher, student, m):
    """Move the teacher towards the student in place: t <- m * t + (1 - m) * s, parameters and buffers."""
    with torch.no_grad():                                   # the teacher is never trained by backprop
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.mul_(m).add_(s, alpha=1 - m)
        for t, s in zip(teacher.buffers(), student.buffers()):  # BatchNorm's running statistics
            if t.is_floating_point():
                t.mul_(m).add_(s, alpha=1 - m)
            else:
                t.copy_(s)                                  # num_batches_tracked
'''

    def _check(self, fn) -> None:
        """fn(teacher, student, m) updates the teacher in place (returns nothing)."""
        runs, wrong, leaks = [], False, False
        for seed, m in ((0, 0.9), (1, 0.6)):
            teacher, student, _ = _ema_run(fn, seed, m)
            ref_t, ref_s = _ema_models(seed)
            dino.ema_update(ref_t, ref_s, m)
            runs.append((_state(teacher), _state(student)))
            same = all(close(a, b) for a, b in zip(runs[-1][0] + runs[-1][1], _state(ref_t) + _state(ref_s)))
            wrong = wrong or not same
            leaks = leaks or any(p.requires_grad or p.grad_fn is not None for p in teacher.parameters())
        if not wrong:
            if leaks:
                raise Incorrect(EMA_VARIANTS[2].hint, EMA_VARIANTS[2].name)
            return
        for variant in EMA_VARIANTS:
            expected = [_ema_run(variant.fn, seed, m)[:2] for seed, m in ((0, 0.9), (1, 0.6))]
            if all(all(close(a, b) for a, b in zip(r[0] + r[1], _state(t) + _state(s)))
                   for r, (t, s) in zip(runs, expected)):
                raise Incorrect(variant.hint, variant.name)
        if not any(any(not close(a, b) for a, b in zip(r[0], _state(_ema_models(seed)[0])))
                   for r, seed in zip(runs, (0, 1))):
            raise Incorrect("the teacher did not change: update its tensors in place (t.mul_(m).add_(...) or "
                            "t.copy_(...)); rebinding a loop variable (t = m * t + ...) changes nothing.",
                            "not_in_place")
        raise Incorrect("the teacher's parameters or buffers differ from t <- m t + (1 - m) s (see the hint).", None)
