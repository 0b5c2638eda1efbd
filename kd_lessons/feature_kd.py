"""Feature distillation: FitNets hints and attention transfer on top of the response (logit) KD loss.

Introduced in notebook 05_feature_distillation. `FeatureDistillLoss` is the `feature_loss` that
`train.distill` adds to Hinton's loss; `distill_features` builds it for a student/teacher pair, and
`compare_methods` trains scratch / response-only / response + features students with one budget.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kd_lessons.config import seed_everything
from kd_lessons.losses import HintRegressor, attention_map, attention_transfer_loss, hint_loss
from kd_lessons.train import distill, evaluate, fit

__all__ = ["feature_shapes", "FeatureDistillLoss", "distill_features", "METHODS", "compare_methods",
           "attention_pair"]


@torch.no_grad()
def feature_shapes(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Shapes (without batch) of the maps `model(x, return_features=True)` returns. Notebook 05_feature_distillation.

    Used to size a HintRegressor: its channels come from these shapes, not from reading the code.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    _, features = model(torch.zeros(2, *input_shape, device=device), return_features=True)
    model.train(was_training)
    return [tuple(f.shape[1:]) for f in features]


def _check_layers(name: str, layers: Sequence[int], n: int) -> list[int]:
    """Layer indices must point into both feature lists."""
    layers = [int(i) for i in layers]
    if any(not -n <= i < n for i in layers):
        raise ValueError(f"{name}={layers} but the models return {n} feature maps; pick indices in "
                         f"[0, {n}) (0 = first stage).")
    return layers


class FeatureDistillLoss(nn.Module):
    """hint_weight * FitNets hint + at_weight * attention transfer, as train.distill's feature_loss.

    Introduced in notebook 05_feature_distillation. The hint uses a trainable HintRegressor on
    `hint_layer` (trained with the student); attention transfer sums over `at_layers`. `last`
    keeps the latest unweighted terms for display.
    """

    def __init__(self, student_shapes: Sequence[tuple[int, ...]], teacher_shapes: Sequence[tuple[int, ...]],
                 hint_weight: float = 0.0, at_weight: float = 0.0, hint_layer: int = 0,
                 at_layers: Sequence[int] | None = None):
        super().__init__()
        n = len(student_shapes)
        if n == 0 or len(teacher_shapes) != n:
            raise ValueError(f"student gives {n} feature maps and teacher {len(teacher_shapes)}; pair models "
                             "whose return_features lists have the same length (e.g. TeacherCNN and CNNStudent).")
        for name, w in (("hint_weight", hint_weight), ("at_weight", at_weight)):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
                raise ValueError(f"{name}={w!r}: pass a weight >= 0 (0 switches the term off).")
        self.hint_weight, self.at_weight = float(hint_weight), float(at_weight)
        self.hint_layer = _check_layers("hint_layer", [hint_layer], n)[0]
        self.at_layers = _check_layers("at_layers", range(n) if at_layers is None else at_layers, n)
        if self.at_weight > 0 and any(len(student_shapes[i]) != 3 for i in self.at_layers):
            raise ValueError("attention transfer needs [C, H, W] feature maps at at_layers; MLP features are "
                             "flat vectors, so use hint_weight only (or a CNN student).")
        s_c, t_c = student_shapes[self.hint_layer][0], teacher_shapes[self.hint_layer][0]
        self.regressor = HintRegressor(s_c, t_c) if self.hint_weight > 0 else None
        self.last: dict[str, float] = {}

    def forward(self, student_features: list[torch.Tensor], teacher_features: list[torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the switched-on terms (a 0-tensor when both weights are 0)."""
        total = student_features[0].new_zeros(())
        if self.regressor is not None:
            hint = hint_loss(student_features[self.hint_layer].float(),
                             teacher_features[self.hint_layer].float(), self.regressor)
            self.last["hint"] = float(hint.detach())
            total = total + self.hint_weight * hint
        if self.at_weight > 0:
            at = sum(attention_transfer_loss(student_features[i].float(), teacher_features[i].float())
                     for i in self.at_layers)
            self.last["attention"] = float(at.detach())
            total = total + self.at_weight * at
        return total


def distill_features(student: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher: nn.Module,
                     T: float = 4.0, alpha: float = 0.9, hint_weight: float = 0.0, at_weight: float = 0.0,
                     hint_layer: int = 0, at_layers: Sequence[int] | None = None, num_epochs: int = 5,
                     lr: float = 3e-3, **train_kwargs) -> dict:
    """Response KD plus hint and/or attention-transfer terms (teacher run per batch). Notebook 05_feature_distillation.

    loss = alpha * T^2 KL + (1 - alpha) * CE + hint_weight * hint + at_weight * AT. With both weights 0
    it is plain train.distill. Extra keyword arguments (batch_size, seed, x_val, ...) go to train.distill.
    """
    if hint_weight == 0 and at_weight == 0:
        return distill(student, x, y, teacher=teacher, T=T, alpha=alpha, num_epochs=num_epochs, lr=lr,
                       **train_kwargs)
    shape = tuple(x.shape[1:])
    loss = FeatureDistillLoss(feature_shapes(student, shape), feature_shapes(teacher, shape),
                              hint_weight=hint_weight, at_weight=at_weight, hint_layer=hint_layer,
                              at_layers=at_layers)
    return distill(student, x, y, teacher=teacher, T=T, alpha=alpha, num_epochs=num_epochs, lr=lr,
                   feature_loss=loss, beta=1.0, **train_kwargs)


# name -> (uses the teacher's logits, hint_weight > 0, at_weight > 0)
METHODS = {"scratch": (False, False, False), "response": (True, False, False),
           "response + hint": (True, True, False), "response + attention": (True, False, True),
           "response + hint + attention": (True, True, True)}


def compare_methods(make_student: Callable[[], nn.Module], teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    x_test: torch.Tensor, y_test: torch.Tensor, methods: Sequence[str] = tuple(METHODS),
                    seeds: Sequence[int] = (0,), T: float = 4.0, alpha: float = 0.9, hint_weight: float = 1.0,
                    at_weight: float = 1.0, hint_layer: int = 0, at_layers: Sequence[int] | None = None,
                    num_epochs: int = 3, lr: float = 3e-3, batch_size: int = 128, weight_decay: float = 0.0,
                    progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Train one student per (method, seed) with the same data, epochs, lr and batch size. Notebook 05_feature_distillation.

    Returns (table, students): one row per run (method, seed, accuracy, errors, seconds) and the
    trained students keyed by (method, seed). "scratch" is cross-entropy only (train.fit).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or not seeds:
        raise ValueError(f"methods={list(methods)}, seeds={list(seeds)}: pass non-empty lists; methods "
                         f"must come from {list(METHODS)}")
    rows, students = [], {}
    common = dict(num_epochs=num_epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, progress=False)
    runs = [(m, s) for s in seeds for m in methods]
    for method, seed in tqdm(runs, desc="students", disable=not progress):
        _, use_hint, use_at = METHODS[method]
        seed_everything(seed)
        student = make_student()
        start = time.perf_counter()
        if method == "scratch":
            fit(student, x, y, seed=seed, **common)
        else:
            distill_features(student, x, y, teacher, T=T, alpha=alpha, hint_weight=hint_weight if use_hint else 0.0,
                             at_weight=at_weight if use_at else 0.0, hint_layer=hint_layer, at_layers=at_layers,
                             seed=seed, **common)
        seconds = time.perf_counter() - start
        result = evaluate(student, x_test, y_test)
        rows.append({"method": method, "seed": seed, "accuracy": result["accuracy"],
                     "errors": result["errors"], "seconds": seconds})
        students[(method, seed)] = student
    return pd.DataFrame(rows), students


@torch.no_grad()
def attention_pair(student: nn.Module, teacher: nn.Module, x: torch.Tensor, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, W] attention maps of student and teacher at one stage, for plots. Notebook 05_feature_distillation."""
    maps = []
    for model in (student, teacher):
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        _, features = model(x.to(device), return_features=True)
        model.train(was_training)
        f = features[layer].float()
        maps.append(attention_map(f).view(len(x), *f.shape[2:]).cpu())
    return maps[0], maps[1]
