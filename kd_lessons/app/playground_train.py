"""The Playground tab's training: a cached teacher, and two students from one start (scratch and distilled).

Introduced in notebook 00_start_here (the app tour's first tab). Both students are the same small tanh MLP
with the same initial weights, trained full-batch with Adam for STEPS steps side by side (their weights are
stacked, so one batched step trains both): scratch on the few labels (cross-entropy), distilled on the same
labels plus unlabelled points with alpha * kd_loss(student, teacher, T) + (1 - alpha) * cross-entropy, Hinton's
loss from kd_lessons.losses. Snapshots every EVERY steps let the tab replay the training (step, play, slow).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons import losses, stats
from kd_lessons.app.playground_data import Settings, grid_points, sample

__all__ = ["Teacher", "Run", "train_teacher", "train_students", "five_seeds", "TEACHER_POINTS", "STEPS", "EVERY"]

TEACHER_POINTS, TEACHER_WIDTH, TEACHER_STEPS = 2000, 64, 400
STEPS, EVERY, LR, TEST_POINTS = 75, 3, 0.1, 1000


@dataclass(frozen=True)
class Teacher:
    """The playground's teacher: its net, its training points and its test accuracy."""

    net: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    accuracy: float
    grid_logits: torch.Tensor  # [GRID * GRID, 2] on playground_data.grid_points(), for the pictures

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(x)


def _mlp(width: int, seed: int, depth: int = 2) -> nn.Sequential:
    """A 2-width-...-2 tanh MLP with PyTorch's default init (U(+-1/sqrt(fan_in))) drawn from its own generator.

    Its own generator, not torch.manual_seed: the server's sessions train at once, and a shared global seed
    would let them change each other's starts (a link must open the same picture).
    """
    layers, inputs = [], 2
    for _ in range(depth):
        layers += [nn.utils.skip_init(nn.Linear, inputs, width), nn.Tanh()]  # skip_init: no global draws
        inputs = width
    net = nn.Sequential(*layers, nn.utils.skip_init(nn.Linear, inputs, 2))
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                bound = m.in_features ** -0.5
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.uniform_(-bound, bound, generator=g)
    return net


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


_TEACHERS: dict = {}
_TEACHERS_LOCK = threading.Lock()


def train_teacher(dataset: str, noise: float) -> Teacher:
    """A 2-64-64-2 tanh MLP on TEACHER_POINTS labelled points, trained once per (dataset, noise) in this process."""
    key = (dataset, float(noise))
    with _TEACHERS_LOCK:
        if key in _TEACHERS:
            return _TEACHERS[key]
        x, y = sample(dataset, noise, TEACHER_POINTS, seed=1234)
        x_test, y_test = sample(dataset, noise, TEST_POINTS, seed=4321)
        net = _mlp(TEACHER_WIDTH, seed=1234)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(TEACHER_STEPS):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
        net.eval().requires_grad_(False)
        _TEACHERS[key] = Teacher(net, x, y, _accuracy(net(x_test), y_test), net(grid_points()))
        return _TEACHERS[key]


class _Pair(nn.Module):
    """Two copies of one MLP, weights stacked on a leading dim of 2: copy 0 is scratch, copy 1 distilled."""

    def __init__(self, student: nn.Sequential):
        super().__init__()
        linears = [m for m in student if isinstance(m, nn.Linear)]
        self.w = nn.ParameterList([nn.Parameter(m.weight.detach().T.repeat(2, 1, 1)) for m in linears])
        self.b = nn.ParameterList([nn.Parameter(m.bias.detach().repeat(2, 1, 1)) for m in linears])

    def forward(self, x: torch.Tensor, weights=None) -> torch.Tensor:
        """[2, N, 2] logits of both students for x [N, 2] (or [2, N, 2]); weights: a snapshot to use instead."""
        ws, bs = weights or (list(self.w), list(self.b))
        h = x.expand(2, *x.shape[-2:])
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = torch.baddbmm(b, h, w)
            if i < len(ws) - 1:
                h = torch.tanh(h)
        return h

    def snapshot(self) -> tuple:
        return [w.detach().clone() for w in self.w], [b.detach().clone() for b in self.b]


@dataclass(frozen=True)
class Run:
    """Both students' training at one setting: snapshots, held-out losses and accuracies per snapshot."""

    settings: Settings
    teacher: Teacher
    pair: _Pair
    snapshots: tuple  # (weights, biases) at steps 0, EVERY, 2 EVERY, ..., STEPS
    steps: tuple
    test_loss: tuple  # per snapshot: (scratch, distilled) cross-entropy on the held-out points
    test_accuracy: tuple  # per snapshot: (scratch, distilled)
    x_lab: torch.Tensor
    y_lab: torch.Tensor
    x_unlab: torch.Tensor

    def logits(self, x: torch.Tensor, frame: int = -1) -> torch.Tensor:
        """[2, N, 2]: the scratch and distilled students' logits at a snapshot (default: the last)."""
        with torch.no_grad():
            return self.pair(x, self.snapshots[frame])


def _losses(out: torch.Tensor, y: torch.Tensor, soft_target: torch.Tensor | None, s: Settings) -> torch.Tensor:
    """Scratch's cross-entropy plus the distilled student's Hinton loss (the two copies' gradients stay apart)."""
    n = len(y)
    hard = [F.cross_entropy(out[i, :n], y) if n else out.sum() * 0 for i in (0, 1)]
    if soft_target is None:
        return hard[0] + hard[1]
    kd = losses.kd_term(out[1], soft_target, s.T)  # kd_loss, its inputs checked once in train_students
    return hard[0] + s.alpha * kd + (1 - s.alpha) * hard[1]


def _data(s: Settings, teacher: Teacher):
    x_lab, y_lab = sample(s.dataset, s.noise, s.labels, seed=10 * s.seed + 1)
    x_unlab, _ = sample(s.dataset, s.noise, s.unlabelled, seed=10 * s.seed + 2)
    x_test, y_test = sample(s.dataset, s.noise, TEST_POINTS, seed=10 * s.seed + 3)
    return x_lab, y_lab, x_unlab, x_test, y_test


def train_students(s: Settings, teacher: Teacher) -> Run:
    """Scratch and distilled students from one initialisation (seeded by s.seed) on this setting's data."""
    x_lab, y_lab, x_unlab, x_test, y_test = _data(s, teacher)
    x_all = torch.cat([x_lab, x_unlab])
    soft_target = teacher.logits(x_all) if len(x_all) and s.alpha > 0 else None
    if soft_target is not None:  # the checks once, not per step: kd_term is kd_loss without them
        losses.check_logits(soft_target, soft_target)
        losses.check_T(s.T)
    pair = _Pair(_mlp(s.width, seed=s.seed))
    opt = torch.optim.Adam(pair.parameters(), lr=LR, foreach=True)
    snapshots, steps, test_loss, test_acc = [], [], [], []

    def record(step: int) -> None:
        snapshots.append(pair.snapshot())
        steps.append(step)
        with torch.no_grad():
            out = pair(x_test)
        test_loss.append(tuple(float(F.cross_entropy(out[i], y_test)) for i in (0, 1)))
        test_acc.append(tuple(_accuracy(out[i], y_test) for i in (0, 1)))

    record(0)
    trains = len(x_lab) > 0 or soft_target is not None
    for step in range(1, STEPS + 1):
        if trains:
            opt.zero_grad(set_to_none=True)
            _losses(pair(x_all), y_lab, soft_target, s).backward()
            opt.step()
        if step % EVERY == 0:
            record(step)
    return Run(s, teacher, pair, tuple(snapshots), tuple(steps), tuple(test_loss), tuple(test_acc),
               x_lab, y_lab, x_unlab)


def five_seeds(s: Settings, teacher: Teacher, seeds=(0, 1, 2, 3, 4)) -> dict:
    """The setting on each seed (new labelled, unlabelled and test points, new start): the paired difference.

    Returns {"scratch", "distilled"} test accuracies per seed, "difference": stats.paired(distilled, scratch)
    (the 95% t-interval over seeds) and its stats.verdict.
    """
    import dataclasses

    scratch, distilled = [], []
    for seed in seeds:
        acc = train_students(dataclasses.replace(s, seed=int(seed)), teacher).test_accuracy[-1]
        scratch.append(acc[0])
        distilled.append(acc[1])
    d = stats.paired(distilled, scratch)
    return {"seeds": tuple(seeds), "scratch": scratch, "distilled": distilled, "difference": d,
            "verdict": stats.verdict(d)}
