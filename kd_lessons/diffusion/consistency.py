"""Consistency distillation (Song et al., 2023): a student whose x-prediction is the same all along a teacher's path.

Introduced in lesson 17, as the second step-distillation method. The consistency function is the student's
x-prediction f(z_t, t) = alpha_t z_t - sigma_t v(z_t, t): with v-prediction it meets the boundary condition
f(z_0, 0) = z_0 exactly (alpha_0 = 1, sigma_0 = 0), the role of c_skip / c_out in the paper. Training (their
Algorithm 2, squared L2 as the distance, a DDIM step of the teacher as the ODE solver): on the grid t_n = n / N,
noise x to z_{t_{n+1}}, let the teacher take one DDIM step to t_n, and pull f_student(z_{t_{n+1}}) towards the
EMA target network's f(z_{t_n}). Sampling: one step is f(z_1, 1); more steps alternate denoising and fresh noise
(their Algorithm 1), so a multistep sample is stochastic and needs a generator.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from tqdm.auto import tqdm

from kd_lessons.diffusion.model import _lr_at, alpha_sigma, check_finite, ddim_step, predict_x_eps

__all__ = ["consistency_distillation", "consistency_sample"]


def consistency_distillation(teacher: nn.Module, x: torch.Tensor, iters: int, n_grid: int = 64, ema: float = 0.95,
                             batch_size: int = 256, lr: float = 1e-3, generator: torch.Generator | None = None,
                             progress: bool = True) -> tuple[nn.Module, list[float]]:
    """A consistency model distilled from teacher on an n_grid-step grid; (student, losses). Lesson 17."""
    if not 0 <= ema < 1:
        raise ValueError(f"ema={ema!r}: the target network's EMA momentum must lie in [0, 1)")
    for name, n in (("iters", iters), ("n_grid", n_grid)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name}={n!r}: a whole number >= 1")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    teacher.eval()
    student = copy.deepcopy(teacher).train()
    target = copy.deepcopy(teacher).eval().requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    history = []
    for i in tqdm(range(iters), desc="consistency distillation", disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = _lr_at(lr, i, iters)
        xb = x[torch.randint(0, x.shape[0], (batch_size,), generator=g)]
        n = torch.randint(0, n_grid, (batch_size, 1), generator=g).float()
        t_next, t_now = (n + 1) / n_grid, n / n_grid
        a, s = alpha_sigma(t_next)
        z = a * xb + s * torch.randn(xb.shape, generator=g)
        with torch.no_grad():
            goal = predict_x_eps(target, ddim_step(teacher, z, t_next, t_now), t_now)[0]
        loss = ((predict_x_eps(student, z, t_next)[0] - goal) ** 2).mean()
        check_finite(loss, i, "consistency distillation")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p_t, p_s in zip(target.parameters(), student.parameters()):
                p_t.mul_(ema).add_(p_s, alpha=1 - ema)
        history.append(float(loss.detach()))
    return student.eval(), history


@torch.no_grad()
def consistency_sample(model: nn.Module, z1: torch.Tensor, steps: int = 1,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples in `steps` consistency steps at t = 1, (steps-1)/steps, ...: denoise, re-noise, denoise. Lesson 17."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}: a sampler takes a whole number of steps >= 1")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x = predict_x_eps(model, z1, 1.0)[0]
    for k in range(steps - 1, 0, -1):
        a, s = alpha_sigma(k / steps)
        x = predict_x_eps(model, a * x + s * torch.randn(x.shape, generator=g), k / steps)[0]
    return x
