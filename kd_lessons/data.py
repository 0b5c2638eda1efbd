"""Datasets as in-memory tensors, batches with positions, and batched augmentation on tensors.

Introduced in notebook 00_start_here (loading) and 04_distill_mnist (batches whose `idx` lines up
with cached teacher logits). `DATASETS`, `DatasetInfo`, `check_name`, `class_names` and
`DataUnavailableError` are re-exported from `kd_lessons.datasets` (one record per dataset). Raw files come from
`kd_lessons.sources`; decoded uint8 tensors are cached (checksum-verified) as cache kind "tensors",
decoded under `cache.lock` (once, however many processes ask), and normalised on load.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kd_lessons import cache, sources
from kd_lessons.cache import CorruptFileError
from kd_lessons.datasets import DATASETS, DatasetInfo, DataUnavailableError, check_name, class_names, decoded_cache_name

__all__ = ["DATASETS", "DatasetInfo", "DataUnavailableError", "check_name", "check_xy", "load_tensors",
           "class_names", "denormalize", "iterate_batches", "random_crop_flip", "random_shift",
           "stratified_subset", "hide_labels", "prepare_all", "clear_memo"]

_CACHE_FORMAT = 1


def _stats(name: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    info = DATASETS[name]
    shape = (-1, 1, 1)
    mean = torch.tensor(info.mean, dtype=like.dtype, device=like.device).view(shape)
    std = torch.tensor(info.std, dtype=like.dtype, device=like.device).view(shape)
    return mean, std


def denormalize(x: torch.Tensor, dataset: str) -> torch.Tensor:
    """Undo the normalisation (back to [0, 1] pixels) for showing images. Introduced in notebook 00_start_here."""
    dataset = check_name(dataset)
    if not torch.is_tensor(x) or x.dim() < 3 or x.shape[-3] != DATASETS[dataset].shape[0]:
        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"denormalize expects a tensor [..., C, H, W] with C={DATASETS[dataset].shape[0]} for "
                         f"{dataset}, got {got}; pass images from load_tensors({dataset!r})")
    x = x.float() if not x.is_floating_point() else x
    mean, std = _stats(dataset, x)
    return x * std + mean


def _normalise(x_u8: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 -> float32 with one allocation: (x / 255 - mean) / std == x * a + b, done in place."""
    mean, std = _stats(name, torch.empty(0))
    return x_u8.float().mul_(1.0 / (255.0 * std)).add_(-mean / std)


def _load_uint8(name: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded images from the verified cache (kept in memory while the file is unchanged), else the raw files."""
    split = "train" if train else "test"
    file = cache.path("tensors", decoded_cache_name(name, split))
    meta = {"dataset": name, "split": split, "format": _CACHE_FORMAT, "source": sources.source_fingerprint(name)}

    def cached(file):
        st = file.stat()
        return _decoded(name, split, str(file), st.st_mtime_ns, st.st_size, meta["source"])

    def build():
        sources.ensure_raw(name)
        x_np, y_np = sources.read_raw(name, train)
        return torch.from_numpy(x_np.copy()), torch.from_numpy(y_np.copy())

    return cache.build_once(file, meta, build, f"the tensor cache of the decoded {DATASETS[name].label} {split} images",
                            save=lambda xy, f: cache.save_verified({"x": xy[0], "y": xy[1]}, f, meta), load=cached)


@functools.lru_cache(maxsize=8)
def _decoded(name: str, split: str, file: str, mtime_ns: int, size: int, source: str):
    """One verified read per (file, stamp): a rewritten cache file has a new stamp and is read again."""
    meta = {"dataset": name, "split": split, "format": _CACHE_FORMAT, "source": source}
    blob = cache.load_verified(file, meta)
    x, y = blob["x"], blob["y"]
    if x.dtype != torch.uint8 or tuple(x.shape[1:]) != DATASETS[name].shape or len(x) != len(y):
        raise CorruptFileError(f"{file} holds x {tuple(x.shape)} {x.dtype}, not {name} images")
    return x, y


def clear_memo() -> None:
    """Forget in-process copies so the next load re-reads and re-verifies the disk cache (tests, a new data folder)."""
    _decoded.cache_clear()


def load_tensors(dataset: str, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole dataset as normalised float32 x [N, C, H, W], int64 y, offline-first; notebook 00_start_here."""
    # Raises DataUnavailableError naming every source tried and the fix when no source has the data.
    name = check_name(dataset)
    x_u8, y = _load_uint8(name, bool(train))
    return _normalise(x_u8, name), y.clone()


def check_xy(x, y) -> int:
    """x and y must be tensors with the same, non-zero number of rows; returns that number."""
    if not (torch.is_tensor(x) and torch.is_tensor(y)) or len(x) != len(y):
        raise ValueError(f"x and y must be tensors of equal length, got {type(x).__name__} of length "
                         f"{len(x) if hasattr(x, '__len__') else '?'} and {type(y).__name__} of length "
                         f"{len(y) if hasattr(y, '__len__') else '?'}; use kd_lessons.data.load_tensors(name)")
    if len(x) == 0:
        raise ValueError("x and y are empty; pass at least one example")
    return len(x)


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True,
                    generator: torch.Generator | None = None, augment: Callable | None = None,
                    device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield (idx, xb, yb), idx = positions in x, so cached teacher logits line up; notebook 04_distill_mnist."""
    # augment(xb) runs on the target device; for a seeded one pass partial(random_crop_flip, generator=g).
    n = check_xy(x, y)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(n, generator=generator, device=gen_device).cpu() if shuffle else torch.arange(n)
    device = torch.device(device) if device is not None else x.device
    non_blocking = device.type == "cuda"
    pin = non_blocking and x.device.type == "cpu" and torch.cuda.is_available()
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        xb, yb = x[idx.to(x.device)], y[idx.to(y.device)]
        if pin:
            xb, yb = xb.pin_memory(), yb.pin_memory()
        xb, yb = xb.to(device, non_blocking=non_blocking), yb.to(device, non_blocking=non_blocking)
        if augment is not None:
            xb = augment(xb)
        yield idx, xb, yb


def _draw(n: int, high: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Random ints in [0, high) drawn on the generator's device, then moved: same seed, same result."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


def _crop(xb: torch.Tensor, padding: int, mode: str, flip: bool, generator) -> torch.Tensor:
    """Pad, then gather one random HxW window per image (optionally mirrored) in a single indexing op."""
    if not torch.is_tensor(xb) or xb.dim() != 4:
        got = tuple(xb.shape) if torch.is_tensor(xb) else type(xb).__name__
        raise ValueError(f"expected a batch [N, C, H, W], got {got}; add a batch dim with x.unsqueeze(0)")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding/max_shift must be an int >= 0, got {padding!r}")
    n, c, h, w = xb.shape
    if n == 0 or (padding == 0 and not flip):
        return xb.clone()
    padded = F.pad(xb, (padding,) * 4, mode=mode) if padding else xb
    dy = _draw(n, 2 * padding + 1, generator, xb.device)
    dx = _draw(n, 2 * padding + 1, generator, xb.device)
    rows = dy[:, None] + torch.arange(h, device=xb.device)  # [N, H]
    cols = dx[:, None] + torch.arange(w, device=xb.device)  # [N, W]
    if flip:
        mirror = _draw(n, 2, generator, xb.device).bool()
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=xb.device)[:, None, None, None]
    chan = torch.arange(c, device=xb.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(xb: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None,
                     padding_mode: str = "zeros") -> torch.Tensor:
    """CIFAR augmentation: padded random crop + horizontal flip, vectorised; notebook 06_cifar10_gpu."""
    # "zeros" pads with 0 in normalised space (the dataset's mean colour); "reflect" mirrors the border.
    if padding_mode not in {"zeros", "reflect"}:
        raise ValueError(f"padding_mode must be 'zeros' or 'reflect', got {padding_mode!r}")
    return _crop(xb, padding, "constant" if padding_mode == "zeros" else "reflect", True, generator)


def random_shift(xb: torch.Tensor, max_shift: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """MNIST jitter: shift each image up to max_shift pixels, border-filled; notebook 04_distill_mnist."""
    return _crop(xb, max_shift, "replicate", False, generator)


def stratified_subset(x: torch.Tensor, y: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced random subset of n examples (order kept) for quick mode; notebook 04_distill_mnist."""
    total = check_xy(x, y)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if n >= total:
        return x, y
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    quota = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    chosen = []
    for cls, k in zip(classes.tolist(), quota):
        members = torch.nonzero(y == cls).flatten()
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    picked = torch.cat(chosen)
    if len(picked) < n:  # some class was too small: top up from the rest at random
        rest = torch.ones(total, dtype=torch.bool)
        rest[picked] = False
        pool = torch.nonzero(rest).flatten()
        picked = torch.cat([picked, pool[torch.randperm(len(pool), generator=g)[:n - len(picked)]]])
    picked = picked.sort().values
    return x[picked], y[picked]


def hide_labels(y: torch.Tensor, n_labeled: int, seed: int = 0) -> torch.Tensor:
    """Keep a class-balanced n_labeled of the labels and set the rest to -1 (unlabelled); notebook 04_distill_mnist.

    The few-labels setting: every image can still be shown to a teacher, only n_labeled keep their class.
    """
    check_xy(y, y)
    if isinstance(n_labeled, bool) or not isinstance(n_labeled, int) or not 1 <= n_labeled <= len(y):
        raise ValueError(f"n_labeled={n_labeled!r}: pass an int from 1 to {len(y)} (the number of labels to keep)")
    positions = torch.arange(len(y))
    keep, _ = stratified_subset(positions, y, n_labeled, seed=seed)
    hidden = torch.full_like(y, -1)
    hidden[keep] = y[keep]
    return hidden


def prepare_all(names: list[str] | None = None, progress: bool = True, offline: bool | None = None) -> dict[str, dict]:
    """Fetch, verify and cache every dataset it can, for `python -m kd_lessons data`; notebook 00_start_here.

    offline=None follows KD_OFFLINE; True skips torchvision's download and uses the offline copies.
    """
    report = {}
    for name in tqdm(list(names or DATASETS), desc="datasets", disable=not progress):
        name = check_name(name)
        try:
            source = sources.ensure_raw(name, offline=offline)
            sizes = {split: len(_load_uint8(name, split == "train")[1]) for split in ("train", "test")}
            report[name] = {"ok": True, "source": source, **sizes, "error": None}
        except (DataUnavailableError, CorruptFileError) as exc:
            report[name] = {"ok": False, "source": None, "train": 0, "test": 0, "error": str(exc)}
    return report
