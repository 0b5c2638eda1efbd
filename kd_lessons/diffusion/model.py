"""The teacher of lesson 17: a cosine VP schedule, an MLP denoiser that predicts v, DDIM, and its training loop.

Introduced in lesson 17. Schedule: continuous time t in [0, 1], alpha_t = cos(pi t / 2), sigma_t = sin(pi t / 2)
(variance preserving, alpha^2 + sigma^2 = 1), z_t = alpha_t x + sigma_t eps: the cosine schedule Salimans & Ho
(2022) distil. Parameterisation: v-prediction, v = alpha_t eps - sigma_t x, so x_hat = alpha_t z - sigma_t v_hat and
eps_hat = sigma_t z + alpha_t v_hat. Why v: DDIM's x_hat from an eps-prediction is (z - sigma eps_hat) / alpha,
which divides by alpha_t -> 0 at t = 1, where a sampler of few steps starts; a small error in eps_hat becomes a huge
one in x_hat, and a distilled few-step student is exactly where that bites. v stays well defined at every t
(x_hat = -v_hat at t = 1). The loss, mean squared error on v, is the x-loss weighted by 1 + SNR (Salimans & Ho's
"SNR+1" weighting). The DDIM step (eta = 0) is deterministic: z_s = alpha_s x_hat + sigma_s eps_hat.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["alpha_sigma", "Denoiser", "predict_x_eps", "ddim_step", "ddim_sample", "train_denoiser",
           "DivergedError", "check_finite"]


class DivergedError(FloatingPointError):
    """A diffusion loss became NaN or infinite: training stops, and nothing is cached. Lesson 17."""


def alpha_sigma(t):
    """(alpha_t, sigma_t) of the cosine VP schedule at times t in [0, 1] (tensor or float). Lesson 17."""
    t = torch.as_tensor(t, dtype=torch.float32)
    if t.numel() and (not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1):
        raise ValueError(f"diffusion times must lie in [0, 1]; got values from {float(t.min()):g} to "
                         f"{float(t.max()):g}")
    return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)


class Denoiser(nn.Module):
    """MLP over (z, sinusoidal embedding of t) -> v_hat [B, 2]: the lesson's teacher and students. Lesson 17."""

    def __init__(self, hidden: int = 128, depth: int = 3, n_freq: int = 4, dim: int = 2):
        super().__init__()
        if hidden < 1 or depth < 1 or n_freq < 1:
            raise ValueError(f"hidden={hidden}, depth={depth}, n_freq={n_freq}: each must be >= 1")
        self.config = {"hidden": hidden, "depth": depth, "n_freq": n_freq, "dim": dim}
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32), persistent=False)
        layers, width = [], dim + 2 * n_freq
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device).reshape(-1, 1).expand(z.shape[0], 1)
        angles = t * self.freqs
        return self.net(torch.cat([z, torch.sin(angles), torch.cos(angles)], 1))


def predict_x_eps(model: nn.Module, z: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat, eps_hat) at z_t from the model's v_hat: x = alpha z - sigma v, eps = sigma z + alpha v. Lesson 17."""
    t = torch.as_tensor(t, dtype=z.dtype).reshape(-1, 1).expand(z.shape[0], 1)
    a, s = alpha_sigma(t)
    v = model(z, t)
    return a * z - s * v, s * z + a * v


def ddim_step(model: nn.Module, z: torch.Tensor, t, s) -> torch.Tensor:
    """One deterministic DDIM step z_t -> z_s (s < t): alpha_s x_hat + sigma_s eps_hat. Lesson 17."""
    x, eps = predict_x_eps(model, z, t)
    a_s, s_s = alpha_sigma(torch.as_tensor(s, dtype=z.dtype).reshape(-1, 1).expand(z.shape[0], 1))
    return a_s * x + s_s * eps


def _check_count(steps, what: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{what}={steps!r}: a sampler takes a whole number of steps >= 1")
    return steps


@torch.no_grad()
def ddim_sample(model: nn.Module, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Samples from noise z1 [B, 2] in `steps` equal DDIM steps t = 1 -> 0 (same z1, same output). Lesson 17."""
    _check_count(steps)
    if not isinstance(z1, torch.Tensor) or z1.ndim != 2:
        raise ValueError(f"z1 must be a [batch, dim] noise tensor; got {getattr(z1, 'shape', type(z1).__name__)}")
    was = model.training
    model.eval()
    try:
        z, grid = z1, torch.linspace(1.0, 0.0, steps + 1)
        for i in range(steps):
            z = ddim_step(model, z, grid[i], grid[i + 1])
        return z
    finally:
        model.train(was)


def check_finite(loss: torch.Tensor, step: int, what: str) -> None:
    """Raise DivergedError (with what to change) when a loss is NaN or infinite. Lesson 17."""
    if not torch.isfinite(loss):
        raise DivergedError(f"{what}: the loss became {float(loss.detach())} at step {step}; training stopped and "
                            "nothing was cached. Lower the learning rate (or check the data for NaN) and run again.")


def _lr_at(lr: float, i: int, n: int) -> float:
    """Linear decay to 0 over n steps: the last steps polish instead of jumping around."""
    return lr * (1 - i / n)


def train_denoiser(model: nn.Module, x: torch.Tensor, steps: int, batch_size: int = 256, lr: float = 1e-3,
                   generator: torch.Generator | None = None, progress: bool = True) -> list[float]:
    """Train model to predict v on z_t = alpha x + sigma eps (t ~ U[0, 1]); returns the loss per step. Lesson 17."""
    _check_count(steps, "steps")
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"x must be data points [N, dim]; got {getattr(x, 'shape', type(x).__name__)}")
    if not torch.isfinite(x).all():
        raise DivergedError("the training data hold NaN or inf: nothing was trained or cached; redraw the data")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    model.train()
    for i in tqdm(range(steps), desc="teacher (v-prediction)", disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = _lr_at(lr, i, steps)
        xb = x[torch.randint(0, x.shape[0], (batch_size,), generator=g)]
        t = torch.rand(batch_size, 1, generator=g)
        eps = torch.randn(xb.shape, generator=g)
        a, s = alpha_sigma(t)
        loss = ((model(a * xb + s * eps, t) - (a * eps - s * xb)) ** 2).mean()
        check_finite(loss, i, "teacher training")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history
