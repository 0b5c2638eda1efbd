"""Student accuracy over a grid of T and alpha, trained once and cached on disk.

Introduced in notebook 04_distill_mnist (its T x alpha heatmap); the Streamlit app's Accuracy panel
draws the same table and adds its live runs to it. One cache file per setting (dataset, student
width, epochs, training-set size, seed, quick/full), written atomically with a checksum; a corrupt
or foreign file is reported with a `SweepCacheWarning`, deleted and rebuilt.

    from kd_lessons import sweep
    df = sweep.load_or_run("mnist", Ts=[1, 4, 16], alphas=[0.0, 0.5, 0.9])  # columns T, alpha, accuracy, ...
    table = df.pivot(index="alpha", columns="T", values="accuracy")
"""
from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from kd_lessons import config
from kd_lessons.data import load_tensors, stratified_subset
from kd_lessons.models import make_student
from kd_lessons.storage import CorruptFileError, load_verified, save_verified
from kd_lessons.train import distill, evaluate, predict_logits

__all__ = ["COLUMNS", "SweepCacheWarning", "SweepSettings", "settings", "default_grid", "sweep_path",
           "load", "load_or_run", "add_result", "run_one", "history_for", "teacher_logits", "clear_memo"]

COLUMNS = ["T", "alpha", "accuracy", "errors", "seconds", "source"]
_FORMAT = 1
_MEMO: dict[tuple, dict] = {}  # per-process training data + teacher logits, keyed by setting


class SweepCacheWarning(UserWarning):
    """A sweep cache file was corrupt or from another setting and has been deleted to be rebuilt."""


@dataclass(frozen=True)
class SweepSettings:
    """Everything a sweep's numbers depend on besides (T, alpha); it names the cache file."""

    dataset: str
    student_width: int
    num_epochs: int
    n_train: int
    seed: int
    lr: float
    batch_size: int
    mode: str  # "quick" or "full": quick teachers differ, so their sweeps must not mix


def settings(dataset: str, student_width: int = 100, num_epochs: int | None = None, seed: int = 0,
             n_train: int | None = None) -> SweepSettings:
    """Fill quick/full defaults (training subset, epochs) and check the inputs. Notebook 04_distill_mnist."""
    if dataset not in ("mnist", "fashion_mnist", "cifar10"):
        raise ValueError(f"dataset={dataset!r}: use 'mnist', 'fashion_mnist' or 'cifar10'")
    num_epochs = config.pick(5, 2) if num_epochs is None else num_epochs
    n_train = config.pick(10000, 1000) if n_train is None else n_train
    for name, value in (("student_width", student_width), ("num_epochs", num_epochs), ("n_train", n_train)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: pass a positive integer")
    return SweepSettings(dataset, int(student_width), int(num_epochs), int(n_train), int(seed), 3e-3, 128,
                         config.pick("full", "quick"))


def default_grid() -> tuple[list[float], list[float]]:
    """(Ts, alphas) for the classroom heatmap: 6 x 6 in full mode, 3 x 2 in quick mode. Notebook 04_distill_mnist."""
    Ts = config.pick([0.5, 1.0, 2.0, 4.0, 8.0, 20.0], [1.0, 4.0, 16.0])
    alphas = config.pick([0.0, 0.25, 0.5, 0.75, 0.9, 1.0], [0.0, 0.9])
    return Ts, alphas


def sweep_path(s: SweepSettings) -> Path:
    """The cache file of one setting, under config.cache_dir()/sweeps/; a new teacher recipe starts a new table."""
    from kd_lessons.zoo import checkpoint_path  # late, as in _data: the recipe hash names the teacher
    teacher = checkpoint_path(s.dataset).stem.rsplit("-", 1)[-1]
    return (config.cache_dir() / "sweeps" /
            f"{s.dataset}_w{s.student_width}_e{s.num_epochs}_n{s.n_train}_s{s.seed}_{s.mode}_t{teacher}.pt")


def _meta(s: SweepSettings) -> dict:
    return {"kind": "kd_lessons.sweep", "format": _FORMAT, **asdict(s)}


def _check_Ta(T, alpha) -> tuple[float, float]:
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not (math.isfinite(T) and T > 0):
        raise ValueError(f"T={T!r}: pass a finite temperature > 0 such as T=4.0")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r}: pass the soft-term weight, a number in [0, 1] such as alpha=0.9")
    return float(T), float(alpha)


def _key(T: float, alpha: float) -> str:
    return f"T={float(T):g},alpha={float(alpha):g}"


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c != "source" else "object") for c in COLUMNS})


def _read(s: SweepSettings) -> tuple[list[dict], dict]:
    """Rows and histories from disk; ([], {}) when absent; corrupt files are warned about and deleted."""
    path = sweep_path(s)
    try:
        blob = load_verified(path, _meta(s))
        rows, histories = blob["rows"], blob["histories"]
        if not isinstance(rows, list) or not isinstance(histories, dict) or \
                any(not isinstance(r, dict) or set(COLUMNS) - set(r) for r in rows):
            raise CorruptFileError(f"{path} does not hold a sweep table (rows with {COLUMNS})")
        return rows, histories
    except FileNotFoundError:
        return [], {}
    except (CorruptFileError, KeyError, TypeError) as exc:
        warnings.warn(f"sweep cache {path} was unusable ({exc}); it was deleted and will be recomputed",
                      SweepCacheWarning, stacklevel=3)
        for p in (path, path.with_name(path.name + ".sha256.json")):
            p.unlink(missing_ok=True)
        return [], {}


def _write(s: SweepSettings, rows: list[dict], histories: dict) -> None:
    save_verified({"rows": rows, "histories": histories}, sweep_path(s), _meta(s))


def _frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return _empty()
    df = pd.DataFrame(rows)[COLUMNS]
    return df.sort_values(["alpha", "T"], kind="stable").reset_index(drop=True)


def load(dataset: str, student_width: int = 100, num_epochs: int | None = None, seed: int = 0,
         n_train: int | None = None) -> pd.DataFrame:
    """Every cached result of a setting (grid and live runs), never training. Notebook 04_distill_mnist.

    Columns T, alpha, accuracy, errors, seconds, source ("sweep", "sweep (alpha=0 shared)" or "live").
    An empty frame when nothing is cached; a corrupt cache warns (SweepCacheWarning) and is deleted.
    """
    return _frame(_read(settings(dataset, student_width, num_epochs, seed, n_train))[0])


def history_for(dataset: str, T: float, alpha: float, student_width: int = 100, num_epochs: int | None = None,
                seed: int = 0, n_train: int | None = None) -> dict | None:
    """The per-epoch history (train_loss, val_accuracy) stored with a cached result, or None."""
    s = settings(dataset, student_width, num_epochs, seed, n_train)
    return _read(s)[1].get(_key(*_check_Ta(T, alpha)))


def _fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the state_dict: cached logits are tied to the exact teacher that made them."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_logits(teacher: torch.nn.Module, x: torch.Tensor, tag: str) -> torch.Tensor:
    """The teacher's logits for x, cached on disk per (tag, teacher weights): computed once. Notebook 04_distill_mnist.

    `tag` names the inputs (e.g. "mnist_train_n1000_s0"); the teacher's weight hash guards against a
    retrained teacher, and a corrupt file is recomputed.
    """
    fp = _fingerprint(teacher)
    path = config.cache_dir() / "logits" / f"{tag}_{fp}.pt"
    meta = {"kind": "kd_lessons.teacher_logits", "tag": tag, "teacher": fp, "rows": len(x)}
    try:
        logits = load_verified(path, meta)
        if isinstance(logits, torch.Tensor) and logits.dim() == 2 and len(logits) == len(x):
            return logits
    except (FileNotFoundError, CorruptFileError):
        pass
    logits = predict_logits(teacher, x)
    save_verified(logits, path, meta)
    return logits


def _data(s: SweepSettings) -> dict:
    """Training subset, its teacher logits and the full test set, memoised per process."""
    key = (s.dataset, s.n_train, s.seed, s.mode)
    if key not in _MEMO:
        from kd_lessons.zoo import get_teacher  # imported late: zoo trains teachers, which sweeps rarely need

        x_all, y_all = load_tensors(s.dataset, train=True)
        x, y = stratified_subset(x_all, y_all, s.n_train, seed=s.seed)
        x_test, y_test = load_tensors(s.dataset, train=False)
        logits = teacher_logits(get_teacher(s.dataset), x, f"{s.dataset}_train_n{s.n_train}_s{s.seed}_{s.mode}")
        _MEMO[key] = {"x": x, "y": y, "teacher_logits": logits, "x_test": x_test, "y_test": y_test}
    return _MEMO[key]


def clear_memo() -> None:
    """Forget the in-process training data and teacher logits (e.g. after the teacher was retrained)."""
    _MEMO.clear()


def run_one(dataset: str, T: float, alpha: float, student_width: int = 100, num_epochs: int | None = None,
            seed: int = 0, n_train: int | None = None, progress: bool = False,
            callback: Callable | None = None) -> tuple[torch.nn.Module, dict, dict]:
    """Distil one MLP student at (T, alpha) from cached teacher logits; alpha=0 is the from-scratch baseline.

    Introduced in notebook 04_distill_mnist. Returns (student, result, history): result holds T, alpha,
    accuracy, errors (on the full test set), seconds, source="live"; history is train.distill's, with
    val_accuracy per epoch on the test set. callback(epoch, history) runs after each epoch.
    """
    T, alpha = _check_Ta(T, alpha)
    s = settings(dataset, student_width, num_epochs, seed, n_train)
    d = _data(s)
    config.seed_everything(s.seed)
    student = make_student(s.dataset, "mlp", s.student_width)
    start = time.perf_counter()
    history = distill(student, d["x"], d["y"], teacher_logits=d["teacher_logits"], T=T, alpha=alpha,
                      num_epochs=s.num_epochs, lr=s.lr, batch_size=s.batch_size, x_val=d["x_test"],
                      y_val=d["y_test"], seed=s.seed, progress=progress, callback=callback)
    seconds = time.perf_counter() - start
    result = evaluate(student, d["x_test"], d["y_test"])
    row = {"T": T, "alpha": alpha, "accuracy": result["accuracy"], "errors": result["errors"],
           "seconds": seconds, "source": "live"}
    return student, row, history


def _small_history(history: dict) -> dict:
    return {k: [float(v) for v in history.get(k, [])] for k in ("epoch", "train_loss", "val_accuracy")}


def add_result(dataset: str, T: float, alpha: float, accuracy: float, errors: int, seconds: float,
               student_width: int = 100, num_epochs: int | None = None, seed: int = 0,
               n_train: int | None = None, source: str = "live", history: dict | None = None) -> pd.DataFrame:
    """Store one (T, alpha) result in the setting's cache (replacing the same cell); return the table.

    Introduced in notebook 04_distill_mnist; the app calls it after "train this student now". Pass
    the same setting arguments the run used, so the result joins the right sweep.
    """
    T, alpha = _check_Ta(T, alpha)
    if not (isinstance(accuracy, (int, float)) and 0.0 <= accuracy <= 1.0):
        raise ValueError(f"accuracy={accuracy!r}: pass a fraction in [0, 1] such as 0.97")
    s = settings(dataset, student_width, num_epochs, seed, n_train)
    rows, histories = _read(s)
    rows = [r for r in rows if _key(r["T"], r["alpha"]) != _key(T, alpha)]
    rows.append({"T": T, "alpha": alpha, "accuracy": float(accuracy), "errors": int(errors),
                 "seconds": float(seconds), "source": str(source)})
    if history is not None:
        histories[_key(T, alpha)] = _small_history(history)
    _write(s, rows, histories)
    return _frame(rows)


def load_or_run(dataset: str, Ts: Sequence[float] | None = None, alphas: Sequence[float] | None = None,
                student_width: int = 100, num_epochs: int | None = None, seed: int = 0,
                progress: bool = True, callback: Callable | None = None, n_train: int | None = None,
                include_extra: bool = False) -> pd.DataFrame:
    """The T x alpha table of student test accuracy, training only the cells not cached yet.

    Introduced in notebook 04_distill_mnist. Ts/alphas default to `default_grid()`. Each finished cell
    is saved at once, so an interrupted sweep resumes. alpha=0 ignores the teacher (pure
    cross-entropy), so it is trained once and shared by every T (source "sweep (alpha=0 shared)").
    `progress` shows a tqdm bar; callback(done, total, row) runs after each cell (e.g. a Streamlit
    progress bar). Returns columns T, alpha, accuracy, errors, seconds, source for the grid cells
    (plus cached off-grid live results when include_extra=True).
    """
    default_Ts, default_alphas = default_grid()
    Ts = [float(t) for t in (default_Ts if Ts is None else Ts)]
    alphas = [float(a) for a in (default_alphas if alphas is None else alphas)]
    if not Ts or not alphas:
        raise ValueError(f"Ts={Ts} and alphas={alphas} must both be non-empty lists")
    for T in Ts:
        for alpha in alphas:
            _check_Ta(T, alpha)
    s = settings(dataset, student_width, num_epochs, seed, n_train)
    rows, histories = _read(s)
    have = {_key(r["T"], r["alpha"]): r for r in rows}
    todo = [(T, a) for a in alphas for T in Ts if _key(T, a) not in have]
    bar = tqdm(total=len(todo), desc=f"sweep {dataset}", disable=not progress or not todo)
    for done, (T, alpha) in enumerate(todo, 1):
        base_key = next((k for k, r in have.items() if r["alpha"] == 0.0), None) if alpha == 0.0 else None
        if base_key is not None:
            row = {**have[base_key], "T": T, "source": "sweep (alpha=0 shared)"}
            if base_key in histories:
                histories[_key(T, alpha)] = histories[base_key]
        else:
            _, row, history = run_one(dataset, T, alpha, s.student_width, s.num_epochs, s.seed, s.n_train)
            row["source"] = "sweep"
            histories[_key(T, alpha)] = _small_history(history)
        rows.append(row)
        have[_key(T, alpha)] = row
        _write(s, rows, histories)
        bar.update(1)
        if callback is not None:
            callback(done, len(todo), row)
    bar.close()
    df = _frame(rows)
    if not include_extra:
        grid = {_key(T, a) for T in Ts for a in alphas}
        df = df[[_key(T, a) in grid for T, a in zip(df["T"], df["alpha"])]].reset_index(drop=True)
    return df
