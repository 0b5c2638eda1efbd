"""The 2-D distributions of lesson 17: 8 Gaussians, a swiss roll, a checkerboard, drawn from a seeded generator.

Introduced in lesson 17. Each is scaled to roughly unit standard deviation per axis, the scale the diffusion
schedule's unit-variance noise assumes, and is drawn with torch only from the caller's torch.Generator, so a seed
fixes the data exactly.
"""
from __future__ import annotations

import math

import torch

__all__ = ["DATASETS", "sample_data", "eight_gaussians", "swiss_roll", "checkerboard"]


def eight_gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    """n points from 8 equal Gaussians (std 0.1 before scaling) on a circle of radius 2, scaled by 1/1.42."""
    k = torch.randint(0, 8, (n,), generator=generator)
    angle = k.double() * (2 * math.pi / 8)
    centres = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * 2
    return ((centres + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.double)) / 1.42).float()


def swiss_roll(n: int, generator: torch.Generator) -> torch.Tensor:
    """n points on a 2-D swiss roll (angle 1.5 pi to 4.5 pi, noise 0.25 before scaling), scaled to unit spread."""
    u = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.double))
    x = torch.stack([u * torch.cos(u), u * torch.sin(u)], 1)
    x = x + 0.25 * torch.randn(n, 2, generator=generator, dtype=torch.double)
    return (x / 7.0).float()


def checkerboard(n: int, generator: torch.Generator) -> torch.Tensor:
    """n points uniform on the 8 black squares of a 4 x 4 checkerboard over [-2, 2]^2, scaled by 1/1.15."""
    x1 = torch.rand(n, generator=generator, dtype=torch.double) * 4 - 2
    col = torch.floor(x1 + 2)                                   # column 0..3
    row = torch.randint(0, 2, (n,), generator=generator).double() * 2 + (col % 2)  # a row of the other colour
    x2 = torch.rand(n, generator=generator, dtype=torch.double) + row - 2
    return (torch.stack([x1, x2], 1) / 1.15).float()


DATASETS = {"8gaussians": eight_gaussians, "swissroll": swiss_roll, "checkerboard": checkerboard}


def sample_data(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points [n, 2] float32 of the named distribution (8gaussians, swissroll, checkerboard). Lesson 17."""
    if name not in DATASETS:
        raise ValueError(f"dataset {name!r} is not known; use one of {list(DATASETS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: ask for a positive whole number of points")
    return DATASETS[name](n, generator if generator is not None else torch.Generator().manual_seed(0))
