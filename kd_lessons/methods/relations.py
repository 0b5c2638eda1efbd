"""Relation-based distillation: RKD distance and angle losses (Park et al., CVPR 2019) on top of Hinton's loss.

Introduced in notebook 11_methods_tour. Instead of matching each sample's output, the student matches
the *shape* of the teacher's embedding of a batch: how far apart pairs of samples are (relative to
the batch's mean distance) and the angles that triplets form. Both relations ignore the embedding
width, so a 32-wide student can learn from a 96-wide teacher without a regressor. `RKD` is an
Objective for `train.distill`; `flat_embedding` (one feature map -> [B, D]) is shared with
`kd_lessons.methods.contrastive`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lessons.losses import check_float, check_weight
from kd_lessons.methods.registry import register
from kd_lessons.objectives import HintonKD, Objective

__all__ = ["rkd_distance_loss", "rkd_angle_loss", "RKD", "flat_embedding", "EmbeddingObjective"]


def _check_pair(student_emb, teacher_emb, min_batch: int) -> None:
    """Full checks of two [B, D] embeddings of the same batch (syncs a GPU: standalone calls only)."""
    check_float("student_emb", student_emb, ndim=2)
    check_float("teacher_emb", teacher_emb, ndim=2)
    if len(student_emb) != len(teacher_emb) or len(student_emb) < min_batch:
        raise ValueError(f"student_emb {list(student_emb.shape)} and teacher_emb {list(teacher_emb.shape)} must "
                         f"embed the same batch of at least {min_batch} samples; take both from the same x.")


def _distances(e: torch.Tensor) -> torch.Tensor:
    """[B, B] Euclidean distances ||e_i - e_j||_2; centred Gram form, clamped so sqrt has a finite gradient."""
    e = e - e.mean(0)  # distances ignore translation; centring keeps the Gram form precise
    sq = e.pow(2).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * e @ e.T).clamp_min(1e-12).sqrt()


def _rkd_distance(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RKD-D without checks: Huber between mean-normalised distances, averaged over pairs i != j."""
    n = len(s)
    off = 1.0 - torch.eye(n, device=s.device, dtype=s.dtype)  # a float mask: boolean indexing would sync

    def psi(e):  # psi_D(e_i, e_j) = ||e_i - e_j|| / mu, mu = mean distance over the pairs of the batch
        d = _distances(e) * off
        return d / (d.sum() / (n * (n - 1)))
    huber = F.smooth_l1_loss(psi(s), psi(t.detach()), reduction="none", beta=1.0)
    return (huber * off).sum() / (n * (n - 1))


def _angles(e: torch.Tensor) -> torch.Tensor:
    """[B, B, B] cosines: [j, i, k] = <u_ij, u_kj>, u_ij = (e_i - e_j) / ||e_i - e_j|| (the angle at e_j)."""
    u = F.normalize(e[None, :, :] - e[:, None, :], dim=2)  # u[j, i] = unit vector from e_j to e_i
    return u @ u.transpose(1, 2)


def _rkd_angle(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RKD-A without checks: Huber between triplet cosines, averaged over triplets of distinct samples."""
    n = len(s)
    eye = torch.eye(n, device=s.device, dtype=s.dtype)
    distinct = (1 - eye)[:, :, None] * (1 - eye)[:, None, :] * (1 - eye)[None, :, :]  # j != i, j != k, i != k
    huber = F.smooth_l1_loss(_angles(s), _angles(t.detach()), reduction="none", beta=1.0)
    return (huber * distinct).sum() / (n * (n - 1) * (n - 2))


def rkd_distance_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """RKD-D: match pairwise distances, each normalised by its batch mean. Notebook 08_interview_questions.

    Park et al. (CVPR 2019), distance-wise loss: psi_D(e_i, e_j) = ||e_i - e_j||_2 / mu with mu the mean distance
    over the pairs i != j of the batch; loss = mean over pairs of Huber(psi_D(s), psi_D(t)) (smooth L1,
    delta = 1). [B, D_s] and [B, D_t] embeddings (widths may differ), B >= 2; the teacher is detached.
    The authors' code averages over all B^2 entries (diagonal included): (B - 1) / B times this.
    """
    _check_pair(student_emb, teacher_emb, 2)
    return _rkd_distance(student_emb.float(), teacher_emb.float())


def rkd_angle_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """RKD-A: match the angles that triplets of samples form (the RKD objective of lesson 11 uses it).

    Park et al. (CVPR 2019), angle-wise loss: psi_A(e_i, e_j, e_k) = <u_ij, u_kj>, u_ij = (e_i - e_j) / ||e_i - e_j||;
    loss = mean over triplets of distinct samples of Huber(psi_A(s), psi_A(t)). B >= 3; teacher detached.
    Memory grows as B^2 * D (the unit difference vectors) and B^3 (the cosines).
    """
    _check_pair(student_emb, teacher_emb, 3)
    return _rkd_angle(student_emb.float(), teacher_emb.float())


def flat_embedding(features, layer: int, who: str = "features") -> torch.Tensor:
    """One feature map as a float32 [B, D] embedding (4-D maps are global-average-pooled). Notebook 11_methods_tour."""
    if not isinstance(features, (list, tuple)) or not -len(features) <= layer < len(features):
        n = len(features) if isinstance(features, (list, tuple)) else "no list of"
        raise ValueError(f"layer={layer} but {who} has {n} feature maps; pick an index in range (-1 = last), and "
                         "pass (logits, [features]) from model(x, return_features=True).")
    f = features[layer]
    if not isinstance(f, torch.Tensor) or f.dim() not in (2, 4):
        raise ValueError(f"{who}[{layer}] must be a [B, D] or [B, C, H, W] tensor, got "
                         f"{list(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}.")
    return (f.mean(dim=(2, 3)) if f.dim() == 4 else f).float()


class EmbeddingObjective(Objective):
    """HintonKD on the logits plus a term on one layer's embeddings; the shared plumbing of RKD and CRD.

    Features are fully checked (NaN included, one GPU sync) on the first batch after `check`, and
    only by shape afterwards. Subclasses set `self.response` and `self.layer`.
    """

    uses_features = True
    _full_check = True

    def check(self, student_logits, teacher_logits, y) -> None:
        """The response checks (UNLABELED rows allowed); the next forward also checks the features."""
        self.response.check(student_logits, teacher_logits, y)
        self._full_check = True

    def embeddings(self, student_out, teacher_out):
        """((s_logits, s_emb), (t_logits, t_emb)) with [B, D] float32 embeddings of the same batch."""
        if not (isinstance(student_out, (tuple, list)) and isinstance(teacher_out, (tuple, list))
                and len(student_out) == 2 and len(teacher_out) == 2):
            raise ValueError(f"{type(self).__name__} needs (logits, [features]) from both models: call "
                             "model(x, return_features=True) (train.distill does, as uses_features is True).")
        s = flat_embedding(student_out[1], self.layer, "student features")
        t = flat_embedding(teacher_out[1], self.layer, "teacher features")
        if len(s) != len(t) or len(s) != len(student_out[0]):
            raise ValueError(f"student embedding {list(s.shape)}, teacher embedding {list(t.shape)} and student "
                             f"logits {list(student_out[0].shape)} must share the batch size; use the same x.")
        if self._full_check:
            _check_pair(s, t, 1)
            self._full_check = False
        return (student_out[0], s), (teacher_out[0], t)


@register("KD + RKD", "relations", "Park et al. 2019",
          {"T": 4.0, "alpha": 0.9, "distance_weight": 25.0, "angle_weight": 50.0}, recipe_keys=("T", "alpha"))
class RKD(EmbeddingObjective):
    """HintonKD(T, alpha) + distance_weight * RKD-D + angle_weight * RKD-A on one layer. Notebook 11_methods_tour.

    Park et al. (CVPR 2019), with the weights 25 and 50 of RepDistiller's CIFAR-100 runs.
    The embedding is feature map `layer`, flattened (global-average-pooled when [B, C, H, W]). A batch
    too small for a relation (B < 2 distances, B < 3 angles: a last partial batch) adds 0 for it.
    `last` holds the latest unweighted terms as detached tensors (no host sync).
    """

    def __init__(self, T: float = 4.0, alpha: float = 0.9, distance_weight: float = 25.0,
                 angle_weight: float = 50.0, layer: int = -1):
        super().__init__()
        self.response = HintonKD(T, alpha)
        self.distance_weight = check_weight("distance_weight", distance_weight, 25.0)
        self.angle_weight = check_weight("angle_weight", angle_weight, 50.0)
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"layer={layer!r}: pass the index of a feature map, e.g. layer=-1 (the last).")
        self.layer = layer
        self.last: dict[str, torch.Tensor] = {}

    def forward(self, student_out, teacher_out, y):
        """Response KD on the logits plus the weighted relation terms, in float32 (autocast off)."""
        (s_logits, s), (t_logits, t) = self.embeddings(student_out, teacher_out)
        loss = self.response(s_logits, t_logits, y)
        with torch.autocast(s.device.type, enabled=False):
            if self.distance_weight > 0 and len(s) >= 2:
                self.last["distance"] = d = _rkd_distance(s, t)
                loss = loss + self.distance_weight * d
            if self.angle_weight > 0 and len(s) >= 3:
                self.last["angle"] = a = _rkd_angle(s, t)
                loss = loss + self.angle_weight * a
        self.last = {k: v.detach() for k, v in self.last.items()}
        return loss

    def extra_repr(self) -> str:
        return (f"T={self.response.T:g}, alpha={self.response.alpha:g}, distance_weight={self.distance_weight:g}, "
                f"angle_weight={self.angle_weight:g}, layer={self.layer}")
