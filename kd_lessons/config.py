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

__all__ = ["is_quick", "pick", "get_device", "amp_dtype", "seed_everything", "data_dir", "cache_dir", "describe"]


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


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for training steps on `device`, or None for fp32; KD_PRECISION overrides.

    KD_PRECISION=auto (default): bf16 on CUDA (fp16 where bf16 is missing) and on CPUs with AMX
    bf16 units, where `make bench` measured a CNN epoch 1.3x faster; fp32 elsewhere (MPS, older CPUs).
    KD_PRECISION=fp32 or bf16 forces a choice. Master weights and losses stay fp32 either way.
    """
    device = torch.device(device)
    choice = os.environ.get("KD_PRECISION", "auto").strip().lower() or "auto"
    if choice not in {"auto", "fp32", "bf16"}:
        raise ValueError(f"KD_PRECISION={choice!r}: use 'auto', 'fp32' or 'bf16' (or unset it)")
    if choice == "fp32" or device.type not in {"cuda", "cpu"}:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if choice == "bf16" or torch.cuda.is_bf16_supported() else torch.float16
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()  # private, so guarded
    return torch.bfloat16 if choice == "bf16" or amx else None


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


def describe(device: torch.device | str | None = None) -> str:
    """One line for notebooks and the app: device, precision, mode and torch version."""
    mode = "quick (KD_QUICK=1)" if is_quick() else "full"
    device = torch.device(device) if device is not None else get_device()
    dtype = amp_dtype(device)
    precision = "fp32" if dtype is None else f"{str(dtype).replace('torch.', '')} autocast"
    return (f"device={device} precision={precision} mode={mode} torch={torch.__version__} "
            f"threads={torch.get_num_threads()}")
