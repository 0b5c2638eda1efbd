"""What the classroom app's panels show: datasets on offer, temperatures, soft labels, loss anatomy, heatmap.

Introduced in notebook 00_start_here (the app tour). `app.py` holds only widgets and layout and calls
these functions (and `kd_lessons.app.jobs` for background training), so everything the app shows is
computed here and tested without a browser.
"""
from __future__ import annotations

import inspect
import io
import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from kd_lessons import cache, config, losses
from kd_lessons.cache import CorruptFileError
from kd_lessons.data import load_tensors, stratified_subset
from kd_lessons.datasets import DATASETS, DataUnavailableError, decoded_cache_name
from kd_lessons.models import make_student
from kd_lessons.teachers import cached_logits
from kd_lessons.train import predict_logits

__all__ = ["STUDENT_WIDTHS", "label", "available_datasets", "temperatures", "nearest", "test_pool", "pick_examples",
           "soft_labels", "soft_label_frame", "loss_anatomy", "loss_vs_alpha", "untrained_student",
           "student_logits", "grid_summary", "kd_source", "figure_png",
           "explain_error"]

STUDENT_WIDTHS = (30, 100, 300, 800)


def label(dataset: str) -> str:
    """The dataset's display name ('Fashion-MNIST'), from the registry."""
    return DATASETS[dataset].label


def available_datasets() -> list[str]:
    """Datasets fetched on demand (records with on_demand) always; the others once their files are here."""
    names = [name for name, info in DATASETS.items() if info.on_demand]
    for name, info in DATASETS.items():
        if not info.on_demand and (cache.path("tensors", decoded_cache_name(name, "test")).is_file() or
                                   any((config.data_dir() / info.folder / f).is_file() for f in info.pins)):
            names.append(name)
    return names


def temperatures(low: float = 0.1, high: float = 50.0) -> list[float]:
    """Round, log-spaced temperatures (1-1.5-2-3-4-5-6-8 per decade) for a log-scale slider. Notebook 02_temperature."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low!r}, high={high!r}; e.g. temperatures(0.1, 50)")
    steps = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    values = [round(m * 10.0 ** e, 6) for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
              for m in steps]
    return [v for v in values if low - 1e-9 <= v <= high + 1e-9]


def nearest(value: float, options: Sequence[float], log: bool = True) -> float:
    """The option closest to value (on a log scale by default), to snap T onto a grid."""
    if not options:
        raise ValueError("options is empty; pass the grid values, e.g. temperatures()")
    if log:
        return min(options, key=lambda o: abs(math.log(o) - math.log(value)))
    return min(options, key=lambda o: abs(o - value))


def test_pool(dataset: str, teacher: torch.nn.Module, size: int | None = None) -> dict:
    """A class-balanced pool of test images with the teacher's logits (cached on disk): the soft-label panel's data.

    Returns {"x", "y", "teacher_logits", "teacher_accuracy"}; size defaults to 1000 (200 in quick mode).
    """
    size = config.pick(1000, 200) if size is None else size
    x_test, y_test = load_tensors(dataset, train=False)
    x, y = stratified_subset(x_test, y_test, size, seed=0)
    logits = cached_logits(teacher, x)
    accuracy = float((logits.argmax(1) == y).float().mean())
    return {"x": x, "y": y, "teacher_logits": logits, "teacher_accuracy": accuracy}


def pick_examples(y: torch.Tensor, n: int = 4, seed: int = 0) -> list[int]:
    """n positions in y with distinct classes where possible, shuffled by seed (the app's 'shuffle' button)."""
    if n < 1 or len(y) == 0:
        raise ValueError(f"n={n} and len(y)={len(y)}: need n >= 1 and a non-empty y")
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(y), generator=g).tolist()
    picked, seen = [], set()
    for i in order:  # first one per class, then fill up
        if int(y[i]) not in seen:
            picked.append(i)
            seen.add(int(y[i]))
        if len(picked) == n:
            return picked
    return picked + [i for i in order if i not in picked][:n - len(picked)]


def soft_labels(teacher_logits: torch.Tensor, y: torch.Tensor, T: float) -> dict:
    """Soft targets at T with their entropies, next to the one-hot label's (always 0). Notebook 01_soft_vs_hard_labels.

    Returns {"probs" [n, K], "entropy" [n], "p_true" [n], "predicted" [n], "max_entropy" log K}.
    """
    probs = losses.soften(teacher_logits.float(), T)
    return {"probs": probs, "entropy": losses.entropy(probs), "p_true": probs.gather(1, y.view(-1, 1))[:, 0],
            "predicted": probs.argmax(1), "max_entropy": math.log(probs.shape[1])}


def soft_label_frame(probs: torch.Tensor, label: int, class_names: Sequence[str], T: float) -> pd.DataFrame:
    """Long table (class, target, probability) of one one-hot label and its soft label, for a bar chart."""
    p = probs.detach().float().cpu().tolist()
    if len(p) != len(class_names) or not 0 <= int(label) < len(p):
        raise ValueError(f"got {len(p)} probabilities, {len(class_names)} class names and label={label}; "
                         "pass one row of soft_labels(...)['probs'] and its true class")
    hard = [1.0 if i == int(label) else 0.0 for i in range(len(p))]
    return pd.DataFrame({"class": list(class_names) * 2, "target": ["one-hot label"] * len(p) +
                         [f"soft label (T={T:g})"] * len(p), "probability": hard + p})


def loss_anatomy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
                 T: float, alpha: float) -> dict:
    """The KD objective split into its parts for some examples. Introduced in notebook 03_kl_loss.

    Returns floats: cross_entropy (hard term), kd (T^2 * KL, soft term), their weighted versions
    (1 - alpha) * cross_entropy and alpha * kd, and total = their sum (== distillation_loss).
    """
    parts = losses.distillation_loss(student_logits.float(), teacher_logits.float(), y, T=T, alpha=alpha,
                                     return_parts=True)
    ce, kd = float(parts["cross_entropy"]), float(parts["kd"])
    return {"cross_entropy": ce, "kd": kd, "weighted_cross_entropy": (1 - alpha) * ce,
            "weighted_kd": alpha * kd, "total": float(parts["total"])}


def loss_vs_alpha(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, T: float,
                  alphas: Sequence[float] | None = None) -> pd.DataFrame:
    """Weighted hard, soft and total loss for alpha from 0 to 1: the trade-off as a curve. Notebook 03_kl_loss."""
    alphas = list(np.linspace(0, 1, 21)) if alphas is None else list(alphas)
    rows = [{"alpha": float(a), **loss_anatomy(student_logits, teacher_logits, y, T, float(a))} for a in alphas]
    return pd.DataFrame(rows)


def untrained_student(dataset: str, width: int, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised MLP student (seeded): the loss anatomy's starting point. Notebook 03_kl_loss."""
    config.seed_everything(seed)
    return make_student(dataset, "mlp", width).eval()


def student_logits(student: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A student's logits on a few images (eval mode, CPU)."""
    return predict_logits(student, x)


def grid_summary(table: pd.DataFrame, spread: pd.DataFrame | None) -> dict:
    """Span of the heatmap vs the seed spread, in accuracy points: is what the class sees more than noise?"""
    if table.empty:
        raise ValueError("the grid table is empty; fill it with grid.load_or_run(rec) first")
    span = 100.0 * float(table["accuracy"].max() - table["accuracy"].min())
    if spread is None or spread.empty:
        return {"span": span, "spread": float("nan"), "ratio": float("nan"), "spread_cells": ""}
    worst = spread.loc[spread["accuracy_std"].idxmax()]
    noise = 100.0 * float(worst["accuracy_std"])
    cells = ", ".join(f"T={r.T:g}, alpha={r.alpha:g}: {100 * r.accuracy_std:.2f}" for r in spread.itertuples())
    return {"span": span, "spread": noise, "ratio": span / noise if noise > 0 else float("inf"),
            "spread_cells": f"std in points over {int(worst['seeds'])} seeds at {cells}"}


def kd_source() -> str:
    """The library's own loss code, shown in the app so students see exactly what is optimised."""
    return inspect.getsource(losses.kd_loss) + "\n\n" + inspect.getsource(losses.distillation_loss)


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes once (cheaper than st.pyplot's 200 dpi, and cacheable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


SHAPE_WORDS = ("shape", "size mismatch", "mat1 and mat2", "must match the size", "expected input")


def explain_error(exc: BaseException) -> str:
    """One message for the page: what failed and the fix that fits this error (and this mode), for the panel guards."""
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, DataUnavailableError):
        return f"The dataset is not available.\n\n{exc}\n\nFix: run `make data` (or `python -m kd_lessons data`)."
    if isinstance(exc, CorruptFileError):
        return (f"A cached file is corrupt: {exc}\n\nFix: reload the page (it is rebuilt), or delete "
                f"{config.cache_dir()} to start clean.")
    smaller = "pick a smaller student or dataset" + ("" if config.is_quick() else ", or restart with KD_QUICK=1")
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return f"Out of memory ({what}).\n\nFix: {smaller}, and close other programs using the memory."
    if isinstance(exc, (RuntimeError, ValueError)) and any(w in str(exc) for w in SHAPE_WORDS):
        return (f"{what}\n\nThe model and the data disagree on a shape (a bug, not a setting): pick the dataset "
                f"again so the student is rebuilt for it; if it persists, report it with this message.")
    if isinstance(exc, ValueError):
        return f"{what}\n\nFix: the message above says which value to change."
    hint = "run `make test-fast` to check the install" + ("" if config.is_quick() else
                                                         ", or restart with KD_QUICK=1 for small, fast settings")
    return f"{what}\n\nFix: check the message above; {hint}."
