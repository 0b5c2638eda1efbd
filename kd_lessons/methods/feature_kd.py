"""Feature distillation: FitNets hints and attention transfer on top of Hinton's response loss.

Introduced in notebook 05_feature_distillation. `FeatureKD` is an Objective for `train.distill`:
the teacher runs on every batch with `return_features=True`, and the hint regressor is trained
with the student. `FEATURE_METHODS` names the combinations the notebook compares.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from kd_lessons import datasets
from kd_lessons.losses import HintRegressor, attention_map, attention_transfer_loss, check_weight, hint_loss
from kd_lessons.methods.registry import register, setting
from kd_lessons.objectives import HintonKD, Objective

__all__ = ["feature_shapes", "FeatureKD", "FEATURE_METHODS", "FeatureTerms", "feature_objective", "attention_pair"]


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


class FeatureKD(Objective):
    """HintonKD(T, alpha) + hint_weight * FitNets hint + at_weight * attention transfer. Notebook 05.

    The hint uses a trainable HintRegressor on `hint_layer` (trained with the student); attention
    transfer sums over `at_layers`. `last` keeps the latest unweighted terms for display.
    """

    uses_features = True

    def __init__(self, student_shapes: Sequence[tuple[int, ...]], teacher_shapes: Sequence[tuple[int, ...]],
                 T: float = 4.0, alpha: float = 0.9, hint_weight: float = 0.0, at_weight: float = 0.0,
                 hint_layer: int = 0, at_layers: Sequence[int] | None = None):
        super().__init__()
        n = len(student_shapes)
        if n == 0 or len(teacher_shapes) != n:
            raise ValueError(f"student gives {n} feature maps and teacher {len(teacher_shapes)}; pair models "
                             "whose return_features lists have the same length (e.g. TeacherCNN and CNNStudent).")
        self.response = HintonKD(T, alpha)
        self.hint_weight = check_weight("hint_weight", hint_weight)
        self.at_weight = check_weight("at_weight", at_weight)
        self.hint_layer = _check_layers("hint_layer", [hint_layer], n)[0]
        self.at_layers = _check_layers("at_layers", range(n) if at_layers is None else at_layers, n)
        if self.at_weight > 0 and any(len(student_shapes[i]) != 3 for i in self.at_layers):
            raise ValueError("attention transfer needs [C, H, W] feature maps at at_layers; MLP features are "
                             "flat vectors, so use hint_weight only (or a CNN student).")
        s_c, t_c = student_shapes[self.hint_layer][0], teacher_shapes[self.hint_layer][0]
        self.regressor = HintRegressor(s_c, t_c) if self.hint_weight > 0 else None
        self.last: dict[str, float] = {}

    def features_loss(self, student_features: list[torch.Tensor], teacher_features: list[torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the switched-on feature terms (a 0-tensor when both weights are 0)."""
        total = student_features[0].new_zeros((), dtype=torch.float32)
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

    def forward(self, student_out, teacher_out, y):
        """Response KD on the logits plus the feature terms."""
        (s_logits, s_feats), (t_logits, t_feats) = student_out, teacher_out
        return self.response(s_logits, t_logits, y) + self.features_loss(s_feats, t_feats)


# name -> (hint on, attention on); "scratch" and "response" are plain CrossEntropy / HintonKD
FEATURE_METHODS = {"response + hint": (True, False), "response + attention": (False, True),
                   "response + hint + attention": (True, True)}


@dataclasses.dataclass(frozen=True)
class FeatureTerms:
    """The feature terms' weights and layers, one value for every method compared. Notebook 05_feature_distillation.

    feature_objective switches off the weight of a term its method does not use (e.g. at_weight for
    "response + hint"); at_layers=None means every stage.
    """

    hint_weight: float = 1.0
    at_weight: float = 1.0
    hint_layer: int = 0
    at_layers: Sequence[int] | None = None


def feature_objective(method: str, student: nn.Module, teacher: nn.Module, input_shape: Sequence[int],
                      T: float = 4.0, alpha: float = 0.9, terms: FeatureTerms | None = None) -> FeatureKD:
    """A fresh FeatureKD for one of FEATURE_METHODS, sized from the two models. Notebook 05_feature_distillation."""
    if method not in FEATURE_METHODS:
        raise ValueError(f"method={method!r}: use one of {list(FEATURE_METHODS)}")
    terms = FeatureTerms() if terms is None else terms
    if not isinstance(terms, FeatureTerms):
        raise ValueError(f"terms={terms!r}: pass a FeatureTerms, e.g. FeatureTerms(hint_weight=1.0, at_weight=1.0)")
    use_hint, use_at = FEATURE_METHODS[method]
    return FeatureKD(feature_shapes(student, input_shape), feature_shapes(teacher, input_shape), T=T, alpha=alpha,
                     hint_weight=terms.hint_weight if use_hint else 0.0, at_weight=terms.at_weight if use_at else 0.0,
                     hint_layer=terms.hint_layer, at_layers=terms.at_layers)


def _feature_build(method: str):
    """The registry's build(teacher, rec) of one of FEATURE_METHODS: student -> FeatureKD sized from both models."""
    return lambda teacher, rec, **_: lambda student: feature_objective(
        method, student, teacher, datasets.get(setting(rec, "dataset")).shape, T=setting(rec, "T"),
        alpha=setting(rec, "alpha"))


for _method, _paper in zip(FEATURE_METHODS, ("Romero et al. 2015", "Zagoruyko & Komodakis 2017",
                                             "Romero et al. 2015; Zagoruyko & Komodakis 2017")):
    _hint, _at = FEATURE_METHODS[_method]
    register(_method, "features", _paper, {"T": 4.0, "alpha": 0.9, **({"hint_weight": 1.0} if _hint else {}),
                                           **({"at_weight": 1.0} if _at else {})},
             build=_feature_build(_method))(feature_objective)


@torch.no_grad()
def attention_pair(student: nn.Module, teacher: nn.Module, x: torch.Tensor,
                   layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
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
