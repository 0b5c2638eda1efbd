"""Logit distillation beyond Hinton's loss: DKD, DIST and logit standardisation.

Introduced in notebook 11_methods_tour. Each method is an `Objective` for `train.distill` that sees only
the two models' logits (a teacher model or its cached logits both work). Hyper-parameters are checked at
construction, inputs once on the first batch (`check`); `forward` computes in float32 and never syncs
with the host. Notation as in `kd_lessons.losses`: z student logits, v teacher logits, t the true class.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lessons.losses import check_alpha, check_T, check_weight, kd_term
from kd_lessons.methods.registry import register
from kd_lessons.objectives import UNLABELED, Objective, labelled_cross_entropy

__all__ = ["DKD", "DIST", "LogitStandardizedKD", "dkd_terms", "pearson_rows", "dist_terms", "standardize"]


class _LogitObjective(Objective):
    """Shared first-batch check: at least 2 classes; UNLABELED rows allowed unless `needs_labels`."""

    needs_labels = False
    allows_unlabeled = True

    def check(self, student_logits, teacher_logits, y) -> None:
        """As Objective.check, plus >= 2 classes, and UNLABELED (-1) rows only where the method can use them."""
        if self.needs_labels and isinstance(y, torch.Tensor) and not y.dtype.is_floating_point \
                and bool((y == UNLABELED).any()):
            raise ValueError(f"{type(self).__name__} needs a label for every row (it splits the loss at the true "
                             f"class), but y has UNLABELED ({UNLABELED}) rows; for images only the teacher labels "
                             "use HintonKD or LogitStandardizedKD.")
        super().check(student_logits, teacher_logits, y)
        if student_logits.shape[1] < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes, got logits of shape "
                             f"{list(student_logits.shape)}.")


# ---------------------------------------------------------------- DKD (Zhao et al., CVPR 2022)

def dkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
              T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (TCKD, NCKD), each times T^2: the two parts DKD weighs apart. Notebook 11_methods_tour.

    TCKD = KL(b^T || b^S), b = [p_t, 1 - p_t] (target vs the rest); NCKD = KL(p^T~ || p^S~), p~ the softmax
    over the non-target classes only. Hinton's KD per row = TCKD + (1 - p_t^T) NCKD (the paper's Sec. 3.1).
    The non-target logits are gathered (no -1000 mask as in mdistiller), so the split is exact for any logits.
    """
    z, v = student_logits.float() / T, teacher_logits.detach().float() / T
    cols = torch.arange(z.shape[1] - 1, device=z.device).expand(len(y), -1)
    cols = cols + (cols >= y[:, None]).long()  # every column but the target, in order
    parts = []
    for s in (z, v):
        others = s.gather(1, cols)
        binary = torch.cat([s.gather(1, y[:, None]), others.logsumexp(1, keepdim=True)], dim=1)
        parts.append((F.log_softmax(binary, dim=1), F.log_softmax(others, dim=1)))
    (b_s, o_s), (b_t, o_t) = parts
    tckd = (b_t.exp() * (b_t - b_s)).sum(1)
    nckd = (o_t.exp() * (o_t - o_s)).sum(1)
    return T * T * tckd, T * T * nckd


@register("DKD", "logits", "Zhao et al. 2022", {"T": 4.0, "alpha": 1.0, "beta": 8.0, "ce_weight": 1.0},
          recipe_keys=("T",))
class DKD(_LogitObjective):
    """Decoupled KD: weigh target and non-target knowledge apart (Zhao et al., CVPR 2022). Notebook 11_methods_tour.

    loss = ce_weight * CE + alpha * TCKD + beta * NCKD (the paper's Sec. 3.2), each KL times T^2 and
    averaged over the batch as in the authors' code (mdistiller; defaults are its CIFAR-100 ones).
    mdistiller also ramps the DKD term up over the first 20 epochs; an Objective has no epoch, so do that
    with a schedule of your own if you need it. Every row needs a label.
    """

    needs_labels = True

    def __init__(self, T: float = 4.0, alpha: float = 1.0, beta: float = 8.0, ce_weight: float = 1.0):
        super().__init__()
        self.T = check_T(T)
        self.alpha, self.beta = check_weight("alpha", alpha, 1.0), check_weight("beta", beta, 8.0)
        self.ce_weight = check_weight("ce_weight", ce_weight, 1.0)

    def forward(self, student_logits, teacher_logits, y):
        """ce_weight * CE + batch means of alpha * TCKD + beta * NCKD; the teacher gets no gradient."""
        tckd, nckd = dkd_terms(student_logits, teacher_logits, y, self.T)
        loss = (self.alpha * tckd + self.beta * nckd).mean()
        return loss + self.ce_weight * F.cross_entropy(student_logits.float(), y) if self.ce_weight else loss

    def extra_repr(self) -> str:
        return f"T={self.T:g}, alpha={self.alpha:g}, beta={self.beta:g}, ce_weight={self.ce_weight:g}"


# ---------------------------------------------------------------- DIST (Huang et al., NeurIPS 2022)

def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson's r of each row of a with the same row of b: a match up to scale and shift. Notebook 11_methods_tour.

    As in the authors' code, eps is added to the product of the centred norms (a constant row gives 0).
    """
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_terms(student_probs: torch.Tensor, teacher_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inter, intra): 1 - correlation per image (over classes) and per class (over images). Notebook 11_methods_tour.

    inter = 1 - mean over rows of Pearson(row of Y^s, row of Y^t); intra = the same over columns.
    A batch of one image has constant columns, so intra is then 1 with zero gradient.
    """
    inter = 1.0 - pearson_rows(student_probs, teacher_probs).mean()
    intra = 1.0 - pearson_rows(student_probs.t(), teacher_probs.t()).mean()
    return inter, intra


@register("DIST", "logits", "Huang et al. 2022", {"beta": 1.0, "gamma": 1.0, "T": 1.0, "ce_weight": 1.0})
class DIST(_LogitObjective):
    """DIST: match the relations, not the probabilities (Huang et al., NeurIPS 2022). Notebook 11_methods_tour.

    loss = ce_weight * CE + T^2 * (beta * inter + gamma * intra), with Y = softmax(logits / T) (the paper's
    Sec. 4, code github.com/hunto/DIST_KD). Pearson correlation ignores a positive scale and a shift of each
    row, so the student need not match the teacher's confidence. UNLABELED rows get no CE, like HintonKD.
    """

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, T: float = 1.0, ce_weight: float = 1.0):
        super().__init__()
        self.beta, self.gamma = check_weight("beta", beta, 1.0), check_weight("gamma", gamma, 1.0)
        self.T, self.ce_weight = check_T(T), check_weight("ce_weight", ce_weight, 1.0)

    def forward(self, student_logits, teacher_logits, y):
        """ce_weight * CE on the labelled rows + T^2 (beta inter + gamma intra); the teacher gets no gradient."""
        student_logits = student_logits.float()
        ys = F.softmax(student_logits / self.T, dim=1)
        yt = F.softmax(teacher_logits.detach().float() / self.T, dim=1)
        inter, intra = dist_terms(ys, yt)
        loss = self.T * self.T * (self.beta * inter + self.gamma * intra)
        return loss + self.ce_weight * labelled_cross_entropy(student_logits, y) if self.ce_weight else loss

    def extra_repr(self) -> str:
        return f"beta={self.beta:g}, gamma={self.gamma:g}, T={self.T:g}, ce_weight={self.ce_weight:g}"


# ---------------------------------------------------------------- logit standardisation (Sun et al., CVPR 2024)

def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score each row: drop the logits' offset and scale, keep their relations. Notebook 11_methods_tour.

    (z - mean(z)) / (std(z) + eps) per row, with torch.std's K - 1 denominator and eps as in the authors'
    code (github.com/sunshangquan/logit-standardization-KD).
    """
    logits = logits.float()
    return (logits - logits.mean(1, keepdim=True)) / (logits.std(1, keepdim=True) + eps)


@register("logit standardisation", "logits", "Sun et al. 2024", {"T": 2.0, "alpha": 0.9}, recipe_keys=("alpha",))
class LogitStandardizedKD(_LogitObjective):
    """Hinton's KD on z-scored logits (Sun et al., CVPR 2024, "Logit Standardization in KD"). Notebook 11_methods_tour.

    loss = alpha * T^2 KL(softmax(Z(v) / T) || softmax(Z(z) / T)) + (1 - alpha) * CE(z, y) (the paper's
    Algorithm 1, with the base temperature T). The student need not match the teacher's logit range, only
    its relations: adding a constant to, or scaling by a positive constant, the teacher's logits leaves the
    loss unchanged. UNLABELED rows get no CE, like HintonKD.
    """

    def __init__(self, T: float = 2.0, alpha: float = 0.9):
        super().__init__()
        self.T, self.alpha = check_T(T), check_alpha(alpha)

    def forward(self, student_logits, teacher_logits, y):
        """alpha * KD on standardised logits + (1 - alpha) * CE on the raw logits of the labelled rows."""
        student_logits = student_logits.float()
        soft = kd_term(standardize(student_logits), standardize(teacher_logits.detach()), self.T)
        if self.alpha == 1.0:
            return soft
        return self.alpha * soft + (1.0 - self.alpha) * labelled_cross_entropy(student_logits, y)

    def extra_repr(self) -> str:
        return f"T={self.T:g}, alpha={self.alpha:g}"
