"""MNIST-1D (Greydanus, 2020) generated offline by its own package, cached once and verified: Lesson 18's data.

Introduced for Lesson 18 (capacity gap, when KD pays). The `mnist1d` package (PyPI, a dependency in pyproject.toml)
builds each example from one of ten 1-D digit templates by padding, shear, translation, correlated and i.i.d.
noise, then a 40-point resampling; the dataset is standardised as a whole. `load()` generates the standard set
(5000 examples, 4000 train / 1000 test, the package's seed 42), saves it atomically with a sha256 sidecar
(`cache.build_once`, kind "tensors") and verifies it on every load. The standard set is also checked against its
pinned fingerprint, so a package version that generates other data fails loudly instead of moving the numbers.
A smaller set (`load(num_samples=500)`, for tests) is generated the same way and is not pinned. The package's own
generator reseeds numpy's and Python's global RNGs; `generate` puts both back, so loading never changes a seed.
"""
from __future__ import annotations

import hashlib
import random
from importlib import metadata

import numpy as np
import torch

from kd_lessons import cache
from kd_lessons.datasets import DataUnavailableError

__all__ = ["STANDARD", "LENGTH", "NUM_CLASSES", "PINNED_FINGERPRINT", "Mnist1DUnavailableError", "package_version",
           "generate", "fingerprint", "load", "cache_file", "FIX"]

STANDARD = {"num_samples": 5000, "train_split": 0.8, "seed": 42}  # the package's defaults: the paper's dataset
LENGTH, NUM_CLASSES = 40, 10
# fingerprint() of the standard set as mnist1d 0.0.2.post1 generates it (labels exact, signals rounded to 1e-4).
PINNED_FINGERPRINT = "4e0ab81a06c0496a85cf6ec88dec88232ae331825cb9677879183123df4b450f"
FIX = ("install it: `pip install 'mnist1d>=0.0.2'` (or `pip install -e .`, which declares it; the course's numbers "
       "were measured with mnist1d==0.0.2.post1). It generates the data offline from its own code: nothing is "
       "downloaded")


class Mnist1DUnavailableError(DataUnavailableError):
    """The `mnist1d` package is not installed (or will not import); the message says how to install it."""


def _package():
    try:
        import mnist1d.data as package_data
    except ImportError as exc:
        raise Mnist1DUnavailableError(f"MNIST-1D needs the `mnist1d` package, which could not be imported ({exc}). "
                                      f"Fix: {FIX}.") from exc
    return package_data


def package_version() -> str:
    """The installed mnist1d version (part of the cache's meta: another version is another dataset)."""
    try:
        return metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        raise Mnist1DUnavailableError(f"MNIST-1D needs the `mnist1d` package, which is not installed. Fix: {FIX}."
                                      ) from None


def _check_args(num_samples: int, seed: int) -> None:
    for name, value in (("num_samples", num_samples), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}={value!r}: pass an int")
    if num_samples < 50 or num_samples % NUM_CLASSES:
        raise ValueError(f"num_samples={num_samples}: pass a multiple of {NUM_CLASSES} of at least 50 (every class "
                         f"gets num_samples / {NUM_CLASSES} examples, 80% of them for training)")
    if seed < 0:
        raise ValueError(f"seed={seed}: pass a seed >= 0 (the standard set uses {STANDARD['seed']})")


def generate(num_samples: int = STANDARD["num_samples"], seed: int = STANDARD["seed"]) -> dict:
    """MNIST-1D from the package's generator: x [N, 40] float32, y int64, x_test, y_test (no cache)."""
    _check_args(num_samples, seed)
    package_data = _package()
    args = package_data.get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = package_data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {"x": torch.from_numpy(np.asarray(data["x"], dtype=np.float32)),
            "y": torch.from_numpy(np.asarray(data["y"], dtype=np.int64)),
            "x_test": torch.from_numpy(np.asarray(data["x_test"], dtype=np.float32)),
            "y_test": torch.from_numpy(np.asarray(data["y_test"], dtype=np.int64))}


def fingerprint(data: dict) -> str:
    """sha256 of the labels (exact) and of the signals rounded to 1e-4 (robust to last-bit float differences)."""
    h = hashlib.sha256()
    for name in ("y", "y_test"):
        h.update(np.ascontiguousarray(data[name].numpy(), dtype=np.int64).tobytes())
    x = np.concatenate([data["x"].numpy().astype(np.float64), data["x_test"].numpy().astype(np.float64)])
    h.update(np.round(x, 4).astype(np.float32).tobytes())
    return h.hexdigest()


def _check_content(data: dict, num_samples: int) -> None:
    """Shapes, dtypes, label range and finiteness: what every user of the set relies on."""
    n_train = int(num_samples * STANDARD["train_split"])
    want = {"x": (n_train, LENGTH), "y": (n_train,), "x_test": (num_samples - n_train, LENGTH),
            "y_test": (num_samples - n_train,)}
    for name, shape in want.items():
        t = data.get(name)
        if not torch.is_tensor(t) or tuple(t.shape) != shape:
            got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise cache.CorruptFileError(f"MNIST-1D {name} is {got}, expected {shape}")
    if not (torch.isfinite(data["x"]).all() and torch.isfinite(data["x_test"]).all()):
        raise cache.CorruptFileError("MNIST-1D holds non-finite signals")
    for name in ("y", "y_test"):
        if data[name].dtype != torch.int64 or int(data[name].min()) < 0 or int(data[name].max()) >= NUM_CLASSES:
            raise cache.CorruptFileError(f"MNIST-1D {name} holds labels outside 0..{NUM_CLASSES - 1}")


def cache_file(num_samples: int = STANDARD["num_samples"], seed: int = STANDARD["seed"]):
    """Where `load` keeps this set: cache kind "tensors", named by size, seed and package version."""
    return cache.path("tensors", f"mnist1d-n{num_samples}-seed{seed}-v{package_version()}.pt")


def _build(num_samples: int, seed: int) -> dict:
    data = generate(num_samples, seed)
    _check_content(data, num_samples)
    standard = num_samples == STANDARD["num_samples"] and seed == STANDARD["seed"]
    if standard and (got := fingerprint(data)) != PINNED_FINGERPRINT:
        raise cache.CorruptFileError(
            f"mnist1d {package_version()} generated a standard MNIST-1D whose fingerprint is {got[:16]}..., not the "
            f"pinned {PINNED_FINGERPRINT[:16]}... (mnist1d 0.0.2.post1): another package version makes other data, "
            "so the course's numbers would not hold. Fix: `pip install mnist1d==0.0.2.post1`")
    return data


def load(num_samples: int = STANDARD["num_samples"], seed: int = STANDARD["seed"], refresh: bool = False) -> dict:
    """The MNIST-1D tensors (x, y, x_test, y_test), generated once and verified on every load. Lesson 18.

    The defaults are the standard set (4000 train / 1000 test); a cached file whose checksum or meta (size, seed,
    package version, fingerprint) does not match is warned about, deleted and regenerated.
    """
    _check_args(num_samples, seed)
    file = cache_file(num_samples, seed)
    meta = {"kind": "kd_lessons.mnist1d", "num_samples": num_samples, "seed": seed, "mnist1d": package_version()}

    def verified(f):
        data = cache.load_verified(f, meta)
        _check_content(data, num_samples)
        return data

    return cache.build_once(file, meta, lambda: _build(num_samples, seed), "the MNIST-1D dataset",
                            load=verified, refresh=refresh)
