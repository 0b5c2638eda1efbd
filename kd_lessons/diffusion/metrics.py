"""Sample-based distances between a sampler's points and the true distribution: sliced Wasserstein-2 and MMD.

Introduced in lesson 17. Sliced Wasserstein-2 (Rabin et al., 2011; Bonneel et al., 2015): project both samples
on many directions, where W2 between 1-D samples is the distance between their sorted values, and take the root
of the mean squared distance over directions. In 2-D the directions are n_proj angles evenly spaced over
[0, pi), so it is deterministic; two samples of the same size are compared (the same count of sorted values).
Closed forms it meets: a copy shifted by d scores |d| / sqrt(2); N(0, s1^2 I) against N(0, s2^2 I) scores
|s1 - s2|. MMD^2 (Gretton et al., 2012): unbiased estimate with the Gaussian kernel exp(-|x - y|^2 / (2 h^2));
the bandwidth h is fixed from the *reference* sample by the median heuristic (`rbf_bandwidth`), so every sampler
is scored with the same kernel.
"""
from __future__ import annotations

import math

import torch

__all__ = ["sliced_wasserstein", "mmd2", "rbf_bandwidth", "directions"]


def _points(a, name: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor) or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be a sample [n >= 2, dim]; got {getattr(a, 'shape', type(a).__name__)}")
    a = a.detach().double()
    if not torch.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf: a sampler diverged; its distance is undefined")
    return a


def directions(dim: int, n_proj: int, seed: int = 0) -> torch.Tensor:
    """Unit directions [n_proj, dim]: evenly spaced angles in 2-D, seeded Gaussian directions otherwise."""
    if dim == 2:
        angle = torch.arange(n_proj, dtype=torch.double) * (math.pi / n_proj)
        return torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    d = torch.randn(n_proj, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.double)
    return d / d.norm(dim=1, keepdim=True)


def sliced_wasserstein(a, b, n_proj: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between equal-size samples a and b [n, dim] (lower is closer). Lesson 17."""
    a, b = _points(a, "a"), _points(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a {list(a.shape)} and b {list(b.shape)}: compare samples of the same size and dim "
                         "(draw as many points from the sampler as from the reference)")
    if n_proj < 1:
        raise ValueError(f"n_proj={n_proj}: use at least one direction (128 is the default)")
    d = directions(a.shape[1], n_proj, seed)
    pa, pb = torch.sort(a @ d.T, dim=0).values, torch.sort(b @ d.T, dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def rbf_bandwidth(reference, max_points: int = 1000) -> float:
    """The median heuristic: the median pairwise distance of (at most max_points of) the reference sample."""
    r = _points(reference, "reference")[:max_points]
    dist = torch.cdist(r, r)
    return float(dist[torch.triu(torch.ones_like(dist, dtype=torch.bool), diagonal=1)].median())


def mmd2(a, b, bandwidth: float) -> float:
    """Unbiased MMD^2 between samples a and b with the Gaussian kernel of the given bandwidth. Lesson 17."""
    a, b = _points(a, "a"), _points(b, "b")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth={bandwidth!r}: pass a positive kernel width, e.g. rbf_bandwidth(reference)")

    def k(u, v):
        return torch.exp(-torch.cdist(u, v) ** 2 / (2 * bandwidth ** 2))

    n, m = a.shape[0], b.shape[0]
    kaa, kbb = k(a, a), k(b, b)
    xx = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    yy = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2 * k(a, b).mean())
