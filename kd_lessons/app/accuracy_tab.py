"""The app's "Accuracy" tab: the T x alpha heatmap filling in the background, and "train this student now".

Introduced in notebook 00_start_here (the app tour; the experiment is notebook 04_distill_mnist). Values
come in as parameters; the server's jobs, queue, figures and fragments come in `shared`.
"""
from __future__ import annotations

from kd_lessons import config
from kd_lessons.app import jobs, panels
from kd_lessons.app.page import Shared, guarded
from kd_lessons.runs import grid

__all__ = ["grid_job", "heatmap", "render"]


def grid_job(shared: Shared, rec: grid.GridRecipe, retry: bool = False) -> jobs.Job:
    """The recipe's heatmap job (started on first use); a failed one stays until retried. Notebook 04_distill_mnist."""
    key = (str(grid.path(rec)), str(config.cache_dir()))
    job = shared.grid_jobs.get(key)
    if job is None or retry:
        Ts, alphas = grid.default_grid()
        job = shared.grid_jobs[key] = jobs.start_grid(rec, Ts, alphas, grid.SPREAD_CELLS)
    return job


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
        if not table.empty:
            values, rows, cols, mark, exact = panels.heatmap_table(table, T, alpha)
            st.image(shared.png("heatmap", (values, rows, cols, mark), (values, rows, cols, mark)))
            st.caption("Red box: the current (T, alpha)." if exact else
                       "Red box: the trained cell nearest to the current (T, alpha); train it below to add it.")
        if not job.future.done():
            st.progress(job.fraction() or 0.0,
                        text=f"{job.text() or 'heatmap: starting'} (cells are cached as they finish)")
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
    st.caption(panels.grid_caption(rec))
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
