"""The KL-direction toy: a one-Gaussian student fitted to a two-mode teacher, on a 1-D grid, no data.

Introduced in notebook 10_generative_kd (and the app's "Generative KD: KL direction" tab). A student that
cannot represent the teacher (one bump against two) has to compromise, and the divergence decides how:
forward KL spreads over both modes (mode-covering), reverse KL settles on one (mode-seeking), and GKD's
generalized JSD(beta) sits between. Both distributions are softmaxes over the same grid, exactly as a
language model's next-token distribution is a softmax over its vocabulary.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import torch

from kd_lessons.generative import divergences
from kd_lessons.losses import _real, entropy

__all__ = ["ToyFit", "METHODS", "toy_grid", "teacher_logits", "student_logits", "fit_student", "beta_sweep"]

METHODS = ("forward", "reverse", "jsd")
LOW, HIGH, POINTS = -6.0, 6.0, 200


@dataclass(frozen=True)
class ToyFit:
    """One fitted student and what it looks like next to the teacher (numbers in nats and grid units)."""
    method: str
    beta: float
    separation: float
    x: np.ndarray                 # the grid [POINTS]
    teacher_probs: np.ndarray     # [POINTS], sums to 1
    student_probs: np.ndarray     # [POINTS], sums to 1
    mean: float                   # student mean on the grid (the teacher's centre is 0)
    std: float                    # student standard deviation
    mass_between: float           # student mass in the middle half of the gap between the modes
    mass_near: tuple[float, float]  # student mass within 2 teacher widths of the left / right mode
    entropy: float                # student entropy (nats)
    teacher_mass_between: float
    teacher_mass_near: tuple[float, float]  # teacher mass in the same windows (overlapping if separation < 4 widths)
    teacher_entropy: float
    divergence: float             # final value of the fitted divergence (the best of the three starts)
    optima: tuple                 # (mean, std, divergence) reached from each start: left mode, centre, right mode
    steps: int
    seconds: float                # fit time (first call; later calls come from the cache)


def toy_grid() -> torch.Tensor:
    """The shared 1-D 'vocabulary': POINTS evenly spaced positions in [LOW, HIGH]. Notebook 10_generative_kd."""
    return torch.linspace(LOW, HIGH, POINTS, dtype=torch.float64)


def _check(separation, width, left_weight) -> tuple[float, float, float]:
    separation = _real("separation", separation, "pass the distance between the teacher's modes, e.g. 4.0")
    width = _real("width", width, "pass the width of each teacher mode, e.g. 0.6")
    left_weight = _real("left_weight", left_weight, "pass the left mode's share of the mass, e.g. 0.6")
    if not 0.0 <= separation <= 8.0:
        raise ValueError(f"separation must lie in [0, 8] (the grid spans [{LOW}, {HIGH}]), got {separation!r}.")
    if not 0.2 <= width <= 3.0:
        raise ValueError(f"width must lie in [0.2, 3] (the grid step is {(HIGH - LOW) / (POINTS - 1):.3f}), "
                         f"got {width!r}.")
    if not 0.0 < left_weight < 1.0:
        raise ValueError(f"left_weight must lie strictly between 0 and 1 (both modes exist), got {left_weight!r}.")
    return separation, width, left_weight


def teacher_logits(separation=4.0, width=0.6, left_weight=0.6) -> torch.Tensor:
    """Log-probs of a two-bump teacher (modes at -separation/2 and +separation/2). Notebook 10_generative_kd."""
    separation, width, left_weight = _check(separation, width, left_weight)
    x = toy_grid()
    bumps = torch.stack([-(x + separation / 2) ** 2, -(x - separation / 2) ** 2]) / (2 * width ** 2)
    weights = torch.tensor([left_weight, 1.0 - left_weight], dtype=x.dtype).log()[:, None]
    return torch.logsumexp(bumps + weights, dim=0).log_softmax(dim=-1)


def student_logits(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """A one-bump student: a Gaussian's log-density on the grid (softmax normalises). Notebook 10_generative_kd."""
    return -(toy_grid() - mean) ** 2 / (2 * torch.exp(2 * log_std))


def _loss(method: str, beta: float, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-row divergence [rows] between student and teacher rows."""
    if method == "forward":
        return divergences.forward_kl(student, teacher, reduction="none")
    if method == "reverse":
        return divergences.reverse_kl(student, teacher, reduction="none")
    # divided by beta (1 - beta): same minimiser, steady step size, and the two KLs at the ends
    return divergences.generalized_jsd(student, teacher, beta, reduction="none", scaled=True)


def fit_student(method: str = "jsd", beta=0.5, separation=4.0, width=0.6, left_weight=0.6,
                steps: int = 150, lr: float = 0.2) -> ToyFit:
    """Fit the one-bump student to the two-bump teacher by gradient descent (Adam). Notebook 10_generative_kd.

    method "forward" = KL(teacher || student), "reverse" = KL(student || teacher), "jsd" = GKD's
    generalized JSD(beta), divided by beta (1 - beta) so that beta = 0 is forward and beta = 1 reverse KL
    (the scale does not move the minimiser). Three starts (std 1 at the left mode, near the centre, at the
    right mode) run side by side and the lowest divergence wins: reverse KL has local optima (from the
    centre it stays spread out), so one start would show the optimiser, not the divergence. Cached.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    beta = divergences.check_beta(beta) if method == "jsd" else {"forward": 0.0, "reverse": 1.0}[method]
    separation, width, left_weight = _check(separation, width, left_weight)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}; the default 150 fits in well under a second.")
    return _fit(method, round(beta, 6), round(separation, 6), round(width, 6), round(left_weight, 6), steps,
                float(lr))


@functools.lru_cache(maxsize=512)
def _fit(method, beta, separation, width, left_weight, steps, lr) -> ToyFit:
    start = time.perf_counter()
    starts = torch.tensor([-separation / 2, 0.1, separation / 2], dtype=torch.float64)
    teacher = teacher_logits(separation, width, left_weight).expand(len(starts), POINTS)
    mean = starts.clone().requires_grad_(True)  # three independent fits in one batch (Adam is per element)
    log_std = torch.zeros_like(starts, requires_grad=True)  # std 1
    optimizer = torch.optim.Adam([mean, log_std], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        _loss(method, beta, student_logits(mean[:, None], log_std[:, None]), teacher).sum().backward()
        optimizer.step()
    with torch.no_grad():
        student = student_logits(mean[:, None], log_std[:, None])
        values = _loss(method, beta, student, teacher)
        best = int(values.argmin())
        q, p = student[best].softmax(-1).numpy(), teacher[0].softmax(-1).numpy()
    optima = tuple((float(m), float(s), float(v)) for m, s, v in zip(mean.detach(), log_std.detach().exp(), values))
    return ToyFit(method=method, beta=beta, separation=separation, divergence=float(values[best]), optima=optima,
                  steps=steps, seconds=time.perf_counter() - start, **_shape(q, p, separation, width))


def _shape(q: np.ndarray, p: np.ndarray, separation: float, width: float) -> dict:
    """What ToyFit measures of the student q and the teacher p on the grid: mean, std, masses, entropies."""
    x = toy_grid().numpy()
    mean = float((q * x).sum())
    between = np.abs(x) < separation / 4
    near = [np.abs(x - c) < 2 * width for c in (-separation / 2, separation / 2)]
    return dict(x=x, teacher_probs=p, student_probs=q, mean=mean, std=float(np.sqrt((q * (x - mean) ** 2).sum())),
                mass_between=float(q[between].sum()), mass_near=(float(q[near[0]].sum()), float(q[near[1]].sum())),
                entropy=float(entropy(torch.from_numpy(q))), teacher_mass_between=float(p[between].sum()),
                teacher_mass_near=(float(p[near[0]].sum()), float(p[near[1]].sum())),
                teacher_entropy=float(entropy(torch.from_numpy(p))))


def beta_sweep(betas=(0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0), **kwargs) -> list[ToyFit]:
    """One JSD(beta) fit per beta (beta 0 = forward KL, 1 = reverse KL), same teacher. Notebook 10_generative_kd."""
    return [fit_student("jsd", beta, **kwargs) for beta in betas]
