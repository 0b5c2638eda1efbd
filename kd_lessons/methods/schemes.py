"""Training schemes: who teaches whom, and when. TAKD, born-again networks, deep mutual learning, function matching.

Introduced in notebook 11_methods_tour. The other `methods` modules change *what* a student matches
(an Objective); a scheme changes the *training procedure* around the same loss: a chain of teachers (teacher
assistant, born-again generations), two students teaching each other from scratch (deep mutual
learning), or one teacher shown exactly the student's augmented view for a long time (function
matching). Every scheme calls `train.distill` / `train.fit`; mutual learning, where two models are
updated together, is a plug-in of the same loop (kd_lessons.loop) that owns both models.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from kd_lessons import train
from kd_lessons.config import resolve_device, seed_everything
from kd_lessons.data import check_xy, iterate_batches, random_shift
from kd_lessons.loop import Learner, LoopSettings, OneCycle, run_loop
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


def _seed(train_kwargs: dict) -> int:
    """The seed a scheme's `train.distill` calls use: options.seed (0 without options)."""
    options = train_kwargs.get("options")
    return options.seed if options is not None else 0


def _with_seed(kw: dict, seed: int) -> dict:
    """The registry's train kwargs with `seed` in their TrainOptions."""
    return {**kw, "options": replace(kw.get("options") or train.TrainOptions(), seed=seed)}


def teacher_assistant(make_assistant: Callable[[], nn.Module], make_student: Callable[[], nn.Module], teacher, x, y,
                      T: float = 4.0, alpha: float = 0.9, **train_kwargs):
    """TAKD (Mirzadeh et al., AAAI 2020): an assistant bridges a big teacher-student gap. Notebook 11_methods_tour.

    Distils teacher -> assistant, then assistant -> student, both with HintonKD(T, alpha) and the same
    `train_kwargs` (num_epochs, lr, options of `train.distill`; options.seed seeds both initialisations).
    The paper's point: when the teacher is much larger, an intermediate model's softer, simpler outputs
    teach a small student better. Returns (assistant, student, {"assistant": history, "student": history}).
    """
    _check_factory("make_assistant", make_assistant)
    _check_factory("make_student", make_student)
    check_xy(x, y)
    objective = HintonKD(T, alpha)  # checks T and alpha before any training
    seed_everything(_seed(train_kwargs))
    assistant = make_assistant()
    histories = {"assistant": train.distill(assistant, x, y, teacher, objective, **train_kwargs)}
    seed_everything(_seed(train_kwargs))
    student = make_student()
    histories["student"] = train.distill(student, x, y, assistant, objective, **train_kwargs)
    return assistant, student, histories


def born_again(make_student: Callable[[], nn.Module], teacher, x, y, generations: int = 2, T: float = 4.0,
               alpha: float = 0.9, **train_kwargs) -> list:
    """Born-again nets (Furlanello et al., ICML 2018): re-distil one architecture. Notebook 11_methods_tour.

    Generation 1 is distilled from `teacher`, generation k+1 from generation k, every one built by
    `make_student` (same architecture; generation k's initialisation is seeded with options.seed + k - 1).
    `train_kwargs` go to `train.distill`. The paper trains the first teacher with labels and averages
    the generations' predictions (BAN ensembles): `models.Ensemble(students)` does that here.
    Returns the list of `generations` students, oldest first.
    """
    _check_factory("make_student", make_student)
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ValueError(f"generations={generations!r}: pass a positive integer such as generations=2")
    check_xy(x, y)
    objective = HintonKD(T, alpha)
    seed = _seed(train_kwargs)
    students, previous = [], teacher
    for k in range(generations):
        seed_everything(seed + k)
        student = make_student()
        train.distill(student, x, y, previous, objective, **train_kwargs)
        students.append(student)
        previous = student
    return students


class _MutualLearner(Learner):
    """The loop plug-in that owns two students: each matches the other's detached logits, both step together."""

    def __init__(self, a: nn.Module, b: nn.Module, objective: HintonKD, optimizers: list):
        self.a, self.b, self.objective, self.optimizers = a, b, objective, optimizers
        self.history = {"epoch": [], "step": [], "train_loss_a": [], "train_loss_b": [], "step_loss_a": [],
                        "step_loss_b": []}

    def start_epoch(self, epoch: int) -> None:
        self.a.train(), self.b.train()

    def loss(self, batch, step: int) -> torch.Tensor:
        _, xb, yb = batch
        logits_a, logits_b = self.a(xb), self.b(xb)  # both predictions before either model moves
        self.loss_a = self.objective(logits_a, logits_b.detach(), yb)  # the other model is a fixed target
        self.loss_b = self.objective(logits_b, logits_a.detach(), yb)
        return self.loss_a + self.loss_b  # the graphs share nothing: each model gets its own loss's gradient

    def record(self, step: int, loss: torch.Tensor) -> None:
        self.history["step_loss_a"].append(float(self.loss_a.detach()))
        self.history["step_loss_b"].append(float(self.loss_b.detach()))

    def end_epoch(self, epoch: int, step: int) -> bool:
        history = self.history
        n = len(history["step_loss_a"]) - (history["step"][-1] if history["step"] else 0)
        history["epoch"].append(epoch)
        history["step"].append(step)
        for k in "ab":
            history[f"train_loss_{k}"].append(sum(history[f"step_loss_{k}"][-n:]) / n)
        return False


def mutual_learning(make_a: Callable[[], nn.Module], make_b: Callable[[], nn.Module], x, y, num_epochs: int,
                    lr: float, objective: HintonKD | None = None, options: train.TrainOptions | None = None):
    """Deep mutual learning (Zhang et al., CVPR 2018): two students teach each other. Notebook 11_methods_tour.

    On every batch each model minimises `objective` (default HintonKD(T=1, alpha=0.5)) against the
    *other* model's logits, computed before either update and detached, so no gradient flows into the
    other model. The paper's loss is CE + KL(p_other || p_own) at T=1; alpha=0.5 gives half of it
    (the same direction; lr absorbs the factor), alpha=0 trains two independent from-scratch models
    (the same steps as two `train.fit` runs), and T > 1 softens both sides as in Hinton's loss. The paper
    updates the models one after the other; here both step on the same predictions (a common variant).
    A plug-in of the one loop that owns both models: AdamW (weight decay 5e-4 as in `fit`, or
    options.weight_decay), `fit`'s OneCycle schedule, fp32 steps; batch_size, seed, device in `options`.
    Returns (a, b, history) with per-step and per-epoch losses of both models.
    """
    _check_factory("make_a", make_a)
    _check_factory("make_b", make_b)
    check_xy(x, y)
    train._labels(y)
    options = options or train.TrainOptions()
    train._check_run(num_epochs, lr, options.batch_size)
    if options.optimizer != "adamw":
        raise ValueError(f"options.optimizer={options.optimizer!r}: mutual_learning uses AdamW; pass 'adamw'")
    objective = HintonKD(1.0, 0.5) if objective is None else objective
    if not isinstance(objective, HintonKD):
        raise ValueError(f"objective={objective!r}: mutual learning matches logits; pass HintonKD(T, alpha)")
    device = resolve_device(options.device)
    generator = seed_everything(options.seed)
    a, b = make_a().to(device), make_b().to(device)
    wd = 5e-4 if options.weight_decay is None else options.weight_decay
    learner = _MutualLearner(a, b, objective, [torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd)
                                               for m in (a, b)])
    steps_per_epoch = math.ceil(len(x) / options.batch_size)
    total = num_epochs * steps_per_epoch if options.max_steps is None else min(options.max_steps,
                                                                               num_epochs * steps_per_epoch)
    epochs = (iterate_batches(x, y, options.batch_size, shuffle=True, generator=generator, device=device)
              for _ in range(num_epochs))
    run_loop(learner, epochs, LoopSettings(total, OneCycle(lr, total), progress=options.progress, desc="mutual",
                                           on_step=options.on_step))
    return a.eval(), b.eval(), learner.history


def function_matching_objective(T: float = 1.0) -> HintonKD:
    """Beyer et al. (CVPR 2022), "patient and consistent": pure KL to the teacher, no labels. Notebook 11_methods_tour.

    alpha=1.0: the student matches the teacher's function, so labels add nothing; the paper uses T=1.
    """
    return HintonKD(T, alpha=1.0)


def function_matching(student: nn.Module, teacher: nn.Module, x, y, augment, T: float = 1.0, **train_kwargs) -> dict:
    """Beyer et al. (CVPR 2022): distillation as function matching, consistent and patient. Notebook 11_methods_tour.

    Consistent: the teacher runs on exactly the augmented batch the student sees (a teacher *model*,
    never logits cached on un-augmented x, which would teach the student the wrong function on the
    shifted image). Patient: the target is a function on an ever-changing input distribution, so it
    keeps improving over long schedules (the paper trains for thousands of epochs) without overfitting.
    Calls `train.distill(student, x, y, teacher, function_matching_objective(T), **train_kwargs)` (num_epochs,
    lr, options) with `augment` put into the options.
    """
    if not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher is a {type(teacher).__name__}: function matching needs the teacher model, so it "
                         "can run on every augmented batch; cached logits would not match the augmented views")
    if augment is None or not callable(augment):
        raise ValueError(f"augment={augment!r}: function matching needs an augmentation shared by teacher and "
                         "student, e.g. augment=data.random_shift (MNIST) or data.random_crop_flip (CIFAR)")
    check_xy(x, y)
    options = replace(train_kwargs.pop("options", None) or train.TrainOptions(), augment=augment)
    return train.distill(student, x, y, teacher, function_matching_objective(T), options=options, **train_kwargs)


# ---------------------------------------------------------------- the schemes as registry entries (notebook 11)
# build(teacher, rec) -> train(make_student, x, y, seed, **kw) -> the trained student; kw go to train.distill
# (num_epochs, lr, options with batch_size; the seed is put into options here). The weights are each scheme's
# defaults, with the recipe's recipe_keys.

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
                             weights["T"], weights["alpha"], **_with_seed(kw, seed))[1]


@_scheme("born-again", "Furlanello et al. 2018", {"T": 4.0, "alpha": 0.9, "generations": 1},
         recipe_keys=("T", "alpha"))
def _born_again_scheme(teacher, weights, make_student, x, y, seed, **kw):
    """A student trained with labels, then `generations` of the same architecture distilled from it (the teacher
    is not used: born-again starts from labels)."""
    seed_everything(seed)
    parent = make_student()
    train.distill(parent, x, y, None, CrossEntropy(), **_with_seed(kw, seed))
    return born_again(make_student, parent, x, y, weights["generations"], weights["T"], weights["alpha"],
                      **_with_seed(kw, seed))[-1]


@_scheme("mutual learning", "Zhang et al. 2018", {"T": 1.0, "alpha": 0.5})
def _mutual_scheme(teacher, weights, make_student, x, y, seed, **kw):
    """Two students from scratch teaching each other (the teacher is not used); the first one is returned."""
    return mutual_learning(make_student, make_student, x, y, objective=HintonKD(weights["T"], weights["alpha"]),
                           **_with_seed(kw, seed))[0]


@_scheme("function matching", "Beyer et al. 2022", {"T": 1.0})
def _function_matching_scheme(teacher, weights, make_student, x, y, seed, **kw):
    """alpha = 1 at T, the teacher run on every shifted batch (data.random_shift: MNIST-sized images)."""
    seed_everything(seed)
    student = make_student()
    function_matching(student, teacher, x, y, random_shift, T=weights["T"], **_with_seed(kw, seed))
    return student
