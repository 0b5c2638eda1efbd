"""Teachers and students for MNIST, Fashion-MNIST and CIFAR-10, plus size and latency helpers.

Introduced in notebook 04_distill_mnist (MLPs, TeacherCNN), 05_feature_distillation (CNNStudent,
feature maps) and 06_cifar10_gpu (CifarResNet, CifarStudent). Every model returns logits from
`model(x)` and `(logits, [feature, ...])` from `model(x, return_features=True)`.
"""
from __future__ import annotations

import copy
import io
import statistics
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.config import resolve_device
from kd_lessons.datasets import get

__all__ = ["TeacherCNN", "MLPStudent", "MLPTeacher", "Ensemble", "CNNStudent", "CifarResNet", "CifarStudent",
           "make_student",
           "count_params", "count_macs", "size_on_disk", "measure_latency"]


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU: the building block of every CNN here."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _StagedCNN(nn.Module):
    """Shared forward for CNNs built as stages -> global pool/flatten -> head."""

    stages: nn.ModuleList
    head: nn.Module

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        logits = self.head(x)
        return (logits, features) if return_features else logits


class TeacherCNN(_StagedCNN):
    """MNIST/Fashion-MNIST teacher: three conv stages (28->14, 14->7, 7), strong but quick on a CPU.

    Introduced in notebook 04_distill_mnist. Features: one map per stage, [B, w, 14, 14],
    [B, 2w, 7, 7] and [B, 4w, 7, 7], the spatial sizes of `CNNStudent` so attention maps line up.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 24, dropout: float = 0.2):
        super().__init__()
        if width < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"width={width}, dropout={dropout}: width must be positive, dropout in [0, 1)")
        w = width
        self.stages = nn.ModuleList([
            nn.Sequential(_conv_bn(in_channels, w), nn.MaxPool2d(2)),
            nn.Sequential(_conv_bn(w, w), _conv_bn(w, 2 * w), nn.MaxPool2d(2)),
            nn.Sequential(_conv_bn(2 * w, 2 * w), _conv_bn(2 * w, 4 * w)),
        ])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(4 * w, num_classes))


class CNNStudent(_StagedCNN):
    """Small MNIST CNN with three stages at 14, 7 and 7 px (like TeacherCNN) for hints and attention transfer.

    Introduced in notebook 05_feature_distillation.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 8):
        super().__init__()
        if width < 1:
            raise ValueError(f"width={width}: must be a positive integer")
        self.stages = nn.ModuleList([
            nn.Sequential(_conv_bn(in_channels, width), nn.MaxPool2d(2)),
            nn.Sequential(_conv_bn(width, 2 * width), nn.MaxPool2d(2)),
            _conv_bn(2 * width, 4 * width),
        ])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))


class MLPStudent(nn.Module):
    """Fully connected student of any widths, e.g. Hinton et al.'s 784-800-800-10 or a tiny 30-30.

    Introduced in notebook 04_distill_mnist. Features are the hidden activations (after ReLU).
    """

    def __init__(self, hidden: Sequence[int] = (800, 800), in_features: int = 784,
                 num_classes: int = 10, dropout: float = 0.0, input_dropout: float = 0.0):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden) or in_features < 1 or not (0.0 <= dropout < 1.0 and 0.0 <= input_dropout < 1.0):
            raise ValueError(f"hidden={hidden}, in_features={in_features}, dropout={dropout}, input_dropout="
                             f"{input_dropout}: widths must be positive and dropout rates in [0, 1)")
        self.hidden = hidden
        self.in_features = in_features
        sizes = (in_features, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.input_dropout = nn.Dropout(input_dropout)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects {self.in_features} input features per sample, got "
                             f"{x.shape[1]}; build it with in_features={x.shape[1]}")
        x = self.input_dropout(x)
        features = []
        for layer in self.layers:
            x = self.dropout(F.relu(layer(x)))
            features.append(x)
        logits = self.out(x)
        return (logits, features) if return_features else logits


class MLPTeacher(MLPStudent):
    """Hinton et al.'s (2015) big net: 784-1200-1200-10, dropout on inputs (0.2) and hidden units (0.5).

    Introduced in notebook 07_hinton_2015_reproduction; one member of the course's ensemble teacher
    (notebook 04_distill_mnist). Train it with +-2 pixel jitter (data.random_shift), as the paper did.
    """

    def __init__(self, hidden: Sequence[int] = (1200, 1200), in_features: int = 784, num_classes: int = 10,
                 dropout: float = 0.5, input_dropout: float = 0.2):
        super().__init__(hidden, in_features, num_classes, dropout, input_dropout)


class Ensemble(nn.Module):
    """The mean of several models' logits: Hinton et al.'s 'cumbersome model'. Notebook 04_distill_mnist.

    Averaging logits is a product of the members' distributions (renormalised); the usual
    ensemble teacher in distillation. Its size is the sum of the members' sizes.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) < 1:
            raise ValueError("an Ensemble needs at least one member model, e.g. Ensemble([cnn, mlp])")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if return_features:
            raise ValueError("an Ensemble has no single set of feature maps; use one member for feature "
                             "distillation, e.g. get_teacher(dataset, arch='cnn')")
        return torch.stack([m(x).float() for m in self.members]).mean(0)


class _BasicBlock(nn.Module):
    """ResNet basic block with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c_in, c_out, stride),
                                  nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class CifarResNet(_StagedCNN):
    """ResNet-(6n+2) CIFAR-10 teacher (n=3: ResNet-20) with a width knob; 3 stages at 32, 16, 8 px.

    Introduced in notebook 06_cifar10_gpu.
    """

    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0 or width < 1:
            raise ValueError(f"depth={depth}, width={width}: depth must be 6n+2 (8, 14, 20, 32, 56) "
                             f"and width positive")
        n = (depth - 2) // 6
        self.stem = _conv_bn(in_channels, width)
        stages, c_in = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            blocks = [_BasicBlock(c_in if j == 0 else c_out, c_out, 2 if (i > 0 and j == 0) else 1)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        return super().forward(self.stem(x), return_features)


class CifarStudent(_StagedCNN):
    """Plain 3-stage CIFAR-10 CNN student with maps at 32, 16 and 8 px like `CifarResNet`.

    Introduced in notebook 06_cifar10_gpu.
    """

    def __init__(self, width: int = 16, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if width < 1:
            raise ValueError(f"width={width}: must be a positive integer")
        self.stages = nn.ModuleList([
            _conv_bn(in_channels, width),
            nn.Sequential(nn.MaxPool2d(2), _conv_bn(width, 2 * width)),
            nn.Sequential(nn.MaxPool2d(2), _conv_bn(2 * width, 4 * width)),
        ])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))


def make_student(dataset: str, kind: str = "mlp", width: int = 800) -> nn.Module:
    """A student by kind ("mlp": two hidden layers of `width`, "cnn": small CNN). Notebook 00_start_here."""
    info = get(dataset)
    if width < 1:
        raise ValueError(f"width={width}: must be a positive integer")
    if kind == "mlp":
        return MLPStudent(hidden=(width, width), in_features=info.in_features, num_classes=info.num_classes)
    if kind == "cnn":  # the record names the CNN that fits its images: CNNStudent (28x28) or CifarStudent (32x32)
        cnn = {"CNNStudent": CNNStudent, "CifarStudent": CifarStudent}[info.cnn_student]
        return cnn(in_channels=info.shape[0], num_classes=info.num_classes, width=width)
    raise ValueError(f"kind={kind!r} is not known; use 'mlp' or 'cnn'")


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (weights + biases): the usual 'model size'. Notebook 04_distill_mnist."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass on one input (Linear and Conv2d layers): its compute cost.

    Notebook 04_distill_mnist.
    """
    macs = 0

    def hook(module, inputs, out):
        nonlocal macs
        if isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features * (out.numel() // out.shape[-1])
        else:  # Conv2d: every output value costs (C_in / groups) * kH * kW multiply-adds
            kh, kw = module.kernel_size
            macs += out.numel() * (module.in_channels // module.groups) * kh * kw

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs


def size_on_disk(model: nn.Module) -> int:
    """Bytes of the serialised state_dict (includes BatchNorm buffers). Notebook 04_distill_mnist."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def measure_latency(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1,
                    device: torch.device | str | None = None, repeats: int = 30, warmup: int = 5) -> float:
    """Median milliseconds per forward pass of one batch, the number a deployment cares about.

    Introduced in notebook 04_distill_mnist. Runs a copy of the model in eval mode under
    torch.inference_mode; synchronises CUDA so the time covers the whole computation.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"batch_size={batch_size}, repeats={repeats}, warmup={warmup}: need batch_size, "
                         f"repeats >= 1 and warmup >= 0")
    device = resolve_device(device)
    net = copy.deepcopy(model).to(device).eval()
    x = torch.randn(batch_size, *input_shape, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            net(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
