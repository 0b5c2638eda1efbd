"""Training schemes: who teaches whom, and when. TAKD, born-again networks, deep mutual learning, function matching.

Introduced in notebook 11_methods_tour. The other `methods` modules change *what* a student matches
(an Objective); a scheme changes the *training procedure* around the same loss: a chain of teachers (teacher
assistant, born-again generations), two students teaching each other from scratch (deep mutual
learning), or one teacher shown exactly the student's augmented view for a long time (function
matching). Every scheme calls `train.distill` / `train.fit`; only mutual learning, where two models
are updated together, has its own short loop.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from kd_lessons import train
from kd_lessons.config import get_device, seed_everything
from kd_lessons.data import check_xy, iterate_batches, random_shift
from kd_lessons.methods.registry import register, setting
from kd_lessons.models import MLPStudent
from kd_lessons.objectives import CrossEntropy, HintonKD

__all__ = ["teacher_assistant", "born_again", "mutual_learning", "function_matching_objective", "function_matching"]


def _check_factory(name: str, make) -> None:
    """A scheme builds its own models, so it takes functions () -> nn.Module, not models."""
    if not callable(make) or isinstance(make, nn.Module):
        got = f"a {type(make).__name__} model" if isinstance(make, nn.Module) else repr(make)
        raise ValueError(f"{name} got {got}; pass a function that builds a fresh model, e.g. "
                         f"{name}=lambda: MLPStudent((64,))")


def teacher_assistant(make_assistant: Callable[[], nn.Module], make_student: Callable[[], nn.Module], teacher, x, y,
                      T: float = 4.0, alpha: float = 0.9, **train_kwargs):
    """TAKD (Mirzadeh et al., AAAI 2020): an assistant bridges a big teacher-student gap. Notebook 11_methods_tour.

    Distils teacher -> assistant, then assistant -> student, both with HintonKD(T, alpha) and the same
    `train_kwargs` (num_epochs, lr, batch_size, augment, val, seed, device, options of `train.distill`).
    The paper's point: when the teacher is much larger, an intermediate model's softer, simpler outputs
    teach a small student better. Returns (assistant, student, {"assistant": history, "student": history}).
    """
    _check_factory("make_assistant", make_assistant)
    _check_factory("make_student", make_student)
    check_xy(x, y)
    objective = HintonKD(T, alpha)  # checks T and alpha before any training
    seed_everything(train_kwargs.get("seed", 0))
    assistant = make_assistant()
    histories = {"assistant": train.distill(assistant, x, y, teacher, objective, **train_kwargs)}
    seed_everything(train_kwargs.get("seed", 0))
    student = make_student()
    histories["student"] = train.distill(student, x, y, assistant, objective, **train_kwargs)
    return assistant, student, histories


def born_again(make_student: Callable[[], nn.Module], teacher, x, y, generations: int = 2, T: float = 4.0,
               alpha: float = 0.9, **train_kwargs) -> list:
    """Born-again nets (Furlanello et al., ICML 2018): re-distil one architecture. Notebook 11_methods_tour.

    Generation 1 is distilled from `teacher`, generation k+1 from generation k, every one built by
    `make_student` (same architecture; each generation's initialisation is seeded with seed + k - 1).
    `train_kwargs` go to `train.distill`. The paper trains the first teacher with labels and averages
    the generations' predictions (BAN ensembles): `models.Ensemble(students)` does that here.
    Returns the list of `generations` students, oldest first.
    """
    _check_factory("make_student", make_student)
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ValueError(f"generations={generations!r}: pass a positive integer such as generations=2")
    check_xy(x, y)
    objective = HintonKD(T, alpha)
    seed = train_kwargs.get("seed", 0)
    students, previous = [], teacher
    for k in range(generations):
        seed_everything(seed + k)
        student = make_student()
        train.distill(student, x, y, previous, objective, **train_kwargs)
        students.append(student)
        previous = student
    return students


def mutual_learning(make_a: Callable[[], nn.Module], make_b: Callable[[], nn.Module], x, y, num_epochs: int,
                    lr: float, batch_size: int = 128, T: float = 1.0, alpha: float = 0.5, seed: int = 0, device=None,
                    options: train.TrainOptions | None = None):
    """Deep mutual learning (Zhang et al., CVPR 2018): two students teach each other. Notebook 11_methods_tour.

    On every batch each model minimises HintonKD(T, alpha) against the *other* model's logits, which
    are computed before either update and detached, so no gradient flows into the other model. The
    paper's loss is CE + KL(p_other || p_own) at T=1; the default alpha=0.5 gives half of it
    (the same direction; lr absorbs the factor), alpha=0 trains two independent from-scratch models
    (the same steps as two `train.fit` runs), and T > 1 softens both sides as in Hinton's loss. The paper
    updates the models one after the other; here both step on the same predictions (a common variant).
    Own loop because two models step together: AdamW (weight decay 5e-4 as in `fit`, or
    options.weight_decay), `fit`'s OneCycle schedule, fp32 steps. Returns (a, b, history) with
    per-step and per-epoch losses of both models.
    """
    _check_factory("make_a", make_a)
    _check_factory("make_b", make_b)
    check_xy(x, y)
    train._labels(y)
    train._check_run(num_epochs, lr, batch_size)
    options = options or train.TrainOptions()
    if options.optimizer != "adamw":
        raise ValueError(f"options.optimizer={options.optimizer!r}: mutual_learning uses AdamW; pass 'adamw'")
    objective = HintonKD(T, alpha)
    device = torch.device(device) if device is not None else get_device()
    generator = seed_everything(seed)
    a, b = make_a().to(device), make_b().to(device)
    wd = 5e-4 if options.weight_decay is None else options.weight_decay
    opts = [torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd) for m in (a, b)]
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = num_epochs * steps_per_epoch if options.max_steps is None else min(options.max_steps,
                                                                               num_epochs * steps_per_epoch)
    scheds = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=lr, total_steps=total, pct_start=0.25)
              for o in opts] if total >= 10 else []  # as in fit: tiny runs keep lr constant
    history = {"epoch": [], "step": [], "train_loss_a": [], "train_loss_b": [], "step_loss_a": [], "step_loss_b": []}
    step, bar = 0, tqdm(total=total, desc="mutual", disable=not options.progress, leave=False)
    for epoch in range(1, num_epochs + 1):
        a.train(), b.train()
        for _, xb, yb in iterate_batches(x, y, batch_size, shuffle=True, generator=generator, device=device):
            logits_a, logits_b = a(xb), b(xb)  # both predictions before either model moves
            loss_a = objective(logits_a, logits_b.detach(), yb)  # the other model is a fixed target
            loss_b = objective(logits_b, logits_a.detach(), yb)
            for o in opts:
                o.zero_grad(set_to_none=True)
            (loss_a + loss_b).backward()  # the graphs share nothing, so each model gets its own loss's gradient
            for o in opts:
                o.step()
            for s in scheds:
                if s.last_epoch < s.total_steps - 1:
                    s.step()
            history["step_loss_a"].append(float(loss_a.detach()))
            history["step_loss_b"].append(float(loss_b.detach()))
            step += 1
            bar.update(1)
            if options.on_step is not None:
                options.on_step(step, total)
            if step >= total:
                break
        n = len(history["step_loss_a"]) - (history["step"][-1] if history["step"] else 0)
        history["epoch"].append(epoch)
        history["step"].append(step)
        for k in "ab":
            history[f"train_loss_{k}"].append(sum(history[f"step_loss_{k}"][-n:]) / n)
        if step >= total:
            break
    bar.close()
    return a.eval(), b.eval(), history


def function_matching_objective(T: float = 1.0) -> HintonKD:
    """Beyer et al. (CVPR 2022), "patient and consistent": pure KL to the teacher, no labels. Notebook 11_methods_tour.

    alpha=1.0: the student matches the teacher's function, so labels add nothing; the paper uses T=1.
    """
    return HintonKD(T, alpha=1.0)


def function_matching(student: nn.Module, teacher: nn.Module, x, y, augment, num_epochs: int, lr: float,
                      T: float = 1.0, **train_kwargs) -> dict:
    """Beyer et al. (CVPR 2022): distillation as function matching, consistent and patient. Notebook 11_methods_tour.

    Consistent: the teacher runs on exactly the augmented batch the student sees (a teacher *model*,
    never logits cached on un-augmented x, which would teach the student the wrong function on the
    shifted image). Patient: the target is a function on an ever-changing input distribution, so it
    keeps improving over long schedules (the paper trains for thousands of epochs) without overfitting.
    Calls `train.distill(student, x, y, teacher, function_matching_objective(T), augment=augment, ...)`.
    """
    if not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher is a {type(teacher).__name__}: function matching needs the teacher model, so it "
                         "can run on every augmented batch; cached logits would not match the augmented views")
    if augment is None or not callable(augment):
        raise ValueError(f"augment={augment!r}: function matching needs an augmentation shared by teacher and "
                         "student, e.g. augment=data.random_shift (MNIST) or data.random_crop_flip (CIFAR)")
    check_xy(x, y)
    return train.distill(student, x, y, teacher, function_matching_objective(T), num_epochs=num_epochs, lr=lr,
                         augment=augment, **train_kwargs)


# ---------------------------------------------------------------- the schemes as registry entries (notebook 11)
# build(teacher, rec) -> train(make_student, x, y, seed, **kw) -> the trained student; kw go to train.distill
# (num_epochs, lr, batch_size, options). The weights are each scheme's defaults, with the recipe's recipe_keys.

def _scheme(name: str, paper: str, defaults: dict, recipe_keys=()):
    """Register the procedure below as the scheme `name`; it receives (teacher, weights, make_student, x, y, seed)."""
    def decorate(procedure):
        def build(teacher, rec, **_):
            weights = {**defaults, **{k: setting(rec, k) for k in recipe_keys}}
            return lambda make_student, x, y, seed, **kw: procedure(teacher, weights, make_student, x, y, seed, **kw)
        return register(name, "scheme", paper, defaults, recipe_keys, build)(procedure)
    return decorate


@_scheme("teacher assistant", "Mirzadeh et al. 2020", {"T": 4.0, "alpha": 0.9, "assistant_hidden": (400, 400)},
         recipe_keys=("T", "alpha"))
def _assistant_scheme(teacher, weights, make_student, x, y, seed, **kw):
    """teacher -> MLP assistant (assistant_hidden) -> student, HintonKD(T, alpha) both times."""
    return teacher_assistant(lambda: MLPStudent(hidden=weights["assistant_hidden"]), make_student, teacher, x, y,
                             weights["T"], weights["alpha"], seed=seed, **kw)[1]


@_scheme("born-again", "Furlanello et al. 2018", {"T": 4.0, "alpha": 0.9, "generations": 1},
         recipe_keys=("T", "alpha"))
def _born_again_scheme(teacher, weights, make_student, x, y, seed, **kw):
    """A student trained with labels, then `generations` of the same architecture distilled from it (the teacher
    is not used: born-again starts from labels)."""
    seed_everything(seed)
    parent = make_student()
    train.distill(parent, x, y, None, CrossEntropy(), seed=seed, **kw)
    return born_again(make_student, parent, x, y, weights["generations"], weights["T"], weights["alpha"],
                      seed=seed, **kw)[-1]


@_scheme("mutual learning", "Zhang et al. 2018", {"T": 1.0, "alpha": 0.5})
def _mutual_scheme(teacher, weights, make_student, x, y, seed, **kw):
    """Two students from scratch teaching each other (the teacher is not used); the first one is returned."""
    return mutual_learning(make_student, make_student, x, y, T=weights["T"], alpha=weights["alpha"], seed=seed,
                           **kw)[0]


@_scheme("function matching", "Beyer et al. 2022", {"T": 1.0})
def _function_matching_scheme(teacher, weights, make_student, x, y, seed, **kw):
    """alpha = 1 at T, the teacher run on every shifted batch (data.random_shift: MNIST-sized images)."""
    seed_everything(seed)
    student = make_student()
    function_matching(student, teacher, x, y, random_shift, T=weights["T"], seed=seed, **kw)
    return student
