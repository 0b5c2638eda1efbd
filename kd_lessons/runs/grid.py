"""Student accuracy over a grid of T and alpha, trained once per cell and cached on disk.

Introduced in notebook 04_distill_mnist (its T x alpha heatmap); the Streamlit app's accuracy panel
draws the same table and adds its live runs to it. The setting is `runs.few_labels`: a small MLP
student with a few labelled images and a teacher that labels the rest; alpha = 0 ignores the
teacher, so that cell is the student trained on its labelled images alone. Everything a cell's
number depends on besides (T, alpha) is the grid's `recipe` (the few-labels recipe plus the
teacher's recipe key); it names the cache file. A corrupt or foreign file is reported with a
`CacheWarning`, deleted and rebuilt. `spread` measures the seed-to-seed spread beside it.

    from kd_lessons.runs import grid
    rec = grid.recipe("mnist")
    df = grid.load_or_run(rec, Ts=[1, 4, 16], alphas=[0.0, 0.5, 0.9])   # columns T, alpha, accuracy, ...
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from kd_lessons import cache, config
from kd_lessons.data import check_name
from kd_lessons.losses import check_alpha, check_T
from kd_lessons.recipes import check_recipe
from kd_lessons.runs import few_labels
from kd_lessons.runs.few_labels import FewLabelsRecipe
from kd_lessons.teachers import get_teacher
from kd_lessons.teachers import recipe as teacher_recipe
from kd_lessons.train import TrainOptions

__all__ = ["COLUMNS", "GridRecipe", "recipe", "default_grid", "path", "load", "load_or_run", "add_result", "run_one",
           "history_for", "baseline", "per_seed", "spread", "SPREAD_CELLS"]

COLUMNS = ["T", "alpha", "accuracy", "errors", "seconds", "source"]
_FORMAT = 2


@dataclass(frozen=True)
class GridRecipe(FewLabelsRecipe):
    """A few-labels recipe plus the teacher's recipe key (None: the course teacher of `dataset`). Notebook 04."""

    teacher: str | None = None

    def __post_init__(self):
        if self.teacher is None:
            object.__setattr__(self, "teacher", teacher_recipe(check_name(self.dataset)).key)
        super().__post_init__()

    def replace(self, **changes) -> GridRecipe:
        """A validated copy; a new dataset without a teacher key gets its own course teacher's key."""
        if "dataset" in changes and "teacher" not in changes:
            changes["teacher"] = None
        return super().replace(**changes)


def recipe(dataset: str = "mnist", **overrides) -> GridRecipe:
    """Everything a grid cell depends on besides (T, alpha), with quick/full defaults. Notebook 04_distill_mnist."""
    return GridRecipe(dataset=dataset, **check_recipe(GridRecipe, overrides))


def default_grid() -> tuple[list[float], list[float]]:
    """(Ts, alphas) for the classroom heatmap: 6 x 4 in full mode, 2 x 2 in quick mode. Notebook 04_distill_mnist."""
    Ts = config.pick([0.5, 1.0, 2.0, 4.0, 8.0, 20.0], [1.0, 4.0])
    alphas = config.pick([0.0, 0.5, 0.9, 1.0], [0.0, 0.9])
    return Ts, alphas


SPREAD_CELLS = ((4.0, 0.9), (4.0, 0.0))  # the default setting and the no-teacher baseline


def path(rec: GridRecipe) -> Path:
    """The cache file of one grid recipe (cache kind "sweeps"); a new teacher recipe starts a new table."""
    return cache.path("sweeps", f"{rec.dataset}_w{rec.student_width}_{rec.mode}_{rec.key}.pt")


def _cell(T, alpha) -> str:
    return f"T={check_T(T):g},alpha={check_alpha(alpha):g}"


def _meta(rec: GridRecipe) -> dict:
    return {"kind": "kd_lessons.grid", "format": _FORMAT, "recipe": rec.key}


def _read(rec: GridRecipe) -> tuple[list[dict], dict]:
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


def load(rec: GridRecipe) -> pd.DataFrame:
    """Every cached result of a recipe (grid and live runs), never training. Notebook 04_distill_mnist.

    Columns T, alpha, accuracy, errors, seconds, source ("grid", "grid (alpha=0 shared)" or "live").
    """
    return _frame(_read(rec)[0])


def history_for(rec: GridRecipe, T: float, alpha: float) -> dict | None:
    """The per-epoch history (train_loss, val_accuracy) stored with a cached result, or None."""
    return _read(rec)[1].get(_cell(T, alpha))


def run_one(rec: GridRecipe, T: float, alpha: float, progress: bool = False,
            callback: Callable | None = None) -> tuple[object, dict, dict]:
    """Train one student at (T, alpha); alpha = 0 is the student on its labelled images alone. Notebook 04.

    Returns (student, row, history): row holds T, alpha, accuracy, errors (full test set), seconds,
    source="live"; history has val_accuracy at up to ~20 points (val_step). callback(epoch, history) runs
    after each epoch.
    """
    check_T(T)  # fail fast on a bad T or alpha, before the teacher loads
    check_alpha(alpha)
    teacher, _ = get_teacher(rec.dataset, options=TrainOptions(progress=False))
    method = "scratch" if float(alpha) == 0.0 else "distilled"
    runs = few_labels.study(rec, teacher, [rec.seed], T, alpha,
                            names=(method,), val=True, options=TrainOptions(progress=progress, callback=callback))
    r = runs.table.iloc[0]
    row = {"T": float(T), "alpha": float(alpha), "accuracy": float(r.accuracy), "errors": int(r.errors),
           "seconds": float(r.seconds), "source": "live"}
    return runs.students[(method, rec.seed)], row, runs.histories[(method, rec.seed)]


def _cached_baseline(rec: GridRecipe) -> tuple[dict, dict] | None:
    rows, histories = _read(rec)
    return next(((r, histories[_cell(r["T"], 0.0)]) for r in rows
                 if r["alpha"] == 0.0 and histories.get(_cell(r["T"], 0.0)) is not None), None)


def baseline(rec: GridRecipe) -> tuple[dict, dict | None]:
    """(row, history) of the from-scratch student (alpha = 0): the cached one, else trained and stored now."""
    found = _cached_baseline(rec)
    if found is not None:
        return found
    with _training(rec):
        found = _cached_baseline(rec)  # another process may have trained it meanwhile
        if found is not None:
            return found
        _, row, history = run_one(rec, 1.0, 0.0)
        add_result(rec, row, history)
    return row, _small(history)


def _small(history: dict) -> dict:
    return {k: [float(v) for v in history.get(k, [])]
            for k in ("epoch", "step", "train_loss", "val_accuracy", "val_step")}


def _writing(rec: GridRecipe):
    """The grid file's cache.lock, held briefly to read-modify-write it (app threads, other processes)."""
    return cache.lock(path(rec), f"the {rec.dataset} T x alpha grid file")


def _training(rec: GridRecipe):
    """A second lock beside the grid file, held while a cell trains, so that writers wait only for writes."""
    cells = path(rec)
    return cache.lock(cells.with_name(cells.name + ".cells"), f"a cell of the {rec.dataset} T x alpha grid")


def add_result(rec: GridRecipe, row: dict, history: dict | None = None) -> pd.DataFrame:
    """Store one result row (from run_one) in the recipe's cache, replacing the same cell; return the table.

    Introduced in notebook 04_distill_mnist; the app calls it after "train this student now".
    """
    missing = set(COLUMNS) - set(row)
    if missing:
        raise ValueError(f"row lacks {sorted(missing)}; pass the row run_one returns")
    name = _cell(row["T"], row["alpha"])
    if not (isinstance(row["accuracy"], (int, float)) and 0.0 <= row["accuracy"] <= 1.0):
        raise ValueError(f"accuracy={row['accuracy']!r}: pass a fraction in [0, 1] such as 0.97")
    with _writing(rec):
        rows, histories = _read(rec)
        rows = [r for r in rows if _cell(r["T"], r["alpha"]) != name] + [{c: row[c] for c in COLUMNS}]
        if history is not None:
            histories[name] = _small(history)
        cache.save_verified({"rows": rows, "histories": histories}, path(rec), _meta(rec))
    return _frame(rows)


def load_or_run(rec: GridRecipe, Ts: Sequence[float] | None = None, alphas: Sequence[float] | None = None,
                progress: bool = True, callback: Callable | None = None, include_extra: bool = False) -> pd.DataFrame:
    """The T x alpha table of student test accuracy, training only the cells not cached yet. Notebook 04_distill_mnist.

    Ts/alphas default to `default_grid()`. Each finished cell is saved at once, so an interrupted
    grid resumes; cells train one at a time under a `cache.lock` beside the grid file, so two
    processes (or threads) filling the same grid share its cells instead of training each twice.
    alpha=0 ignores the teacher (pure cross-entropy), so it is trained once and shared by every T.
    callback(done, total, row) runs after each cell (e.g. a Streamlit progress bar).
    include_extra=True adds cached off-grid live results.
    """
    default_Ts, default_alphas = default_grid()
    Ts = [float(t) for t in (default_Ts if Ts is None else Ts)]
    alphas = [float(a) for a in (default_alphas if alphas is None else alphas)]
    if not Ts or not alphas:
        raise ValueError(f"Ts={Ts} and alphas={alphas} must both be non-empty lists")
    grid = {_cell(T, a) for T in Ts for a in alphas}
    have = {_cell(r["T"], r["alpha"]) for r in _read(rec)[0]}
    todo = [(T, a) for a in alphas for T in Ts if _cell(T, a) not in have]
    bar = tqdm(total=len(todo), desc=f"grid {rec.dataset}", disable=not progress or not todo)
    for done, (T, alpha) in enumerate(todo, 1):
        with _training(rec):  # one cell at a time; read again: another process (or thread) may have filled it
            rows, histories = _read(rec)
            have = {_cell(r["T"], r["alpha"]): r for r in rows}
            row = have.get(_cell(T, alpha))
            if row is None:
                base = next((k for k, r in have.items() if r["alpha"] == 0.0), None) if alpha == 0.0 else None
                if base is not None:
                    row, history = {**have[base], "T": T, "source": "grid (alpha=0 shared)"}, histories.get(base)
                else:
                    _, row, history = run_one(rec, T, alpha)
                    row["source"] = "grid"
                add_result(rec, row, history)
        bar.update(1)
        if callback is not None:
            callback(done, len(todo), row)
    bar.close()
    df = load(rec)
    if not include_extra:
        df = df[[_cell(T, a) in grid for T, a in zip(df["T"], df["alpha"])]].reset_index(drop=True)
    return df


def per_seed(rec: GridRecipe, cells: Sequence[tuple[float, float]], seeds: Sequence[int] = (0, 1, 2),
             progress: bool = False) -> pd.DataFrame:
    """One row per (cell, seed), the rows `runs.seeds.paired_differences` pairs: cell A vs B. Notebook 04.

    Trains (once, cached like any cell) each (T, alpha) of `cells` with the recipe under every seed (a seed picks
    the labelled images and the initialisation). Columns T, alpha, method ("T=4,alpha=0.9"), seed, accuracy, errors.
    """
    if len(seeds) < 2:
        raise ValueError(f"seeds={list(seeds)}: a spread needs at least two seeds, e.g. (0, 1, 2)")
    rows = []
    for T, alpha in cells:
        for s in seeds:
            r = load_or_run(rec.replace(seed=int(s)), [T], [alpha], progress=progress).iloc[0]
            rows.append({"T": float(T), "alpha": float(alpha), "method": _cell(T, alpha), "seed": int(s),
                         "accuracy": float(r.accuracy), "errors": int(r.errors)})
    return pd.DataFrame(rows)


def spread(rec: GridRecipe, cells: Sequence[tuple[float, float]], seeds: Sequence[int] = (0, 1, 2),
           progress: bool = False) -> pd.DataFrame:
    """Seed-to-seed spread at a few cells: is a difference in the heatmap larger than noise? Notebook 04.

    The cells of `per_seed` summarised: T, alpha, accuracy_mean, accuracy_std, errors_mean, errors_std, seeds.
    """
    rows = per_seed(rec, cells, seeds, progress)
    g = rows.groupby(["T", "alpha"], sort=False)
    out = g.agg(accuracy_mean=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
                errors_mean=("errors", "mean"), errors_std=("errors", "std")).reset_index()
    return out.assign(seeds=len(seeds))
