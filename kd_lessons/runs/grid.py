"""Student accuracy over a grid of T and alpha, trained once per cell and cached on disk.

Introduced in notebook 04_distill_mnist (its T x alpha heatmap); the Streamlit app's accuracy panel
draws the same table and adds its live runs to it. Everything a cell's number depends on besides
(T, alpha) is the grid's `recipe` (dataset, student width, epochs, training-set size, seed, lr,
batch size, mode and the teacher's recipe key); it names the cache file. A corrupt or foreign
file is reported with a `CacheWarning`, deleted and rebuilt.

    from kd_lessons.runs import grid
    rec = grid.recipe("mnist")
    df = grid.load_or_run(rec, Ts=[1, 4, 16], alphas=[0.0, 0.5, 0.9])   # columns T, alpha, accuracy, ...
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from kd_lessons import cache, config
from kd_lessons.data import check_name
from kd_lessons.losses import check_alpha, check_T
from kd_lessons.models import make_student
from kd_lessons.objectives import HintonKD
from kd_lessons.runs.students import load_split, train_students
from kd_lessons.teachers import get_teacher, recipe_key
from kd_lessons.teachers import recipe as teacher_recipe
from kd_lessons.train import TrainOptions

__all__ = ["COLUMNS", "recipe", "default_grid", "path", "load", "load_or_run", "add_result", "run_one", "history_for",
           "baseline"]

COLUMNS = ["T", "alpha", "accuracy", "errors", "seconds", "source"]
_FORMAT = 2


def recipe(dataset: str, student_width: int = 100, num_epochs: int | None = None, seed: int = 0,
           n_train: int | None = None) -> dict:
    """Everything a grid cell depends on besides (T, alpha), with quick/full defaults. Notebook 04_distill_mnist."""
    dataset = check_name(dataset)
    num_epochs = config.pick(5, 2) if num_epochs is None else num_epochs
    n_train = config.pick(10000, 1000) if n_train is None else n_train
    for name, value in (("student_width", student_width), ("num_epochs", num_epochs), ("n_train", n_train)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: pass a positive integer")
    return {"dataset": dataset, "student_width": student_width, "num_epochs": num_epochs, "n_train": n_train,
            "seed": int(seed), "lr": 3e-3, "batch_size": 128, "mode": config.mode(),
            "teacher": recipe_key(teacher_recipe(dataset))}


def default_grid() -> tuple[list[float], list[float]]:
    """(Ts, alphas) for the classroom heatmap: 6 x 6 in full mode, 3 x 2 in quick mode. Notebook 04_distill_mnist."""
    Ts = config.pick([0.5, 1.0, 2.0, 4.0, 8.0, 20.0], [1.0, 4.0, 16.0])
    alphas = config.pick([0.0, 0.25, 0.5, 0.75, 0.9, 1.0], [0.0, 0.9])
    return Ts, alphas


def path(rec: dict) -> Path:
    """The cache file of one grid recipe (cache kind "sweeps"); a new teacher recipe starts a new table."""
    return cache.path("sweeps", f"{rec['dataset']}_w{rec['student_width']}_{rec['mode']}_{cache.key(rec)}.pt")


def _cell(T, alpha) -> str:
    return f"T={check_T(T):g},alpha={check_alpha(alpha):g}"


def _meta(rec: dict) -> dict:
    return {"kind": "kd_lessons.grid", "format": _FORMAT, "recipe": cache.key(rec)}


def _read(rec: dict) -> tuple[list[dict], dict]:
    """Rows and histories from disk; ([], {}) when absent; a corrupt file is warned about and deleted."""
    blob = cache.load_or_none(path(rec), _meta(rec), "grid cache")
    if blob is None:
        return [], {}
    rows, histories = blob.get("rows"), blob.get("histories")
    if not isinstance(rows, list) or not isinstance(histories, dict) or \
            any(not isinstance(r, dict) or set(COLUMNS) - set(r) for r in rows):
        cache.discard(path(rec), f"it does not hold a grid table (rows with {COLUMNS})", "grid cache")
        return [], {}
    return rows, histories


def _frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c != "source" else "object") for c in COLUMNS})
    return pd.DataFrame(rows)[COLUMNS].sort_values(["alpha", "T"], kind="stable").reset_index(drop=True)


def load(rec: dict) -> pd.DataFrame:
    """Every cached result of a recipe (grid and live runs), never training. Notebook 04_distill_mnist.

    Columns T, alpha, accuracy, errors, seconds, source ("grid", "grid (alpha=0 shared)" or "live").
    """
    return _frame(_read(rec)[0])


def history_for(rec: dict, T: float, alpha: float) -> dict | None:
    """The per-epoch history (train_loss, val_accuracy) stored with a cached result, or None."""
    return _read(rec)[1].get(_cell(T, alpha))


def run_one(rec: dict, T: float, alpha: float, progress: bool = False,
            callback: Callable | None = None) -> tuple[object, dict, dict]:
    """Distil one MLP student at (T, alpha); alpha=0 is the from-scratch baseline. Notebook 04_distill_mnist.

    Returns (student, row, history): row holds T, alpha, accuracy, errors (full test set), seconds,
    source="live"; history has val_accuracy per epoch. callback(epoch, history) runs after each epoch.
    """
    name = _cell(T, alpha)
    data = load_split(rec["dataset"], rec["n_train"], seed=rec["seed"])
    teacher, _ = get_teacher(rec["dataset"], options=TrainOptions(progress=False))
    runs = train_students(lambda: make_student(rec["dataset"], "mlp", rec["student_width"]), data,
                          {name: HintonKD(T, alpha)}, [rec["seed"]], teacher=teacher, num_epochs=rec["num_epochs"],
                          lr=rec["lr"], batch_size=rec["batch_size"], val=True,
                          options=TrainOptions(progress=progress, callback=callback))
    r = runs.table.iloc[0]
    row = {"T": float(T), "alpha": float(alpha), "accuracy": float(r.accuracy), "errors": int(r.errors),
           "seconds": float(r.seconds), "source": "live"}
    return runs.students[(name, rec["seed"])], row, runs.histories[(name, rec["seed"])]


def baseline(rec: dict) -> tuple[dict, dict | None]:
    """(row, history) of the from-scratch student (alpha = 0): the cached one, else trained and stored now."""
    rows, histories = _read(rec)
    for r in rows:
        if r["alpha"] == 0.0 and histories.get(_cell(r["T"], 0.0)) is not None:
            return r, histories[_cell(r["T"], 0.0)]
    _, row, history = run_one(rec, 1.0, 0.0)
    add_result(rec, row, history)
    return row, _small(history)


def _small(history: dict) -> dict:
    return {k: [float(v) for v in history.get(k, [])] for k in ("epoch", "train_loss", "val_accuracy")}


def add_result(rec: dict, row: dict, history: dict | None = None) -> pd.DataFrame:
    """Store one result row (from run_one) in the recipe's cache, replacing the same cell; return the table.

    Introduced in notebook 04_distill_mnist; the app calls it after "train this student now".
    """
    missing = set(COLUMNS) - set(row)
    if missing:
        raise ValueError(f"row lacks {sorted(missing)}; pass the row run_one returns")
    name = _cell(row["T"], row["alpha"])
    if not (isinstance(row["accuracy"], (int, float)) and 0.0 <= row["accuracy"] <= 1.0):
        raise ValueError(f"accuracy={row['accuracy']!r}: pass a fraction in [0, 1] such as 0.97")
    rows, histories = _read(rec)
    rows = [r for r in rows if _cell(r["T"], r["alpha"]) != name] + [{c: row[c] for c in COLUMNS}]
    if history is not None:
        histories[name] = _small(history)
    cache.save_verified({"rows": rows, "histories": histories}, path(rec), _meta(rec))
    return _frame(rows)


def load_or_run(rec: dict, Ts: Sequence[float] | None = None, alphas: Sequence[float] | None = None,
                progress: bool = True, callback: Callable | None = None, include_extra: bool = False) -> pd.DataFrame:
    """The T x alpha table of student test accuracy, training only the cells not cached yet. Notebook 04_distill_mnist.

    Ts/alphas default to `default_grid()`. Each finished cell is saved at once, so an interrupted
    grid resumes. alpha=0 ignores the teacher (pure cross-entropy), so it is trained once and shared
    by every T. callback(done, total, row) runs after each cell (e.g. a Streamlit progress bar).
    include_extra=True adds cached off-grid live results.
    """
    default_Ts, default_alphas = default_grid()
    Ts = [float(t) for t in (default_Ts if Ts is None else Ts)]
    alphas = [float(a) for a in (default_alphas if alphas is None else alphas)]
    if not Ts or not alphas:
        raise ValueError(f"Ts={Ts} and alphas={alphas} must both be non-empty lists")
    grid = {_cell(T, a) for T in Ts for a in alphas}
    rows, histories = _read(rec)
    have = {_cell(r["T"], r["alpha"]): r for r in rows}
    todo = [(T, a) for a in alphas for T in Ts if _cell(T, a) not in have]
    bar = tqdm(total=len(todo), desc=f"grid {rec['dataset']}", disable=not progress or not todo)
    for done, (T, alpha) in enumerate(todo, 1):
        base = next((k for k, r in have.items() if r["alpha"] == 0.0), None) if alpha == 0.0 else None
        if base is not None:
            row, history = {**have[base], "T": T, "source": "grid (alpha=0 shared)"}, histories.get(base)
        else:
            _, row, history = run_one(rec, T, alpha)
            row["source"] = "grid"
        add_result(rec, row, history)
        have[_cell(T, alpha)] = row
        histories[_cell(T, alpha)] = history
        bar.update(1)
        if callback is not None:
            callback(done, len(todo), row)
    bar.close()
    df = load(rec)
    if not include_extra:
        df = df[[_cell(T, a) in grid for T, a in zip(df["T"], df["alpha"])]].reset_index(drop=True)
    return df
