"""The app's "Accuracy" tab: the T x alpha heatmap filling in the background, and "train this student now".

Introduced in notebook 00_start_here (the app tour; the experiment is notebook 04_distill_mnist). Values
come in as parameters; the server's jobs, queue, figures and fragments come in `shared`. The heatmap is an
Altair chart drawn in the browser (as the Soft labels tab's bars): the whole grid shows from the start, grey
until a cell is trained, and each cell gets its colour the moment the background job caches it.
"""
from __future__ import annotations

import functools
import math
import time

import altair as alt
import pandas as pd

from kd_lessons import config
from kd_lessons.app import jobs, page, panels
from kd_lessons.app.page import Shared, guarded
from kd_lessons.data import load_tensors
from kd_lessons.datasets import DataUnavailableError
from kd_lessons.runs import grid

__all__ = ["training_images", "grid_caption", "grid_job", "heatmap_frame", "heatmap_chart", "fill_status", "heatmap",
           "render"]

INKS = ["black", "white", "#666666"]  # a cell's number: on a light cell, on a dark one, not trained yet
PREPARE_TIP = ("Tip: `python -m kd_lessons prepare-class` before class trains and caches the whole grid, so the "
               "heatmap is complete when the page opens.")


@functools.lru_cache(maxsize=16)
def _count(dataset: str, data_dir: str, cache_dir: str) -> int:
    return len(load_tensors(dataset, train=True)[1])


def training_images(dataset: str) -> int | None:
    """How many training images the dataset has (None when its files are missing). Notebook 04_distill_mnist."""
    try:
        return _count(dataset, str(config.data_dir()), str(config.cache_dir()))
    except DataUnavailableError:
        return None


def grid_caption(rec: grid.GridRecipe, n_train: int | None) -> str:
    """What one heatmap cell is, in words and the recipe's numbers (the few-labels setting). Notebook 04_distill_mnist.

    n_train: the dataset's training images (training_images), None when unknown.
    """
    w, n = rec.student_width, rec.n_labeled
    if rec.n_pool is None:
        seen = f"the {n_train:,} training images" if n_train else "all the training images"
    else:
        whole = f" (of the {n_train:,})" if n_train else ""
        seen = f"a class-balanced pool of {rec.n_pool:,} training images{whole}"
    return (f"Each cell: an MLP student (two hidden layers of {w}) that keeps the labels of {n:,} of {seen}; "
            f"the teacher labels the rest with its soft labels (and softens the kept ones too). alpha = 0: no "
            f"teacher, the {n:,} labelled images alone. {rec.steps} steps of batch {rec.batch_size}, {rec.mode} "
            f"mode, tested on the full test set.")


def grid_job(shared: Shared, rec: grid.GridRecipe, retry: bool = False) -> jobs.Job:
    """The recipe's heatmap job (started on first use); a failed one stays until retried. Notebook 04_distill_mnist."""
    key = (str(grid.path(rec)), str(config.cache_dir()))
    job = shared.grid_jobs.get(key)
    if job is None or retry:
        Ts, alphas = grid.default_grid()
        job = shared.grid_jobs[key] = jobs.start_grid(rec, Ts, alphas, grid.SPREAD_CELLS)
    return job


def heatmap_frame(table: pd.DataFrame, Ts, alphas, T: float, alpha: float) -> tuple[pd.DataFrame, bool]:
    """One row per cell of the grid and of any live cell (accuracy NaN until trained), the current cell marked.

    Introduced in notebook 04_distill_mnist. Returns (frame, exact): frame has columns T, alpha, accuracy,
    text, current; exact says whether the marked cell is (T, alpha) itself and trained.
    """
    trained = table.groupby(["T", "alpha"])["accuracy"].last().to_dict() if not table.empty else {}
    cols = sorted({float(t) for t in Ts} | {float(t) for t, _ in trained})
    rows = sorted({float(a) for a in alphas} | {float(a) for _, a in trained})
    at = (panels.nearest(T, cols), panels.nearest(alpha, rows, log=False))
    frame = pd.DataFrame([{"T": t, "alpha": a, "accuracy": trained.get((t, a), math.nan)} for a in rows for t in cols])
    frame["text"] = [f"{v:.3f}" if math.isfinite(v) else "…" for v in frame["accuracy"]]
    frame["current"] = [(t, a) == at for t, a in zip(frame["T"], frame["alpha"])]
    exact = math.isclose(at[0], T) and math.isclose(at[1], alpha) and (at[0], at[1]) in trained
    return frame, exact


def heatmap_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """The heatmap drawn in the browser: grey cells until trained, the accuracy written in each, the current cell
    in red. Notebook 04_distill_mnist."""
    finite = frame["accuracy"].dropna()
    middle = (finite.min() + finite.max()) / 2 if len(finite) else 0.0
    ink = [INKS[2] if not math.isfinite(v) else INKS[0] if v > middle else INKS[1] for v in frame["accuracy"]]
    frame = frame.assign(T=[f"{t:g}" for t in frame["T"]], alpha=[f"{a:g}" for a in frame["alpha"]], ink=ink)
    Ts, alphas = list(dict.fromkeys(frame["T"])), list(dict.fromkeys(frame["alpha"]))
    base = alt.Chart(frame).encode(
        x=alt.X("T:O", sort=Ts, title="temperature T", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("alpha:O", sort=alphas, title="alpha (soft weight)"),
        tooltip=["T", "alpha", alt.Tooltip("accuracy:Q", format=".4f")])
    empty = base.mark_rect(color="#eeeeee")
    cells = base.mark_rect().encode(color=alt.Color("accuracy:Q", scale=alt.Scale(scheme="viridis"),
                                                    legend=alt.Legend(title="accuracy", format=".3f")))
    text = base.mark_text(fontSize=12).encode(text="text:N", color=alt.Color(
        "ink:N", scale=alt.Scale(domain=INKS, range=INKS), legend=None))  # a scale, not scale=None: Streamlit's
    # theme reads every scale's type and breaks the chart on a null one (seen in Chromium)
    box = base.transform_filter("datum.current").mark_rect(filled=False, stroke="red", strokeWidth=3)
    return (empty + cells + text + box).properties(title="student test accuracy", height=alt.Step(40))


def fill_status(rec: grid.GridRecipe, table: pd.DataFrame, Ts, alphas,
                spread_cells=grid.SPREAD_CELLS, spread_seeds=(1, 2)) -> tuple[int, int, str]:
    """(cells done, cells in all, what is training now), counted from the cache: the bar counts cells.

    Introduced in notebook 04_distill_mnist. The grid's cells in the job's order (alpha by alpha), then the seed
    spread's runs (the other seeds at spread_cells).
    """
    have = set(zip(table["T"], table["alpha"]))
    todo = [(float(t), float(a)) for a in alphas for t in Ts if (float(t), float(a)) not in have]
    spread_todo = []
    for seed in spread_seeds if not todo else ():  # the spread starts once the grid is full
        other = grid.load(rec.replace(seed=seed))
        spread_todo += [(seed, t, a) for t, a in spread_cells if (t, a) not in set(zip(other["T"], other["alpha"]))]
    total = len(Ts) * len(alphas) + len(spread_cells) * len(spread_seeds)
    if todo:
        t, a = todo[0]
        done = total - len(todo) - len(spread_cells) * len(spread_seeds)
        return done, total, (f"heatmap: {done} of {len(Ts) * len(alphas)} cells trained; training T = {t:g}, "
                             f"alpha = {a:g} ({rec.steps} steps)")
    if spread_todo:
        seed, t, a = spread_todo[0]
        return total - len(spread_todo), total, (f"heatmap done; seed spread: training seed {seed} at T = {t:g}, "
                                                 f"alpha = {a:g} ({len(spread_todo)} runs left)")
    return total, total, "heatmap and seed spread: done, loading"


def _elapsed(st, done: int) -> str:
    """Seconds since this session saw the count of finished cells change: the page shows it is alive."""
    seen = st.session_state.get("heatmap_seen")
    if seen is None or seen[0] != done:
        seen = st.session_state["heatmap_seen"] = (done, time.monotonic())
    return f"{time.monotonic() - seen[1]:.0f} s"


def heatmap(st, shared: Shared, rec: grid.GridRecipe, T: float, alpha: float) -> None:
    """The heatmap as it fills in the background, then the seed spread (a timed fragment). Notebook 04_distill_mnist."""
    # Guarded here too: Streamlit shows an error raised inside a fragment as a traceback itself (the
    # caller's guard then only sees FragmentHandledException), and timed fragment reruns skip the caller.
    with guarded(st, "Accuracy"):
        job = grid_job(shared, rec)
        if job.future.done() and job.future.exception() is not None and \
                st.button("Retry the heatmap", key="retry_heatmap"):
            job = grid_job(shared, rec, retry=True)
        table = grid.load(rec)
        Ts, alphas = grid.default_grid()
        frame, exact = heatmap_frame(table, Ts, alphas, T, alpha)
        page.cached_chart(st, ("heatmap", frame.to_json()), lambda: heatmap_chart(frame))
        trained = bool(frame.loc[frame["current"], "accuracy"].notna().any())
        st.caption("Red box: the current (T, alpha)." if exact else
                   "Red box: the cell nearest to the current (T, alpha); train it below to add it." if trained else
                   "Red box: the cell nearest to the current (T, alpha), not trained yet (grey cells: not yet).")
        if not job.future.done():
            done, total, text = fill_status(rec, table, Ts, alphas)
            st.progress(done / total, text=f"{text}, {_elapsed(st, done)} so far. Each cell appears as it finishes.")
            if not config.is_quick():
                st.caption(PREPARE_TIP)
            return
        spread = job.future.result()  # raises the job's error, which `guarded` shows
        summary = panels.grid_summary(table, spread)
        s1, s2, s3 = st.columns(3)
        s1.metric("Heatmap span (best - worst cell)", f"{summary['span']:.2f} points")
        s2.metric("Seed spread (largest std over 3 seeds)", f"{summary['spread']:.2f} points",
                  help=summary["spread_cells"])
        s3.metric("Span / seed spread", f"{summary['ratio']:.1f}x")


def render(st, shared: Shared, dataset: str, width: int, T: float, alpha: float, busy: bool) -> None:
    """The "Accuracy" tab; busy: the course's teacher is still training. Notebook 04_distill_mnist."""
    st.subheader(f"Student test accuracy over T and alpha ({panels.label(dataset)}, width {width})")
    rec = grid.recipe(dataset, student_width=width)
    st.caption(grid_caption(rec, training_images(dataset)))
    if busy:
        st.info("The heatmap and the button below need the course's teacher, which is still training in the "
                "background (see the Soft labels tab); the heatmap starts filling as soon as it is ready.")
    else:
        shared.heatmap(rec, T, alpha)
    st.divider()
    mode = config.mode()
    if st.button(f"Train this student now (T = {T:g}, alpha = {alpha:g})", key="train_now", type="primary",
                 disabled=busy):
        key = ("grid", str(grid.path(rec)), T, alpha)  # the same cell asked twice (any session) trains once
        shared.queue.submit(key, f"KD T={T:g}, alpha={alpha:g}", jobs.train_cell(rec, T, alpha))
        st.session_state["train_request"] = {"key": key, "store_as": "live",
                                             "meta": {"key": (dataset, width, T, alpha, mode)}}
    if "train_request" in st.session_state:
        shared.queued("train_request", "Accuracy")
    live = st.session_state.get("live")
    if live and live["key"][:2] == (dataset, width) and live["key"][4] == mode:
        k1, k2, k3 = st.columns(3)
        k1.metric(f"Distilled student (T={live['key'][2]:g}, alpha={live['key'][3]:g})",
                  f"{live['row']['accuracy']:.2%}", f"{live['row']['accuracy'] - live['base']['accuracy']:+.2%}")
        k2.metric("From-scratch baseline (alpha = 0)", f"{live['base']['accuracy']:.2%}")
        k3.metric("Training time (s)", f"{live['row']['seconds']:.1f}")
        hist = grid.history_for(rec, live["key"][2], live["key"][3])
        base_hist = grid.history_for(rec, live["base"]["T"], 0.0)
        if hist and base_hist:
            histories = {"baseline (alpha = 0)": base_hist, "distilled": hist}
            st.image(shared.png("curves", histories, (histories,)))
