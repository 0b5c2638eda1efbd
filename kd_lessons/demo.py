"""The classroom app's logic: datasets on offer, temperatures, soft labels, loss anatomy, the heatmap table.

Introduced in notebook 00_start_here (the app tour). `app.py` holds only widgets and layout and calls
these functions, so everything the app shows is computed here and tested without a browser.
"""
from __future__ import annotations

import inspect
import io
import math
import time
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from tqdm import std as tqdm_std

from kd_lessons import config, losses, sources
from kd_lessons.data import DataUnavailableError, load_tensors, stratified_subset
from kd_lessons.models import make_student
from kd_lessons.storage import CorruptFileError
from kd_lessons.sweep import teacher_logits
from kd_lessons.train import predict_logits

__all__ = ["DATASET_LABELS", "STUDENT_WIDTHS", "available_datasets", "temperatures", "nearest", "test_pool",
           "pick_examples", "soft_labels", "soft_label_frame", "loss_anatomy", "loss_vs_alpha", "untrained_student",
           "student_logits", "heatmap_table", "kd_source", "figure_png", "explain_error", "submit",
           "wait_with_progress", "STARTER_RECIPES", "needs_starter", "start_teachers", "progress_text"]

DATASET_LABELS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
STUDENT_WIDTHS = (30, 100, 300, 800)


def available_datasets() -> list[str]:
    """MNIST and Fashion-MNIST always (fetched on demand); CIFAR-10 only when its files are already here."""
    names = ["mnist", "fashion_mnist"]
    cifar_cached = (config.cache_dir() / "tensors" / "cifar10_test.pt").is_file()
    if cifar_cached or (sources.raw_folder("cifar10") / "test_batch").is_file():
        names.append("cifar10")
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
    logits = teacher_logits(teacher, x, f"{dataset}_testpool_n{size}")
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
    ce, kd = float(parts["hard"]), float(parts["soft"])
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


def heatmap_table(df: pd.DataFrame, T: float, alpha: float, value: str = "accuracy"):
    """Pivot a sweep (rows alpha, columns T) and find the cell to mark for the current setting.

    Introduced in notebook 04_distill_mnist. Returns (values [rows, cols], row_labels, col_labels,
    mark (row, col), exact) where exact says whether (T, alpha) itself was trained or the nearest cell
    is marked instead.
    """
    if df.empty:
        raise ValueError("the sweep table is empty; run sweep.load_or_run(...) first")
    table = df.pivot_table(index="alpha", columns="T", values=value, aggfunc="last").sort_index().sort_index(axis=1)
    Ts, alphas = [float(t) for t in table.columns], [float(a) for a in table.index]
    col = Ts.index(nearest(T, Ts))
    row = alphas.index(nearest(alpha, alphas, log=False))
    exact = math.isclose(Ts[col], T) and math.isclose(alphas[row], alpha) and bool(np.isfinite(table.iat[row, col]))
    return table.to_numpy(dtype=float), [f"{a:g}" for a in alphas], [f"{t:g}" for t in Ts], (row, col), exact


def kd_source() -> str:
    """The library's own loss code, shown in the app so students see exactly what is optimised."""
    return inspect.getsource(losses.kd_loss) + "\n\n" + inspect.getsource(losses.distillation_loss)


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes once (cheaper than st.pyplot's 200 dpi, and cacheable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def explain_error(exc: BaseException) -> str:
    """One message for the page: what failed and how to fix it, for the app's per-panel guards."""
    if isinstance(exc, DataUnavailableError):
        return f"The dataset is not available.\n\n{exc}\n\nFix: run `make data` (or `python -m kd_lessons data`)."
    if isinstance(exc, CorruptFileError):
        return (f"A cached file is corrupt: {exc}\n\nFix: reload the page (it is rebuilt), or delete "
                f"{config.cache_dir()} to start clean.")
    if isinstance(exc, MemoryError):
        return "Out of memory. Fix: pick a smaller student, or run with KD_QUICK=1."
    return (f"{type(exc).__name__}: {exc}\n\nFix: check the message above; run `make test-fast` to check the "
            f"install, or restart with KD_QUICK=1 for small, fast settings.")


def submit(fn: Callable, *args, **kwargs) -> Future:
    """Run fn in a daemon thread, so a page rerun can re-attach to a teacher still training instead of restarting it.

    Daemon: stopping the server never waits for a training run (checkpoints are written atomically).
    """
    future: Future = Future()

    def work():
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    threading.Thread(target=work, name="kd-demo-job", daemon=True).start()
    return future


# Small teacher recipes (zoo.recipe overrides) for a fast first launch on a CPU: the app shows soft labels
# from this "starter" teacher (1 epoch on a subset) while the mode's own teacher trains in the background.
STARTER_RECIPES = {"mnist": {"width": 16, "num_epochs": 1, "augment": "none", "n_train": 10000},
                   "fashion_mnist": {"width": 16, "num_epochs": 1, "augment": "none", "n_train": 10000},
                   "cifar10": {"num_epochs": 1, "n_train": 5000}}


def needs_starter(dataset: str) -> bool:
    """True on a CPU while the teacher is not cached yet: training it takes minutes (full mode: much longer)."""
    from kd_lessons.zoo import teacher_info

    return config.get_device().type == "cpu" and teacher_info(dataset) is None


def start_teachers(dataset: str, get_teacher: Callable, starter: bool) -> dict[str, Future | None]:
    """One daemon thread: the starter teacher first (if asked), then the full one; a future for each.

    get_teacher is zoo.get_teacher (passed in so tests can use a stand-in). Returns {"full": Future,
    "starter": Future or None}.
    """
    jobs = {"starter": Future() if starter else None, "full": Future()}

    def work():
        for kind in ("starter", "full"):
            future = jobs[kind]
            if future is None or not future.set_running_or_notify_cancel():
                continue
            try:
                kwargs = {"recipe_override": STARTER_RECIPES[dataset]} if kind == "starter" else {}
                future.set_result(get_teacher(dataset, **kwargs))
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    threading.Thread(target=work, name=f"kd-teachers-{dataset}", daemon=True).start()
    return jobs


def progress_text(desc: str | None = "fit") -> str:
    """'fit: step 120/469' for the newest open tqdm bar, or '' when none is running."""
    bar = _running_bar(desc)
    return "" if bar is None else f"{bar.desc}: step {bar.n}/{bar.total}"


def _running_bar(desc: str | None):
    """The newest live tqdm bar (e.g. train.fit's "fit" bar), read from tqdm's own registry of open bars."""
    bars = [b for b in list(tqdm_std.tqdm._instances) if b.total and (desc is None or b.desc.startswith(desc))]
    return max(bars, key=lambda b: b.start_t, default=None)


def wait_with_progress(job: Future, on_progress: Callable[[float | None, str], None], desc: str | None = "fit",
                       poll_s: float = 0.5):
    """Wait for a job, calling on_progress(fraction or None, text) from this thread; return its result.

    The fraction comes from the job's tqdm bar (steps done / total), so long training shows real
    progress in the app without the library knowing about Streamlit; None while no bar is open.
    """
    start = time.perf_counter()
    while True:
        try:
            return job.result(timeout=poll_s)
        except FutureTimeout:
            pass
        bar, elapsed = _running_bar(desc), time.perf_counter() - start
        if bar is None:
            on_progress(None, f"{elapsed:.0f} s")
        else:
            on_progress(min(bar.n / bar.total, 1.0), f"{bar.desc}: step {bar.n}/{bar.total}, {elapsed:.0f} s")
