"""The app's "Methods" tab: the methods tour's families trained one at a time, with the tour's fixed settings.

Introduced in notebook 00_start_here (the app tour; the tour itself is notebook 11_methods_tour). Each method
runs with its paper's defaults from `runs.tour.recipe()`, not the sidebar's T and alpha, so the tab's runs
are the notebook's runs (same cache); the caption beside the table says so.
"""
from __future__ import annotations

from kd_lessons import config, datasets
from kd_lessons.app import jobs
from kd_lessons.app.page import Shared
from kd_lessons.runs import tour
from kd_lessons.runs.students import StudentRuns

__all__ = ["settings_caption", "seeds_caption", "render"]


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
    return (f"Gains are paired over {seeds} seeds; gain_*_ci95 is the 95% t half-width (NaN with one seed). "
            "A gain is a finding only when its interval excludes 0 (notebook 11).")


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
    if "tour_request" in st.session_state:
        shared.queued("tour_request", "Methods")
    table = tour.load(rec, teacher)
    if table.empty:
        st.info("No method trained yet: pick one and press the button (it also trains scratch and Hinton KD).")
        return
    summary = tour.summary(StudentRuns(table))
    st.caption(seeds_caption(summary))
    st.dataframe(summary.round(2))
    st.image(shared.png("method bars", table, (table,)))
