"""Run-time settings in one place: the only module that reads the environment.

Introduced in notebook 00_start_here. Mode (KD_QUICK), device (KD_DEVICE), precision
(KD_PRECISION), offline data (KD_OFFLINE), download timeout (KD_DOWNLOAD_TIMEOUT), the data and
cache folders (KD_DATA_DIR, KD_CACHE_DIR, XDG_*) and `make full`'s ledger (KD_RESULTS_DIR, KD_LESSON) are
read here, when asked for, never at import.
Every other module, the app, the notebooks and the tests call these functions instead.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["is_quick", "mode", "pick", "get_device", "resolve_device", "precision", "amp_dtype", "offline",
           "download_timeout", "seed_everything", "data_dir", "cache_dir", "results_dir", "lesson_id",
           "describe", "PRECISIONS"]

PRECISIONS = ("auto", "fp32", "bf16")
_TRUE = {"1", "true", "yes", "on"}


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def is_quick() -> bool:
    """True when KD_QUICK=1: smoke-test sizes for nbval, CI and the app's first launch."""
    return _env("KD_QUICK", "0").lower() in _TRUE


def mode() -> str:
    """'quick' or 'full': names caches, so quick and full results never mix. Notebook 00_start_here."""
    return "quick" if is_quick() else "full"


def pick(full, quick):
    """Return `quick` in quick mode and `full` otherwise, so callers never read KD_QUICK."""
    return quick if is_quick() else full


def offline() -> bool:
    """True when KD_OFFLINE=1: skip torchvision's internet download and go straight to offline sources."""
    return _env("KD_OFFLINE", "0").lower() in _TRUE


def download_timeout() -> float:
    """Seconds to wait for a dataset host (KD_DOWNLOAD_TIMEOUT, default 10) before trying offline copies."""
    raw = _env("KD_DOWNLOAD_TIMEOUT", "10")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"KD_DOWNLOAD_TIMEOUT={raw!r}: use a number of seconds > 0 such as 10 (or unset it)")
    return value


def get_device(prefer: str | None = None) -> torch.device:
    """Pick cuda, then mps, then cpu; `prefer` or KD_DEVICE overrides (e.g. KD_DEVICE=cpu)."""
    name = prefer or _env("KD_DEVICE").lower() or None
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


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """The device a function was given, or `get_device()`'s pick when None: the one rule every `device=` follows."""
    if device is None:
        return get_device()
    if isinstance(device, torch.device):
        return device
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device: pass 'cpu', 'cuda', 'cuda:1', 'mps', a torch.device, "
                         f"or None for the automatic pick (KD_DEVICE overrides it)") from exc


def precision(choice: str | None = None) -> str:
    """The training precision asked for: `choice` if given, else KD_PRECISION, else 'auto'."""
    value = (choice if choice is not None else _env("KD_PRECISION", "auto")).strip().lower() or "auto"
    if value not in PRECISIONS:
        source = "precision" if choice is not None else "KD_PRECISION"
        raise ValueError(f"{source}={value!r}: use 'auto', 'fp32' or 'bf16' (or unset it)")
    return value


def amp_dtype(device: torch.device | str, choice: str | None = None) -> torch.dtype | None:
    """The autocast dtype for training steps on `device`, or None for fp32. Notebook 06_cifar10_gpu.

    'auto' (default): bf16 on CUDA (fp16 where bf16 is missing) and on CPUs with AMX bf16 units,
    where `make bench` measured a CNN epoch 1.3x faster; fp32 elsewhere (MPS, older CPUs). 'fp32'
    or 'bf16' force a choice. Master weights and losses stay fp32 either way.
    """
    device = torch.device(device)
    choice = precision(choice)
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


def distributed() -> dict:
    """torchrun's layout (RANK, LOCAL_RANK, WORLD_SIZE; 0, 0, 1 alone) and its backend: nccl on CUDA, else gloo."""
    world = int(_env("WORLD_SIZE") or 1)
    return {"rank": int(_env("RANK") or 0), "local_rank": int(_env("LOCAL_RANK") or 0), "world_size": world,
            "backend": "nccl" if get_device().type == "cuda" else "gloo"}


def _user_dir(env: str, xdg: str, fallback: str, sub: str = "") -> Path:
    """Resolve a per-user folder: explicit variable, then XDG variable + kd_lessons/sub, then ~/fallback/..."""
    if env and _env(env):
        path = Path(_env(env)).expanduser()
    elif _env(xdg):
        path = Path(_env(xdg)).expanduser() / "kd_lessons" / sub
    else:
        path = Path.home() / fallback / "kd_lessons" / sub
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Where datasets live (torchvision's layout): KD_DATA_DIR, else ~/.local/share/kd_lessons/data."""
    return _user_dir("KD_DATA_DIR", "XDG_DATA_HOME", ".local/share", "data")


def cache_dir() -> Path:
    """Where decoded tensors, teacher checkpoints and sweeps go: KD_CACHE_DIR, else ~/.cache/kd_lessons."""
    return _user_dir("KD_CACHE_DIR", "XDG_CACHE_HOME", ".cache")


def results_dir() -> Path | None:
    """Where `make full` collects the lesson's ledger numbers (KD_RESULTS_DIR); None: record without writing."""
    raw = _env("KD_RESULTS_DIR")
    return Path(raw).expanduser() if raw else None


def lesson_id() -> str:
    """The lesson `make full` is running (KD_LESSON, e.g. '11_methods_tour'); '' outside it."""
    return _env("KD_LESSON")


def describe(device: torch.device | str | None = None) -> str:
    """One line for notebooks and the app: device, precision, mode and torch version."""
    device = resolve_device(device)
    dtype = amp_dtype(device)
    prec = "fp32" if dtype is None else f"{str(dtype).replace('torch.', '')} autocast"
    label = "quick (KD_QUICK=1)" if is_quick() else "full"
    return (f"device={device} precision={prec} mode={label} torch={torch.__version__} "
            f"threads={torch.get_num_threads()} OMP_WAIT_POLICY={_env('OMP_WAIT_POLICY') or 'unset'}")
