"""The app's "Methods" tab: the methods tour's families trained one at a time, with the tour's fixed settings.

Introduced in notebook 00_start_here (the app tour; the tour itself is notebook 11_methods_tour). Each method
runs with its paper's defaults from `runs.tour.recipe()`, not the sidebar's T and alpha, so the tab's runs
are the notebook's runs (same cache); the caption beside the table says so.
"""
from __future__ import annotations

import math

import altair as alt
import pandas as pd

from kd_lessons import config, datasets
from kd_lessons.app import jobs, page
from kd_lessons.app.page import Shared
from kd_lessons.app.soft_tab import BASE_COLOUR, MAIN_COLOUR
from kd_lessons.runs import tour
from kd_lessons.runs.students import StudentRuns

__all__ = ["settings_caption", "seeds_caption", "summary_table", "errors_chart", "render"]


def settings_caption(rec: dict, T: float, alpha: float) -> str:
    """What the tour trains, and that the sidebar's T and alpha do not apply to it. Notebook 11_methods_tour."""
    student = datasets.student_label(rec.dataset, 100)  # tour.make_student's hidden layers
    return (f"{datasets.get(rec.dataset).label}, {rec.n_train} labelled images, a {student} student, "
            f"{rec.steps} steps per run, the course's CNN teacher ({rec.mode} mode). "
            f"Each method runs with its paper's defaults (T = {rec.T:g}, alpha = {rec.alpha:g} where it "
            f"takes them), as in notebook 11: the sidebar's T = {T:g} and alpha = {alpha:g} do not apply here. "
            "Results are cached; notebook 11 trains every method on several seeds and pairs them.")


def seeds_caption(summary) -> str:
    """How many seeds back each gain: one seed is one run's difference, not a comparison. Notebook 11_methods_tour."""
    paired = summary["paired_seeds"].drop("scratch", errors="ignore")
    if paired.empty:
        return "Only scratch is trained: train a method to see its gains."
    low, high = int(paired.min()), int(paired.max())
    seeds = f"{low}" if low == high else f"{low} to {high}"
    if high < 2:
        return (f"Gains over {seeds} seed: one run's difference, not a comparison (no interval). Notebook 11 "
                "pairs several seeds per method and reports 95% intervals; train more seeds here to get one.")
    return (f"Gains are paired over {seeds} seeds: mean ± the 95% t half-width (a method with one shared seed shows "
            "its one difference). A gain is a finding only when its interval excludes 0 (notebook 11).")


def _gain(mean: float, half: float) -> str:
    """'+1.23 ± 0.45' (95% half-width), '+1.23 (one seed)' without an interval, '—' without a shared seed."""
    if not math.isfinite(mean):
        return "—"
    return f"{mean:+.2f} ± {half:.2f}" if math.isfinite(half) else f"{mean:+.2f} (one seed)"


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """tour.summary in seven short columns, numbers written as the text reads them ("+1.23 ± 0.45"): it fits the
    page's width. Notebook 11_methods_tour."""
    rows = []
    for name, r in summary.iterrows():
        rows.append({"method": name, "family": r["family"],
                     "accuracy (%)": f"{r['accuracy_mean']:.2f}" + (f" ± {r['accuracy_std']:.2f}" if r["seeds"] > 1
                                                                    else ""),
                     "seeds": int(r["seeds"]),
                     "gain vs scratch (points)": _gain(r["gain_vs_scratch"], r["gain_vs_scratch_ci95"]),
                     "gain vs Hinton KD (points)": _gain(r["gain_vs_hinton"], r["gain_vs_hinton_ci95"]),
                     "seconds per run": f"{r['seconds_per_run']:.1f}"})
    return pd.DataFrame(rows)


def errors_chart(table: pd.DataFrame) -> alt.LayerChart:
    """Test errors per method, bar = mean over seeds, a dot per seed; drawn in the browser in the Soft labels tab's
    colours (grey: the scratch baseline). Notebook 11_methods_tour."""
    order = list(dict.fromkeys(table["method"]))
    runs = table.assign(role=["baseline" if m == "scratch" else "method" for m in table["method"]])
    x = alt.X("method:N", sort=order, title=None, axis=alt.Axis(labelAngle=-30, labelLimit=240))
    colour = alt.Color("role:N", scale=alt.Scale(domain=["baseline", "method"], range=[BASE_COLOUR, MAIN_COLOUR]),
                       legend=None)
    bars = alt.Chart(runs).mark_bar().encode(x=x, y=alt.Y("mean(errors):Q", title="test errors"), color=colour,
                                             tooltip=["method", alt.Tooltip("mean(errors):Q", format=".1f",
                                                                            title="mean errors"),
                                                      alt.Tooltip("count(seed):Q", title="seeds")])
    dots = alt.Chart(runs).mark_circle(color="black", size=30).encode(x=x, y="errors:Q",
                                                                      tooltip=["method", "seed", "errors"])
    return (bars + dots).properties(title="test errors per method (bar: mean over seeds, dot: one seed)",
                                    height=300)


def render(st, shared: Shared, dataset: str, T: float, alpha: float, busy: bool) -> None:
    """The "Methods" tab; busy: the course's teacher is still training. Notebook 11_methods_tour."""
    st.subheader("Methods tour: one teacher, one student, one budget (notebook 11)")
    rec = tour.recipe()
    if dataset != rec.dataset:
        st.info(f"The methods tour runs on {datasets.get(rec.dataset).label}: pick it in the sidebar.")
        return
    if busy:
        st.info("The methods tour needs the course's CNN teacher, which is still training in the background "
                "(see the Soft labels tab).")
        return
    (teacher, _), _ = shared.teacher(rec.dataset, "cnn")
    st.caption(settings_caption(rec, T, alpha))
    name = st.selectbox("Method", list(tour.FAMILIES), index=1, key="tour_method")
    seed = st.number_input("Seed", 0, 9, 0, key="tour_seed")
    if st.button(f"Train {name} now (seed {seed})", key="tour_train"):
        key = ("tour", config.mode(), str(config.cache_dir()), name, int(seed))
        shared.queue.submit(key, f"{name}, seed {seed}", jobs.train_method(rec, teacher, name, int(seed)))
        st.session_state["tour_request"] = {"key": key}
    ask = st.session_state.get("tour_request")
    job = shared.queue.get(ask["key"]) if ask else None
    if job is not None and job.future.done() and job.future.exception() is None:
        del st.session_state["tour_request"]  # finished before this run reached it: drawn below, in this run
    elif ask:
        shared.queued("tour_request", "Methods")
    table = tour.load(rec, teacher)
    if table.empty:
        st.info("No method trained yet: pick one and press the button (it also trains scratch and Hinton KD).")
        return
    summary = tour.summary(StudentRuns(table))
    st.caption(seeds_caption(summary))
    st.dataframe(summary_table(summary), hide_index=True, width="stretch")
    page.cached_chart(st, ("method errors", table.to_json()), lambda: errors_chart(table))
