"""Knowledge distillation, live: the classroom app (`streamlit run app.py`, or `make app`).

Page config, sidebar widgets, tabs, and Streamlit's cache and fragment wrappers; every tab is drawn by
kd_lessons.app (playground, soft_tab, accuracy_tab, loss_tab, methods_tab, kl_direction), given the sidebar's values.
Introduced in notebook 00_start_here. KD_QUICK=1 gives small, fast settings for a first launch.
"""
from __future__ import annotations

import functools

import streamlit as st

from kd_lessons import config, datasets
from kd_lessons.app import accuracy_tab, jobs, kl_direction, loss_tab, methods_tab, page, panels, playground, soft_tab

st.set_page_config(page_title="Knowledge distillation, live", page_icon="🎓", layout="wide")
MODE, CACHE = config.mode(), str(config.cache_dir())  # part of every cache key


@st.cache_resource(show_spinner=False)
def server_jobs() -> dict:
    return {"teachers": {}, "grids": {}}  # background jobs shared by sessions, surviving reruns


@st.cache_resource(show_spinner=False)
def training_queue() -> jobs.TrainingQueue:
    return jobs.TrainingQueue()  # one per server: every session's "train now", one training at a time


def get_teacher(dataset: str, arch: str | None = None):
    """The app's one teacher getter: teachers.get_teacher in a background job per (dataset, arch, mode, cache)."""
    return page.teacher_with_progress(st, server_jobs()["teachers"], dataset, arch)


@st.cache_data(show_spinner="Computing the teacher's logits on the test images (once)…")
def get_pool(mode: str, cache: str, dataset: str, kind: str, _teacher) -> dict:  # mode and cache key the result
    return panels.test_pool(dataset, _teacher)


@st.cache_data(show_spinner=False, max_entries=2000)
def png(name: str, key, _args: tuple) -> bytes:
    return page.figure_png(name, *_args)  # cached by key: a redraw never re-renders matplotlib


@st.cache_resource(show_spinner=False)
def untrained_student(dataset: str, width: int):
    return panels.untrained_student(dataset, width)


@st.fragment(run_every=5)
def full_teacher_watch(dataset: str) -> None:
    page.starter_notice(st, server_jobs()["teachers"], dataset)


@st.fragment(run_every=3)
def heatmap_live(rec, T: float, alpha: float) -> None:
    accuracy_tab.heatmap(st, SHARED, rec, T, alpha)


@st.fragment(run_every=1)
def queued_training(request: str, panel: str) -> None:
    page.queued_training(st, training_queue(), request, panel)


@st.fragment
def kl_direction_tab() -> None:
    with page.guarded(st, page.TABS[6]):  # inside: a fragment's own reruns skip the caller's guard
        kl_direction.render(st)


@st.cache_resource(show_spinner="Training the playground's teacher (once per data set and noise)…", max_entries=64)
def playground_teacher(dataset: str, noise: float):
    return playground.train_teacher(dataset, noise)


@st.cache_resource(show_spinner=False, max_entries=512)
def playground_run(key: str, _settings):  # key names the settings
    return playground.train_students(_settings, playground_teacher(_settings.dataset, _settings.noise))


@st.fragment
def playground_still(run) -> None:
    with page.guarded(st, page.TABS[0]):  # a fragment's own reruns skip the caller's guard
        playground.frame(st, run)


@st.fragment(run_every=0.4)
def playground_play(run) -> None:
    with page.guarded(st, page.TABS[0]):
        playground.frame(st, run, advance=True)


@st.fragment(run_every=1.5)
def playground_slow(run) -> None:
    with page.guarded(st, page.TABS[0]):
        playground.frame(st, run, advance=True)


@st.fragment
def playground_tab() -> None:  # its widgets rerun the tab only, not the page
    with page.guarded(st, page.TABS[0]):
        playground.render(st, playground.Tools(run=lambda s: playground_run(s.key(), s), teacher=playground_teacher,
                                               players={"pause": playground_still, "play": playground_play,
                                                        "slow": playground_slow}, queue=training_queue(),
                                               queued=queued_training))


SHARED = page.Shared(teacher=get_teacher, pool=functools.partial(get_pool, MODE, CACHE), png=png,
                     student=untrained_student, queue=training_queue(), grid_jobs=server_jobs()["grids"],
                     heatmap=heatmap_live, queued=queued_training, watch=full_teacher_watch)

# ---------------------------------------------------------------- sidebar
st.title("Knowledge distillation, live")
side = st.sidebar
side.header("Settings")
available = panels.available_datasets()
dataset = side.selectbox("Dataset", available, format_func=panels.label, key="dataset")
T = side.select_slider("Temperature T (log scale)", options=panels.temperatures(), value=4.0,
                       format_func=lambda t: f"{t:g}", key="T")
alpha = side.slider("alpha (weight of the soft, teacher term)", 0.0, 1.0, 0.9, 0.05, key="alpha")
width = side.select_slider("Student size (hidden units per layer)", options=panels.STUDENT_WIDTHS, value=100,
                           format_func=functools.partial(datasets.student_label, dataset), key="width")
n_images = side.slider("Images shown", 1, 8, 4, key="n_images")
if side.button("Shuffle images", key="shuffle"):
    st.session_state["image_seed"] = st.session_state.get("image_seed", 0) + 1
side.caption(config.describe())
for line in page.missing_datasets(available):
    side.caption(line)

# ---------------------------------------------------------------- tabs
tab_play, tab_soft, tab_acc, tab_loss, tab_cmp, tab_methods, tab_gen, tab_code = st.tabs(list(page.TABS))
with tab_play:
    playground_tab()
pool, shown, kind = None, [], "full"  # what the soft-label tab hands on (None: it failed, and says why)
with tab_soft, page.guarded(st, "Soft labels"):
    pool, shown, kind = soft_tab.render(st, SHARED, dataset, T, n_images, st.session_state.get("image_seed", 0))
with tab_acc, page.guarded(st, "Accuracy"):
    accuracy_tab.render(st, SHARED, dataset, width, T, alpha, busy=kind == "starter")
with tab_loss, page.guarded(st, "Loss anatomy"):
    loss_tab.render(st, SHARED, dataset, width, T, alpha, pool, shown)
with tab_cmp, page.guarded(st, "Compare"):
    soft_tab.compare(st, dataset, pool, shown)
with tab_methods, page.guarded(st, "Methods"):
    methods_tab.render(st, SHARED, dataset, T, alpha, busy=kind == "starter")
with tab_gen:
    kl_direction_tab()
with tab_code, page.guarded(st, "Code"):
    st.subheader("The loss the students are trained with (from `kd_lessons/losses.py`)")
    st.code(panels.kd_source(), language="python")
