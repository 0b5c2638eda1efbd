"""Few labels, many unlabelled images: the setting where distillation pays most, as in industry.

Introduced in notebook 04_distill_mnist; the app's accuracy panel and the T x alpha grid use the
same recipe. A student gets `n_labeled` labelled training images; every other training image is
shown to the teacher only (its label hidden, `objectives.UNLABELED`). Methods, all with the same
number of optimizer steps:
- "scratch": cross-entropy on the labelled images only (what the student could do alone);
- "distilled": HintonKD on all images: the teacher's soft labels everywhere, true labels where known;
- "pseudo-labels": cross-entropy on the teacher's top class for the unlabelled images (hard targets);
- "all labels": cross-entropy with every true label (a reference the few-labels student cannot have).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from kd_lessons import config
from kd_lessons.data import check_name, hide_labels, load_tensors, stratified_subset
from kd_lessons.models import MLPStudent
from kd_lessons.models import make_student as build_student
from kd_lessons.objectives import UNLABELED, CrossEntropy, HintonKD
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs.students import Arm, StudentRuns, each_seed, train_students
from kd_lessons.teachers import cached_logits
from kd_lessons.train import TrainOptions

__all__ = ["METHODS", "FewLabelsRecipe", "recipe", "split", "methods", "study", "make_student"]

METHODS = ("scratch", "distilled", "pseudo-labels", "all labels")


@dataclass(frozen=True)
class FewLabelsRecipe(Recipe):
    """Everything a few-labels run depends on besides the method, T and alpha (mode: a field). Notebook 04."""

    dataset: str = "mnist"
    n_labeled: int = pick(1000, 500)
    n_pool: int | None = pick(None, 5000)  # a class-balanced training pool; None: every training image
    student_width: int = 100
    steps: int = pick(3000, 300)
    lr: float = 3e-3
    batch_size: int = 128
    weight_decay: float = 5e-4
    seed: int = 0
    mode: str = field(default_factory=config.mode)

    def _check(self) -> None:
        object.__setattr__(self, "dataset", check_name(self.dataset))  # 'Fashion-MNIST' -> 'fashion_mnist'
        self._positive("n_labeled", "n_pool", "student_width", "steps", "lr", "batch_size")
        self._between("weight_decay", 0.0, 1.0)
        self._one_of("mode", ("quick", "full"))
        if self.n_pool is not None and self.n_labeled > self.n_pool:
            self._fail("n_labeled", f"must be <= n_pool={self.n_pool} (the labelled images come from the pool)")


def recipe(dataset: str = "mnist", **overrides) -> FewLabelsRecipe:
    """The few-labels recipe of the current mode; overrides replace fields. Notebook 04_distill_mnist."""
    return FewLabelsRecipe(dataset=dataset, **check_recipe(FewLabelsRecipe, overrides))


def make_student(rec: FewLabelsRecipe) -> MLPStudent:
    """The recipe's student: an MLP with two hidden layers of `student_width` units, sized for its dataset's images."""
    return build_student(rec.dataset, "mlp", rec.student_width)


def split(rec: FewLabelsRecipe) -> dict:
    """The training pool with most labels hidden, its labelled part, the true labels and the test set."""
    x, y = load_tensors(rec.dataset, train=True)
    if rec.n_pool is not None:
        x, y = stratified_subset(x, y, rec.n_pool, seed=0)
    y_few = hide_labels(y, rec.n_labeled, seed=rec.seed)
    labelled = y_few != UNLABELED
    x_test, y_test = load_tensors(rec.dataset, train=False)
    return {"dataset": rec.dataset, "x": x, "y": y_few, "y_true": y, "x_labeled": x[labelled],
            "y_labeled": y[labelled], "x_test": x_test, "y_test": y_test}


def methods(data: dict, teacher: torch.nn.Module, T: float = 4.0, alpha: float = 0.9,
            names=METHODS) -> dict:
    """The study's methods by name, as train_students takes them. Notebook 04_distill_mnist."""
    unknown = set(names) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; use some of {list(METHODS)}")
    table = {"scratch": Arm(CrossEntropy(), data["x_labeled"], data["y_labeled"]),
             "distilled": HintonKD(T, alpha),
             "all labels": Arm(CrossEntropy(), data["x"], data["y_true"])}
    if "pseudo-labels" in names:
        top = cached_logits(teacher, data["x"]).argmax(1)
        table["pseudo-labels"] = Arm(CrossEntropy(), data["x"], torch.where(data["y"] == UNLABELED, top, data["y"]))
    return {name: table[name] for name in names}


def study(rec: FewLabelsRecipe, teacher: torch.nn.Module, seeds=(0,), T: float = 4.0, alpha: float = 0.9,
          names=METHODS, val: bool = False, options: TrainOptions | None = None) -> StudentRuns:
    """Train each method's student per seed with the recipe's budget. Notebook 04_distill_mnist.

    Each seed s draws its own labelled subset (`split(rec.replace(seed=s))`), initialisation and batch order,
    so the seeds cover every random source; the pool (all training images in full mode) and the teacher are fixed.
    """
    options = replace(options or TrainOptions(progress=False), weight_decay=rec.weight_decay)
    options = replace(options, batch_size=rec.batch_size, val=val or None, max_steps=rec.steps)

    def one(seed: int) -> StudentRuns:
        data = split(rec.replace(seed=seed))
        return train_students(lambda: make_student(rec), data, methods(data, teacher, T, alpha, names), [seed],
                              teacher=teacher, lr=rec.lr, options=options)

    return each_seed(one, seeds)
