"""Data-free distillation: the teacher is the only source of data (DeepInversion, Yin et al., CVPR 2020).

Introduced in notebook 12_data_free_kd. A trained teacher with BatchNorm remembers, in every BN
layer, the mean and variance of its input channels over the training set. DeepInversion optimises a
batch of inputs (starting from noise) so that (1) every BN layer sees those running statistics in
the batch, (2) the teacher assigns each input its wanted class (cross-entropy) and (3) the images are
smooth and bounded (total variation and L2 priors, random jitter, valid pixel range). The result is a
synthetic transfer set on which a student is then distilled as usual (`kd_lessons.runs.synthetic_sets`).
"""
from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kd_lessons.config import resolve_device

__all__ = ["bn_statistics_loss", "BNStatistics", "bn_loss_per_layer", "total_variation", "SynthesisOptions",
           "synthesize",
           "gaussian_noise_like"]


def _check_bn_inputs(x, running_mean, running_var) -> None:
    """x is [N, C, H, W] (or [N, C]) and the running statistics have one value per channel."""
    if not torch.is_tensor(x) or x.dim() not in (2, 4):
        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x must be a BatchNorm input [N, C, H, W] or [N, C], got {got}")
    if x.shape[0] * (x[0, 0].numel()) < 2:
        raise ValueError(f"x {tuple(x.shape)} has fewer than 2 values per channel: the batch statistics need a "
                         "batch of several images (e.g. 64)")
    for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
        if not torch.is_tensor(stat) or stat.shape != (x.shape[1],):
            got = tuple(stat.shape) if torch.is_tensor(stat) else type(stat).__name__
            raise ValueError(f"{name} must have one value per channel, shape ({x.shape[1]},), got {got}; pass the "
                             "BN layer's buffers (bn.running_mean, bn.running_var)")


def bn_statistics_loss(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor) -> torch.Tensor:
    """||mu(x) - running_mean||_2 + ||sigma^2(x) - running_var||_2 for one BN layer. Notebook 12_data_free_kd.

    mu and sigma^2 are the batch's per-channel mean and biased variance over every dimension except the
    channels (N, H, W), as BatchNorm normalises with them in training mode; the norms are plain (not squared)
    Euclidean norms over channels, as in DeepInversion's feature-distribution regulariser. (BatchNorm's
    running_var is an average of the *unbiased* batch variances, n/(n-1) times the biased one: for the
    thousands of values per channel of an image batch, a difference below 0.1%.)
    """
    _check_bn_inputs(x, running_mean, running_var)
    dims = [0] if x.dim() == 2 else [0, 2, 3]
    mean = x.mean(dim=dims)
    var = x.var(dim=dims, unbiased=False)
    return torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)


class BNStatistics(contextlib.AbstractContextManager):
    """Forward hooks on every BatchNorm2d of a model that record each layer's statistics loss; removed on exit.

    Introduced in notebook 12_data_free_kd. Inside `with BNStatistics(teacher) as bn:`, each forward
    pass fills `bn.losses` (one scalar per BN layer, in order); `bn.total(first_weight)` sums them
    with the first layer weighted `first_weight` times (DeepInversion weights the first layer up).
    """

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no BatchNorm2d layer, so there are no stored statistics "
                             "to match; use a teacher with BatchNorm (e.g. get_teacher('mnist', arch='cnn'))")
        self.losses: list[torch.Tensor] = []
        self._handles: list = []

    def _hook(self, module, inputs, output) -> None:
        self.losses.append(bn_statistics_loss(inputs[0].float(), module.running_mean.float(),
                                              module.running_var.float()))

    def __enter__(self) -> "BNStatistics":
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def total(self, first_weight: float = 1.0) -> torch.Tensor:
        """The statistics loss of the last forward pass, summed over layers (then cleared)."""
        if not self.losses:
            raise ValueError("no BN statistics recorded: run the model forward inside the `with` block first")
        losses, self.losses = self.losses, []
        return first_weight * losses[0] + sum(losses[1:], torch.zeros((), device=losses[0].device))


@torch.no_grad()
def bn_loss_per_layer(teacher: nn.Module, x: torch.Tensor, batch_size: int = 256) -> list[float]:
    """The BN-statistics loss of each BatchNorm layer on batches of x, averaged: how 'real' x looks to the teacher.

    Introduced in notebook 12_data_free_kd. Small for the kind of data the teacher was trained on, large for
    noise: the running statistics are a summary of the training set. The teacher is left in its mode.
    """
    if not torch.is_tensor(x) or x.dim() != 4 or len(x) < 2:
        got = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"x must be a batch of at least 2 images [N, C, H, W], got {got}")
    was_training = teacher.training
    device = next(teacher.parameters()).device
    teacher.eval()
    sums, batches = None, 0
    try:
        with BNStatistics(teacher) as bn:
            for start in range(0, len(x) - 1, batch_size):
                teacher(x[start:start + batch_size].to(device))
                values = [float(v) for v in bn.losses]
                bn.losses = []
                sums = values if sums is None else [a + b for a, b in zip(sums, values)]
                batches += 1
    finally:
        teacher.train(was_training)
    return [v / batches for v in sums]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels: small for smooth images. Notebook 12_data_free_kd."""
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ValueError(f"x must be a batch of images [N, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass(frozen=True)
class SynthesisOptions:
    """DeepInversion's knobs; the defaults are the ones notebook 12_data_free_kd measured best here.

    bn_weight scales the BN statistics loss (first layer x first_bn_weight), tv_weight/l2_weight the
    image priors, jitter the random shift (pixels) applied before each teacher pass; pixel values are
    kept in [low, high] (the normalised range of real images) after each Adam step.
    """

    steps: int = 200
    lr: float = 0.1
    batch_size: int = 256
    bn_weight: float = 1.0
    first_bn_weight: float = 10.0
    tv_weight: float = 1e-3
    l2_weight: float = 1e-5
    jitter: int = 2
    low: float = -0.4242
    high: float = 2.8215

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: pass a positive integer, e.g. steps=200, batch_size=256")
        for name in ("lr", "bn_weight", "first_bn_weight", "tv_weight", "l2_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0 or math.isinf(value):
                raise ValueError(f"{name}={value!r}: pass a finite number >= 0")
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, int) or self.jitter < 0:
            raise ValueError(f"jitter={self.jitter!r}: pass a number of pixels >= 0, e.g. 2")
        if not self.low < self.high:
            raise ValueError(f"low={self.low}, high={self.high}: the pixel range needs low < high")

    def as_dict(self) -> dict:
        return asdict(self)


def _check_classes(y, num_classes: int) -> torch.Tensor:
    if not torch.is_tensor(y) or y.dim() != 1 or len(y) == 0 or y.dtype != torch.int64:
        got = f"{y.dtype} {tuple(y.shape)}" if torch.is_tensor(y) else type(y).__name__
        raise ValueError(f"y (the wanted classes) must be a non-empty 1-d int64 tensor, got {got}; e.g. "
                         "torch.arange(n) % 10")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"wanted classes must lie in [0, {num_classes - 1}], got {int(y.min())}..{int(y.max())}")
    return y


def _jitter(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Roll the whole batch by a random offset (DeepInversion's jitter): invariance the teacher should have."""
    if pixels == 0:
        return x
    dy, dx = (int(v) for v in torch.randint(-pixels, pixels + 1, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def synthesize(teacher: nn.Module, y: torch.Tensor, input_shape=(1, 28, 28), options: SynthesisOptions | None = None,
               seed: int = 0, device=None, progress: bool = True, snapshots=()) -> dict:
    """DeepInversion: optimise one input per wanted class in y until the teacher's BN layers see their stored
    statistics. Notebook 12_data_free_kd.

    Returns {"x": images [len(y), *input_shape] on the CPU, "y": y, "history": per-step mean losses
    ("bn", "ce", "accuracy" of the teacher on the wanted classes), "snapshots": {step: images}}. The
    teacher is used in eval mode (its running statistics are the target, never updated) and is left on its
    device and in its mode; its BN hooks are removed on return.
    """
    opts = options or SynthesisOptions()
    if not isinstance(opts, SynthesisOptions):
        raise ValueError(f"options must be a SynthesisOptions, got {type(opts).__name__}")
    if not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher must be an nn.Module with BatchNorm layers, got {type(teacher).__name__}")
    device = resolve_device(device)
    head = [m for m in teacher.modules() if isinstance(m, nn.Linear)]
    y = _check_classes(y, head[-1].out_features if head else 10**9)
    snapshots = sorted({int(s) for s in snapshots if 0 < int(s) <= opts.steps})
    generator = torch.Generator().manual_seed(seed)
    home = next(teacher.parameters()).device
    was_training = teacher.training
    requires = [p.requires_grad for p in teacher.parameters()]
    keys = ("bn", "ce", "tv", "accuracy")
    history = {k: [0.0] * opts.steps for k in keys}
    out, snaps = [], {s: [] for s in snapshots}
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    batches = [y[i:i + opts.batch_size] for i in range(0, len(y), opts.batch_size)]
    bar = tqdm(total=len(batches) * opts.steps, desc="DeepInversion", disable=not progress, leave=False)
    try:
        with BNStatistics(teacher) as bn:
            for yb in batches:
                yb_dev = yb.to(device)
                x = torch.randn(len(yb), *input_shape, generator=generator).to(device).requires_grad_(True)
                opt = torch.optim.Adam([x], lr=opts.lr, betas=(0.5, 0.9))
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, opts.steps)
                for step in range(1, opts.steps + 1):
                    logits = teacher(_jitter(x, opts.jitter, generator))
                    bn_loss = bn.total(opts.first_bn_weight)
                    ce = F.cross_entropy(logits, yb_dev)
                    tv = total_variation(x)
                    loss = ce + opts.bn_weight * bn_loss + opts.tv_weight * tv + opts.l2_weight * x.pow(2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    with torch.no_grad():
                        x.clamp_(opts.low, opts.high)
                    w = len(yb) / len(y)
                    for k, v in (("bn", bn_loss), ("ce", ce), ("tv", tv),
                                 ("accuracy", (logits.argmax(1) == yb_dev).float().mean())):
                        history[k][step - 1] += w * float(v.detach())
                    if step in snaps:
                        snaps[step].append(x.detach().cpu().clone())
                    bar.update(1)
                out.append(x.detach().cpu())
    finally:
        bar.close()
        for p, r in zip(teacher.parameters(), requires):
            p.requires_grad_(r)
        teacher.to(home).train(was_training)
    return {"x": torch.cat(out), "y": y.clone(), "history": history,
            "snapshots": {s: torch.cat(v) for s, v in snaps.items()}}


def gaussian_noise_like(n: int, input_shape=(1, 28, 28), seed: int = 0) -> torch.Tensor:
    """n images of standard Gaussian noise: the lower bound a transfer set must beat. Notebook 12_data_free_kd."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: pass a positive number of images")
    return torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(seed))
