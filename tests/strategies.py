"""Hypothesis strategies and tensor helpers shared by the property tests (minitorch's tests/strategies.py habit).

Imported as `from strategies import ...` (pyproject's pytest `pythonpath = ["tests"]`), so every loss test draws
seeds and temperatures from one definition instead of redefining them per file.
"""
import torch
from hypothesis import settings
from hypothesis import strategies as st

FAST = settings(max_examples=40, deadline=None)  # property tests on tiny tensors: many examples, no deadline
seeds = st.integers(0, 2**31 - 1)
betas = st.floats(0.0, 1.0)  # GKD's generalized-JSD mixing weight, and any [0, 1] weight


def temperatures(low: float = 0.5, high: float = 20.0):
    """Temperatures T in [low, high]: the range where soften(logits, T) stays well inside float64."""
    return st.floats(low, high)


def logits_pair(seed: int, shape: tuple = (4, 5), scale: float = 1.0, dtype=torch.float64):
    """Reproducible random (student_logits, teacher_logits) of one shape: [B, K] classes or [B, L, V] tokens."""
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=dtype),
            scale * torch.randn(*shape, generator=g, dtype=dtype))


def value_and_grad(fn, s, t):
    """A loss value and its gradient w.r.t. the student logits s."""
    s = s.clone().requires_grad_(True)
    loss = fn(s, t)
    (grad,) = torch.autograd.grad(loss, s)
    return loss.detach(), grad
