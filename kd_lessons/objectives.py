"""Training objectives as objects: one training loop, and each method adds an object, not a flag.

Introduced in notebook 04_distill_mnist. `train.distill(student, x, y, teacher, objective)` calls
`objective(student_out, teacher_out, y)` on every batch; `train.fit` uses `CrossEntropy`. An
objective that is an nn.Module with parameters (e.g. FitNets regressors in
`kd_lessons.methods.feature_kd`) is trained along with the student. Set `uses_features = True` to
receive `(logits, [features])` from both models (the teacher then runs on every batch).

Labels may be `UNLABELED` (-1) for images only the teacher labels (few labels + many unlabelled
images, notebook 04): an objective with `allows_unlabeled = True` (HintonKD, the logit methods) accepts
them, and `labelled_cross_entropy` averages its hard term over the labelled rows only.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.losses import check_alpha, check_labels, check_logits, check_T, kd_term
from kd_lessons.methods.registry import register

__all__ = ["UNLABELED", "Objective", "CrossEntropy", "HintonKD", "labelled_cross_entropy"]

UNLABELED = -1  # the label of an image whose class only the teacher tells


def labelled_cross_entropy(student_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the labelled rows (0 when none), no host sync. Notebook 04_distill_mnist."""
    hard = F.cross_entropy(student_logits, y, ignore_index=UNLABELED, reduction="sum")
    return hard / (y != UNLABELED).sum().clamp_min(1)  # stays on the device


class Objective(nn.Module):
    """What a student is trained to match, given its output, the teacher's output and the labels."""

    uses_teacher: bool = True
    uses_features: bool = False
    allows_unlabeled: bool = False  # True: rows labelled UNLABELED (-1) are taught by the teacher alone

    def check(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, y: torch.Tensor) -> None:
        """Full input checks, run once on the first batch (per-batch checks would sync a GPU every step)."""
        if teacher_logits is not None:
            check_logits(student_logits.float(), teacher_logits.float())
        if not self.allows_unlabeled or not isinstance(y, torch.Tensor):
            check_labels(y, *student_logits.shape)
            return
        check_labels(y.clamp_min(0), *student_logits.shape)
        if bool((y < UNLABELED).any()):
            raise ValueError(f"labels below {UNLABELED} found; use class indices, or {UNLABELED} for an image "
                             "only the teacher labels")

    def forward(self, student_out, teacher_out, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError("an Objective subclass computes the loss in forward(student_out, teacher_out, y)")


@register("scratch", "none", "(no teacher: the baseline)", {"label_smoothing": 0.0})
class CrossEntropy(Objective):
    """Hard labels only: how teachers and from-scratch baselines learn. Notebook 04_distill_mnist."""

    uses_teacher = False

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
                or not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing!r}: pass a number in [0, 1) such as 0.1")
        self.label_smoothing = float(label_smoothing)

    def forward(self, student_logits, teacher_logits, y):
        """Cross-entropy with the labels (teacher_logits is ignored and may be None)."""
        return F.cross_entropy(student_logits.float(), y, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing:g}"


@register("Hinton KD", "logits", "Hinton et al. 2015", {"T": 4.0, "alpha": 0.9}, recipe_keys=("T", "alpha"))
class HintonKD(Objective):
    """Hinton et al. (2015): alpha * T^2 KL(teacher || student at T) + (1 - alpha) * CE. Notebook 03_kl_loss.

    The same value as `losses.distillation_loss`, checked once (at construction and on the first
    batch) instead of on every batch. Rows labelled UNLABELED get the soft term only: the
    cross-entropy is averaged over the labelled rows of the batch (0 when there are none).
    """

    allows_unlabeled = True

    def __init__(self, T: float = 4.0, alpha: float = 0.9):
        super().__init__()
        self.T, self.alpha = check_T(T), check_alpha(alpha)

    def forward(self, student_logits, teacher_logits, y):
        """alpha * kd_term + (1 - alpha) * cross-entropy on the labelled rows; the teacher gets no gradient."""
        student_logits = student_logits.float()
        soft = kd_term(student_logits, teacher_logits.float(), self.T)
        if self.alpha == 1.0:
            return soft
        return self.alpha * soft + (1.0 - self.alpha) * labelled_cross_entropy(student_logits, y)

    def extra_repr(self) -> str:
        return f"T={self.T:g}, alpha={self.alpha:g}"
