"""DINO self-distillation (Caron et al., 2021): a student matches an EMA teacher of itself, centred and sharpened.

Lesson 18. No labels: the student sees every view of an image (global and local crops), the teacher, an
exponential moving average of the student, sees the global views only, and the student learns the teacher's
softmax over K prototypes by cross-entropy. Two tricks stop the trivial solutions: centering (subtract an EMA of the
teacher's batch-mean logits before its softmax) stops one prototype from winning for every image, and sharpening
(a teacher temperature below the student's) stops the uniform answer. `DINO(centering=False)` and
`DINO(sharpening=False)` switch each off; `diagnostics` measures the paper's collapse signs each step: the teacher
output's entropy (log K = uniform, 0 = one prototype) and the KL between teacher and student.
Augmentations (`multi_crop`) for 28x28 MNIST: 2 global crops of 60-100% of the area resized to 28x28 and
`n_local` local crops of 20-50% resized to 14x14, each at a random position inside the image (so a shift of up to
40% of the side for a global crop), plus Gaussian pixel noise of std `noise` (normalised units); no flips.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Backbone", "DINOHead", "DINONet", "multi_crop", "teacher_targets", "dino_loss", "update_center",
           "check_momentum", "ema_update", "momentum_at", "diagnostics", "DINO"]


class Backbone(nn.Module):
    """A small conv net, any input size -> [B, dim]: a 3x3 grid of pooled features keeps where strokes are.

    Lesson 18. BatchNorm as in the paper's ResNet backbones (norm=False drops it).
    """

    def __init__(self, width: int = 16, in_channels: int = 1, dim: int = 64, norm: bool = True):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1 or dim < 1:
            raise ValueError(f"width={width!r}, dim={dim!r}: pass positive ints such as width=16, dim=64")
        w = width

        def bn(c, two_d=True):
            return (nn.BatchNorm2d(c) if two_d else nn.BatchNorm1d(c)) if norm else nn.Identity()
        self.net = nn.Sequential(nn.Conv2d(in_channels, w, 3, stride=2, padding=1), bn(w), nn.GELU(),
                                 nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), bn(2 * w), nn.GELU(),
                                 nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(18 * w, dim), bn(dim, False),
                                 nn.GELU())
        self.width, self.dim = w, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DINOHead(nn.Module):
    """DINO's projection head: MLP -> L2-normalised bottleneck -> cosine to K unit-norm prototypes (Lesson 18)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int = 128, bottleneck: int = 32):
        super().__init__()
        if min(in_dim, out_dim, hidden, bottleneck) < 1:
            raise ValueError(f"in_dim={in_dim}, out_dim={out_dim}, hidden={hidden}, bottleneck={bottleneck}: "
                             "all must be positive (out_dim is K, the number of prototypes)")
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck) / math.sqrt(bottleneck))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(h), dim=-1)
        return z @ F.normalize(self.prototypes, dim=-1).T  # in [-1, 1]; the temperatures scale it


class DINONet(nn.Module):
    """Backbone + DINOHead: `net(x)` gives [B, K] prototype scores, `net.features(x)` the backbone's [B, D]."""

    def __init__(self, width: int = 16, out_dim: int = 128, in_channels: int = 1):
        super().__init__()
        self.backbone = Backbone(width, in_channels)
        self.head = DINOHead(self.backbone.dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def _crops(x: torch.Tensor, n: int, scale: tuple[float, float], size: int, generator) -> list[torch.Tensor]:
    """n random resized crops per image (area fraction in `scale`, inside the image), bilinear, batched."""
    out, b = [], len(x)
    for _ in range(n):
        area = torch.empty(b).uniform_(*scale, generator=generator)
        s = area.sqrt()  # side fraction; the crop's centre may move by up to (1 - s) of the half-side
        tx, ty = ((torch.rand(b, generator=generator) * 2 - 1) * (1 - s) for _ in range(2))
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = s, s, tx, ty
        grid = F.affine_grid(theta.to(x.device), [b, x.shape[1], size, size], align_corners=False)
        out.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False))
    return out


def multi_crop(x: torch.Tensor, generator: torch.Generator | None = None, n_local: int = 2, noise: float = 0.2,
               global_scale=(0.6, 1.0), local_scale=(0.2, 0.5), local_size: int = 14) -> list[torch.Tensor]:
    """[2 global views at full size, n_local local views at local_size], each with pixel noise. Lesson 18."""
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ValueError(f"multi_crop expects images [B, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")
    if n_local < 0 or noise < 0:
        raise ValueError(f"n_local={n_local}, noise={noise}: both must be >= 0")
    views = _crops(x, 2, global_scale, x.shape[-1], generator) + _crops(x, n_local, local_scale, local_size, generator)
    if noise:
        views = [v + noise * torch.randn(v.shape, generator=generator).to(v.device) for v in views]
    return views


def teacher_targets(teacher_logits: torch.Tensor, center: torch.Tensor, tau_t: float) -> torch.Tensor:
    """softmax((teacher - center) / tau_t), detached: centering before the softmax, then sharpening. Lesson 18."""
    return F.softmax((teacher_logits.detach() - center.detach()) / tau_t, dim=-1)


def _pairs(n_teacher: int, n_student: int):
    return [(i, j) for i in range(n_teacher) for j in range(n_student) if i != j]


def dino_loss(student_logits, teacher_logits, center: torch.Tensor, tau_s: float, tau_t: float) -> torch.Tensor:
    """Mean over (teacher global view i, student view j != i) of H(P_t,i, P_s,j) averaged over the batch. Lesson 18.

    Lists of [B, K] scores; the student's first views are the same global crops the teacher saw, in the same order.
    """
    if not student_logits or not teacher_logits or len(student_logits) < len(teacher_logits):
        raise ValueError(f"{len(teacher_logits)} teacher and {len(student_logits)} student views: the student must "
                         "see every view the teacher sees (its first ones), and at least one more")
    targets = [teacher_targets(t, center, tau_t) for t in teacher_logits]
    log_ps = [F.log_softmax(s / tau_s, dim=-1) for s in student_logits]
    terms = [-(targets[i] * log_ps[j]).sum(-1).mean() for i, j in _pairs(len(targets), len(log_ps))]
    return torch.stack(terms).mean()


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits, m: float) -> torch.Tensor:
    """center <- m * center + (1 - m) * batch mean of the teacher's scores (all its views), no gradient. Lesson 18."""
    batch = torch.cat(list(teacher_logits)) if isinstance(teacher_logits, (list, tuple)) else teacher_logits
    return m * center + (1 - m) * batch.detach().mean(0)


def check_momentum(m, what: str = "momentum") -> float:
    """m as a float in [0, 1), else ValueError: 1 would freeze the teacher, > 1 or < 0 diverge. Lesson 18."""
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < 1:
        raise ValueError(f"{what}={m!r}: an EMA momentum must be a number in [0, 1) (DINO uses 0.996 for the "
                         "teacher, 0.9 for the center); 1 would never update it")
    return float(m)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, m: float) -> None:
    """t <- m t + (1 - m) s for every parameter and float buffer (others copied), in place, no grad. Lesson 18."""
    m = check_momentum(m)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(m).add_(s.detach(), alpha=1 - m)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.is_floating_point():
            t.mul_(m).add_(s, alpha=1 - m)
        else:
            t.copy_(s)


def momentum_at(step: int, steps: int, base: float) -> float:
    """DINO's cosine schedule of the teacher momentum, from base at step 0 towards 1 at the end. Lesson 18."""
    base = check_momentum(base)
    return 1 - (1 - base) * (math.cos(math.pi * min(step, steps) / max(steps, 1)) + 1) / 2


@torch.no_grad()
def diagnostics(student_logits, teacher_logits, center, tau_s: float, tau_t: float) -> dict:
    """The paper's collapse signs: teacher entropy (per image; and of its batch mean) and KL(P_t || P_s). Lesson 18.

    Over the loss's pairs, cross-entropy = entropy + KL, so loss = "entropy" + "kl" exactly.
    """
    targets = [teacher_targets(t, center, tau_t) for t in teacher_logits]
    log_ps = [F.log_softmax(s / tau_s, dim=-1) for s in student_logits]
    log_pt = [torch.log(p.clamp_min(1e-30)) for p in targets]
    ent = [-(p * lp).sum(-1).mean() for p, lp in zip(targets, log_pt)]
    pairs = _pairs(len(targets), len(log_ps))
    ent_pairs = torch.stack([ent[i] for i, _ in pairs]).mean()
    kl = torch.stack([(targets[i] * (log_pt[i] - log_ps[j])).sum(-1).mean() for i, j in pairs]).mean()
    mean_p = torch.cat(targets).mean(0)
    batch_ent = -(mean_p * torch.log(mean_p.clamp_min(1e-30))).sum()
    return {"entropy": float(ent_pairs), "kl": float(kl), "batch_entropy": float(batch_ent)}


class DINO(nn.Module):
    """Student, EMA teacher (a frozen deep copy) and center: `loss, diag = dino(views)`, then `dino.update(m)`.

    Lesson 18. Defaults are the paper's: tau_s = 0.1, tau_t = 0.04, center momentum 0.9. sharpening=False sets
    tau_t = tau_s; centering=False keeps the center at 0. `forward` updates the center from this batch after the
    loss is computed with the previous one, as the paper's code does.
    """

    def __init__(self, student: nn.Module, tau_s: float = 0.1, tau_t: float = 0.04, center_momentum: float = 0.9,
                 centering: bool = True, sharpening: bool = True, in_shape=(1, 28, 28)):
        super().__init__()
        if not (tau_s > 0 and tau_t > 0):
            raise ValueError(f"tau_s={tau_s}, tau_t={tau_t}: temperatures must be > 0 (DINO: 0.1 and 0.04)")
        self.student, self.teacher = student, copy.deepcopy(student)
        self.teacher.requires_grad_(False)
        self.tau_s, self.tau_t = float(tau_s), float(tau_t if sharpening else tau_s)
        self.center_momentum = check_momentum(center_momentum, "center_momentum")
        self.centering, self.sharpening = bool(centering), bool(sharpening)
        device = next(student.parameters()).device
        was = student.training
        with torch.no_grad():
            k = student.eval()(torch.zeros(2, *in_shape, device=device)).shape[-1]
        student.train(was)
        self.register_buffer("center", torch.zeros(k, device=device))

    def forward(self, views):
        """(loss, diagnostics dict) for a list of views (two global ones first); updates the center."""
        with torch.no_grad():
            t_out = [self.teacher(v) for v in views[:2]]
        s_out = [self.student(v) for v in views]
        loss = dino_loss(s_out, t_out, self.center, self.tau_s, self.tau_t)
        diag = {"loss": float(loss.detach()), **diagnostics(s_out, t_out, self.center, self.tau_s, self.tau_t)}
        if self.centering:
            self.center.copy_(update_center(self.center, t_out, self.center_momentum))
        return loss, diag

    def update(self, m: float) -> None:
        """The teacher's EMA step after the student's optimiser step."""
        ema_update(self.teacher, self.student, m)
