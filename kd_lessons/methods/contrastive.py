"""Contrastive distillation: a CRD-style in-batch contrastive loss (Tian et al., ICLR 2020) on top of Hinton's loss.

Introduced in notebook 11_methods_tour. Two small projection heads map the student's and the
teacher's embeddings of a batch into one space; the student's embedding of image i must pick out
the teacher's embedding of image i among those of the other images of the batch. CRD draws its
negatives from a memory bank of 16384 embeddings; here the other B - 1 images of the batch are the
negatives (InfoNCE), which needs no extra state and no dataset indices. `CRD.for_models` sizes
fresh heads from the two models; `crd_for(teacher, input_shape)` is a student -> CRD function for
`runs.students.train_students`.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons import datasets
from kd_lessons.losses import check_weight
from kd_lessons.methods.feature_kd import feature_shapes
from kd_lessons.methods.registry import register, setting
from kd_lessons.methods.relations import EmbeddingObjective
from kd_lessons.objectives import HintonKD

__all__ = ["CRD", "crd_for"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: pass a positive integer (read widths off "
                         "methods.feature_kd.feature_shapes, or use CRD.for_models).")
    return value


@register("KD + CRD (in-batch)", "contrastive", "Tian et al. 2020",
          {"T": 4.0, "alpha": 0.9, "weight": 0.8, "dim": 64, "tau": 0.07},
          build=lambda teacher, rec, **_: crd_for(teacher, datasets.get(setting(rec, "dataset")).shape,
                                                  T=setting(rec, "T"), alpha=setting(rec, "alpha")))
class CRD(EmbeddingObjective):
    """HintonKD(T, alpha) + weight * in-batch contrastive loss between projected embeddings. Notebook 11_methods_tour.

    Tian et al. (ICLR 2020), Sec. 3: heads g^S, g^T (Linear to `dim`, then L2 normalisation) give
    the critic exp(g^S(s_i) . g^T(t_j) / tau). With the batch's other samples as negatives the loss is
    InfoNCE: logits_ij = g^S(s_i) . g^T(t_j) / tau and cross-entropy with the diagonal as the positives,
    student -> teacher (symmetric=True averages both directions). Defaults follow RepDistiller (tau 0.07,
    weight 0.8, dim 128 there; 64 here for small students). The heads are trained with the student; the
    teacher gets no gradient. Embeddings: feature map `layer`, flattened (global-average-pooled if 4-D);
    `dims = (student_dim, teacher_dim)` are their widths, the heads' inputs.
    """

    def __init__(self, dims: tuple[int, int], T: float = 4.0, alpha: float = 0.9, weight: float = 0.8,
                 dim: int = 64, tau: float = 0.07, layer: int = -1, symmetric: bool = False):
        super().__init__()
        if not isinstance(dims, (tuple, list)) or len(dims) != 2:
            raise ValueError(f"dims={dims!r}: pass the two embedding widths (student_dim, teacher_dim), e.g. "
                             "dims=(64, 128), or use CRD.for_models.")
        student_dim, teacher_dim = dims
        self.response = HintonKD(T, alpha)
        self.weight = check_weight("weight", weight, 0.8)
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau={tau!r}: pass a temperature > 0 such as tau=0.07 (smaller = sharper).")
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"layer={layer!r}: pass the index of a feature map, e.g. layer=-1 (the last).")
        if not isinstance(symmetric, bool):
            raise ValueError(f"symmetric={symmetric!r}: pass True or False.")
        self.tau, self.layer, self.symmetric = float(tau), layer, symmetric
        self.student_head = nn.Linear(_positive_int("student_dim", student_dim), _positive_int("dim", dim))
        self.teacher_head = nn.Linear(_positive_int("teacher_dim", teacher_dim), dim)
        self.last: dict[str, torch.Tensor] = {}

    @classmethod
    def for_models(cls, student: nn.Module, teacher: nn.Module, input_shape: Sequence[int], layer: int = -1,
                   **kwargs) -> "CRD":
        """A CRD with fresh heads sized from the two models' feature maps at `layer`. Notebook 11_methods_tour."""
        shapes = [feature_shapes(m, input_shape) for m in (student, teacher)]
        for who, s in zip(("student", "teacher"), shapes):
            if not -len(s) <= layer < len(s):
                raise ValueError(f"layer={layer} but the {who} returns {len(s)} feature maps; pick an index in range.")
        return cls((shapes[0][layer][0], shapes[1][layer][0]), layer=layer, **kwargs)

    def contrastive_loss(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """InfoNCE over the batch between [B, student_dim] and [B, teacher_dim] embeddings (teacher detached)."""
        if s.shape[1] != self.student_head.in_features or t.shape[1] != self.teacher_head.in_features:
            raise ValueError(f"embeddings are {list(s.shape)} (student) and {list(t.shape)} (teacher) but the heads "
                             f"take {self.student_head.in_features} and {self.teacher_head.in_features}; build the "
                             "objective with CRD.for_models(student, teacher, input_shape).")
        with torch.autocast(s.device.type, enabled=False):
            g_s = F.normalize(self.student_head(s.float()), dim=1)
            g_t = F.normalize(self.teacher_head(t.detach().float()), dim=1)
            logits = g_s @ g_t.T / self.tau
            target = torch.arange(len(s), device=s.device)
            loss = F.cross_entropy(logits, target)
            if self.symmetric:
                loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
        return loss

    def forward(self, student_out, teacher_out, y):
        """Response KD on the logits plus weight * the contrastive term."""
        (s_logits, s), (t_logits, t) = self.embeddings(student_out, teacher_out)
        contrast = self.contrastive_loss(s, t)
        self.last = {"contrastive": contrast.detach()}
        return self.response(s_logits, t_logits, y) + self.weight * contrast

    def extra_repr(self) -> str:
        return (f"T={self.response.T:g}, alpha={self.response.alpha:g}, weight={self.weight:g}, tau={self.tau:g}, "
                f"layer={self.layer}, symmetric={self.symmetric}")


def crd_for(teacher: nn.Module, input_shape: Sequence[int], **kwargs) -> Callable[[nn.Module], CRD]:
    """student -> CRD with fresh heads, a method for runs.students.train_students. Notebook 11_methods_tour."""
    CRD((1, 1), **kwargs)  # bad settings fail now, not mid-comparison
    return lambda student: CRD.for_models(student, teacher, input_shape, **kwargs)
