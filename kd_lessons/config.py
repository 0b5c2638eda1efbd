"""Run-time settings in one place: device, seeds, folders and the quick-mode switch.

Introduced in notebook 00_start_here. Every other module, the app, the notebooks and the
tests read these functions instead of touching the environment themselves.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["is_quick", "pick", "get_device", "seed_everything", "data_dir", "cache_dir", "describe"]


def is_quick() -> bool:
    """True when KD_QUICK=1: smoke-test sizes for nbval, CI and the app's first launch."""
    return os.environ.get("KD_QUICK", "0").strip().lower() in {"1", "true", "yes", "on"}


def pick(full, quick):
    """Return `quick` in quick mode and `full` otherwise, so callers never read KD_QUICK."""
    return quick if is_quick() else full


def get_device(prefer: str | None = None) -> torch.device:
    """Pick cuda, then mps, then cpu; `prefer` or KD_DEVICE overrides (e.g. KD_DEVICE=cpu)."""
    name = prefer or os.environ.get("KD_DEVICE", "").strip().lower() or None
    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"KD_DEVICE={name!r} but CUDA is not available; use 'cpu' or unset KD_DEVICE")
        if name == "mps" and not _mps_available():
            raise ValueError("KD_DEVICE='mps' but MPS is not available; use 'cpu' or unset KD_DEVICE")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    """MPS exists only on Apple silicon builds of torch."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed python, numpy and torch (all devices) and return a torch.Generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _user_dir(env: str, xdg: str, fallback: str) -> Path:
    """Resolve a per-user folder: explicit variable, then XDG variable, then ~/<fallback>."""
    if os.environ.get(env):
        path = Path(os.environ[env]).expanduser()
    elif os.environ.get(xdg):
        path = Path(os.environ[xdg]).expanduser() / "kd_lessons"
    else:
        path = Path.home() / fallback / "kd_lessons"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Where datasets live (torchvision's layout): KD_DATA_DIR, else ~/.local/share/kd_lessons/data."""
    if os.environ.get("KD_DATA_DIR"):
        return _user_dir("KD_DATA_DIR", "", "")
    path = _user_dir("", "XDG_DATA_HOME", ".local/share") / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where decoded tensors, teacher checkpoints and sweeps go: KD_CACHE_DIR, else ~/.cache/kd_lessons."""
    return _user_dir("KD_CACHE_DIR", "XDG_CACHE_HOME", ".cache")


def describe() -> str:
    """One line for notebooks and the app: device, mode and torch version."""
    mode = "quick (KD_QUICK=1)" if is_quick() else "full"
    return f"device={get_device()} mode={mode} torch={torch.__version__} threads={torch.get_num_threads()}"
