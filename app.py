"""Knowledge distillation, live: the classroom app (`streamlit run app.py`, or `make app`).

Widgets and layout only; every number comes from kd_lessons (app.panels, app.jobs, runs.grid, plots).
Introduced in notebook 00_start_here. KD_QUICK=1 gives small, fast settings for a first launch.
"""
from __future__ import annotations

import contextlib
import warnings
from concurrent.futures import TimeoutError as FutureTimeout

import altair as alt
import pandas as pd
import streamlit as st

from kd_lessons import config, plots
from kd_lessons.app import kl_direction, jobs, panels
from kd_lessons.cache import CacheWarning
from kd_lessons.data import class_names, denormalize
from kd_lessons.runs import grid, tour
from kd_lessons.runs.students import StudentRuns

st.set_page_config(page_title="Knowledge distillation, live", page_icon="🎓", layout="wide")
MODE, CACHE = config.mode(), str(config.cache_dir())  # part of every cache key


@contextlib.contextmanager
def guarded(panel: str):
    """Show a failing panel's error and fix in the page; the other panels keep working."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CacheWarning)
            yield
        for w in caught:
            if issubclass(w.category, CacheWarning):
                st.warning(f"{w.message}. Nothing to do: it is rebuilt from scratch.")
    except Exception as exc:  # Streamlit's rerun/stop signals are BaseExceptions and pass through
        st.error(f"**{panel} failed.** {panels.explain_error(exc)}")


@st.cache_resource(show_spinner=False)
def teacher_jobs() -> dict:
    return {}  # one background job per (dataset, mode, cache): shared by sessions, survives reruns


def get_teacher(dataset: str):
    """((teacher, info), kind): the cached teacher ("full"), or on a CPU's first launch a small "starter"
    teacher while the mode's own teacher trains in the background. Training shows a progress bar."""
    from kd_lessons.teachers import get_teacher as train_or_load

    running, key = teacher_jobs(), (dataset, MODE, CACHE)
    job = running.get(key)
    if job is None or any(j is not None and j.future.done() and j.future.exception() is not None
                          for j in job.values()):
        job = running[key] = jobs.start_teachers(dataset, train_or_load, starter=jobs.needs_starter(dataset))
    kind = "starter" if job["starter"] is not None and not job["full"].future.done() else "full"
    with contextlib.suppress(FutureTimeout):
        return job[kind].future.result(timeout=1.0), kind  # cached on disk: loads in well under a second
    what = "a small starter teacher (the full one follows in the background)" if kind == "starter" else "the teacher"
    with st.status(f"First launch: training {what}; afterwards it is loaded from `{CACHE}`", expanded=True) as status:
        bar = st.progress(0.0, text="starting…")
        teacher = jobs.wait_with_progress(job[kind], lambda frac, text: bar.progress(frac or 0.0, text=text))
        status.update(label=f"{kind.capitalize()} teacher trained and cached", state="complete", expanded=False)
    return teacher, kind


@st.fragment(run_every=5)
def full_teacher_watch(dataset: str) -> None:
    """While the starter teacher is shown: report the full teacher's training and switch when it is done."""
    job = teacher_jobs().get((dataset, MODE, CACHE))
    if job is None or job["full"].future.done():
        st.rerun(scope="app")
    main = "quick-mode" if MODE == "quick" else "full"
    st.info(f"Showing a **starter teacher** (1 epoch on a subset) so the class can begin. The {main} teacher is "
            f"training in the background ({job['full'].text() or 'starting'}); the page switches to it when it is done. "
            f"Tip: `python -m kd_lessons teacher {dataset}` before class, or KD_QUICK=1 for small settings.")


@st.cache_data(show_spinner="Computing the teacher's logits on the test images (once)…")
def get_pool(dataset: str, mode: str, cache: str, kind: str, _teacher) -> dict:
    return panels.test_pool(dataset, _teacher)


@st.cache_data(show_spinner=False, max_entries=2000)
def soft_label_png(dataset: str, mode: str, cache: str, kind: str, index: int, T: float, _pool: dict) -> bytes:
    soft = panels.soft_labels(_pool["teacher_logits"][index:index + 1], _pool["y"][index:index + 1], T)
    fig = plots.soft_label_bars(soft["probs"][0], int(_pool["y"][index]), class_names(dataset), T=T)
    return panels.figure_png(fig, dpi=80)


@st.cache_data(show_spinner=False, max_entries=200)
def heatmap_png(values, rows: list[str], cols: list[str], mark: tuple[int, int]) -> bytes:
    fig = plots.heatmap(values, rows, cols, mark=mark, xlabel="temperature T", ylabel="alpha (soft weight)",
                        title="student test accuracy", fmt=".3f", colorbar_label="accuracy")
    return panels.figure_png(fig, dpi=90)


@st.cache_data(show_spinner=False, max_entries=200)
def curves_png(histories: dict) -> bytes:
    return panels.figure_png(plots.training_curves(histories))  # cached: a redraw must not re-render matplotlib


@st.cache_data(show_spinner=False, max_entries=50)
def method_bars_png(table: pd.DataFrame) -> bytes:
    return panels.figure_png(plots.method_bars(table, value="errors", title="test errors per method"))


def soft_label_chart(probs, label: int, T: float, entropy: float) -> alt.Chart:
    """Grouped bars, one-hot vs soft (drawn in the browser, so moving T costs the server ~nothing)."""
    frame = panels.soft_label_frame(probs, label, class_names(dataset), T)
    targets = ["one-hot label", f"soft label (T={T:g})"]
    return alt.Chart(frame, title=f"soft label entropy {entropy:.3f} nats (one-hot: 0)").mark_bar().encode(
        x=alt.X("class:N", sort=None, title=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("target:N", sort=targets),
        y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("target:N", scale=alt.Scale(domain=targets, range=["#bbbbbb", "#1f77b4"]),
                        legend=alt.Legend(orient="right", title=None)),
        tooltip=["class", "target", alt.Tooltip("probability:Q", format=".4f")]).properties(height=240)


@st.cache_resource(show_spinner=False)
def untrained_student(dataset: str, width: int):
    return panels.untrained_student(dataset, width)


def show_image(pool: dict, dataset: str, index: int, width: int = 84) -> None:
    pixels = denormalize(pool["x"][index], dataset).clamp(0, 1).permute(1, 2, 0).numpy()
    st.image(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, width=width,
             caption=f"#{index}: {class_names(dataset)[int(pool['y'][index])]}")


# ---------------------------------------------------------------- sidebar
st.title("Knowledge distillation, live")
side = st.sidebar
side.header("Settings")
datasets = panels.available_datasets()
dataset = side.selectbox("Dataset", datasets, format_func=panels.label, key="dataset")
T = side.select_slider("Temperature T (log scale)", options=panels.temperatures(), value=4.0,
                       format_func=lambda t: f"{t:g}", key="T")
alpha = side.slider("alpha (weight of the soft, teacher term)", 0.0, 1.0, 0.9, 0.05, key="alpha")
width = side.select_slider("Student size (hidden units per layer)", options=panels.STUDENT_WIDTHS, value=100,
                           format_func=lambda w: f"784-{w}-{w}-10" if dataset != "cifar10" else f"3072-{w}-{w}-10",
                           key="width")
n_images = side.slider("Images shown", 1, 8, 4, key="n_images")
if side.button("Shuffle images", key="shuffle"):
    st.session_state["image_seed"] = st.session_state.get("image_seed", 0) + 1
side.caption(config.describe())
if "cifar10" not in datasets:
    side.caption("CIFAR-10 appears here once its files are in the data folder (`python -m kd_lessons data`).")


def soft_panel() -> tuple[dict, list[int]]:
    (teacher, info), kind = get_teacher(dataset)
    st.session_state["teacher_kind"] = kind
    if kind == "starter":
        full_teacher_watch(dataset)
    pool = get_pool(dataset, MODE, CACHE, kind, teacher)
    shown = panels.pick_examples(pool["y"], n_images, seed=st.session_state.get("image_seed", 0))
    soft = panels.soft_labels(pool["teacher_logits"][shown], pool["y"][shown], T)
    st.subheader(f"The teacher's soft labels at T = {T:g}")
    c1, c2, c3 = st.columns(3)
    c1.metric("Mean entropy of the soft labels", f"{float(soft['entropy'].mean()):.3f} nats",
              help=f"0 = one-hot; log K = {soft['max_entropy']:.3f} nats = uniform")
    c2.metric("Entropy of the one-hot labels", "0.000 nats")
    c3.metric("Teacher test accuracy" + (" (starter teacher)" if kind == "starter" else ""),
              f"{info.get('test_accuracy', pool['teacher_accuracy']):.2%}",
              help=f"on the {info.get('n_test', len(pool['y']))} test images")
    for row, (index, h, p) in enumerate(zip(shown, soft["entropy"].tolist(), soft["p_true"].tolist())):
        left, right = st.columns([1, 6], vertical_alignment="center")
        with left:
            show_image(pool, dataset, index)
            st.caption(f"p(true class) = {p:.3f}")
        right.altair_chart(soft_label_chart(soft["probs"][row], int(pool["y"][index]), T, h))
    return pool, shown


@st.cache_resource(show_spinner=False)
def grid_jobs() -> dict:
    return {}  # one background heatmap job per (recipe, cache): shared by sessions, survives reruns


def grid_job(rec: dict, retry: bool = False):
    """The recipe's heatmap job (started on first use); a failed one stays, with its error, until retried."""
    running, key = grid_jobs(), (str(grid.path(rec)), CACHE)
    job = running.get(key)
    if job is None or retry:
        Ts, alphas = grid.default_grid()
        job = running[key] = jobs.start_grid(rec, Ts, alphas, grid.SPREAD_CELLS)
    return job


@st.fragment(run_every=3)
def heatmap_live(rec: dict, T: float, alpha: float) -> None:
    """The heatmap as it fills in the background, then the seed spread beside it."""
    # Guarded here too: Streamlit shows an error raised inside a fragment as a traceback itself (the
    # caller's guard then only sees FragmentHandledException), and timed fragment reruns skip the caller.
    with guarded("Accuracy"):
        job = grid_job(rec)
        if job.future.done() and job.future.exception() is not None and \
                st.button("Retry the heatmap", key="retry_heatmap"):
            job = grid_job(rec, retry=True)
        table = grid.load(rec)
        if not table.empty:
            values, rows, cols, mark, exact = panels.heatmap_table(table, T, alpha)
            st.image(heatmap_png(values, rows, cols, mark))
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


@st.cache_resource(show_spinner=False)
def training_queue() -> jobs.TrainingQueue:
    return jobs.TrainingQueue()  # one per server: every session's "train now", one training at a time


@st.fragment(run_every=1)
def queued_training(request: str, panel: str) -> None:
    """This session's "train now" request: its place in the queue, then its progress; redraws the page when done."""
    with guarded(panel):  # inside the fragment too (see heatmap_live)
        ask = st.session_state.get(request)
        job = training_queue().get(ask["key"]) if ask else None
        if job is None:  # the server restarted since: the button asks again
            st.session_state.pop(request, None)
            return
        ahead, text = training_queue().status(job)
        if ahead:
            st.info(text)
            return
        if ahead == 0:
            st.progress(job.fraction() or 0.0, text=text)
            return
        del st.session_state[request]
        result = job.future.result()  # raises the training's error, which `guarded` shows
        if ask.get("store_as"):
            st.session_state[ask["store_as"]] = {**ask["meta"], **result}
        st.rerun(scope="app")  # redraw the heatmap / table with the new result


def accuracy_panel() -> None:
    st.subheader(f"Student test accuracy over T and alpha ({panels.label(dataset)}, width {width})")
    rec = grid.recipe(dataset, width)
    st.caption(panels.grid_caption(rec))
    busy = st.session_state.get("teacher_kind") == "starter"
    if busy:
        st.info("The heatmap and the button below need the course's teacher, which is still training in the "
                "background (see the Soft labels tab); the heatmap starts filling as soon as it is ready.")
    else:
        heatmap_live(rec, T, alpha)
    st.divider()
    if st.button(f"Train this student now (T = {T:g}, alpha = {alpha:g})", key="train_now", type="primary",
                 disabled=busy):
        key = ("grid", str(grid.path(rec)), T, alpha)  # the same cell asked twice (any session) trains once
        training_queue().submit(key, f"KD T={T:g}, alpha={alpha:g}", jobs.train_cell(rec, T, alpha))
        st.session_state["train_request"] = {"key": key, "store_as": "live",
                                             "meta": {"key": (dataset, width, T, alpha, MODE)}}
    if "train_request" in st.session_state:
        queued_training("train_request", "Accuracy")
    live = st.session_state.get("live")
    if live and live["key"][:2] == (dataset, width) and live["key"][4] == MODE:
        k1, k2, k3 = st.columns(3)
        k1.metric(f"Distilled student (T={live['key'][2]:g}, alpha={live['key'][3]:g})",
                  f"{live['row']['accuracy']:.2%}", f"{live['row']['accuracy'] - live['base']['accuracy']:+.2%}")
        k2.metric("From-scratch baseline (alpha = 0)", f"{live['base']['accuracy']:.2%}")
        k3.metric("Training time (s)", f"{live['row']['seconds']:.1f}")
        hist = grid.history_for(rec, live["key"][2], live["key"][3])
        base_hist = grid.history_for(rec, live["base"]["T"], 0.0)
        if hist and base_hist:
            st.image(curves_png({"baseline (alpha = 0)": base_hist, "distilled": hist}))

def loss_panel(pool: dict, shown: list[int]) -> None:
    st.subheader(f"Loss anatomy at T = {T:g}, alpha = {alpha:g}")
    index = st.selectbox("Example", shown, format_func=lambda i: f"#{i} ({class_names(dataset)[int(pool['y'][i])]})",
                         key="anatomy_example")
    live = st.session_state.get("live")
    choices = ["untrained student"] + (["last trained student"] if live and live["key"][0] == dataset else [])
    who = st.radio("Student", choices, horizontal=True, key="anatomy_student")
    student = live["student"] if who == "last trained student" else untrained_student(dataset, width)
    xb, yb, tb = pool["x"][index:index + 1], pool["y"][index:index + 1], pool["teacher_logits"][index:index + 1]
    zb = panels.student_logits(student, xb)
    parts = panels.loss_anatomy(zb, tb, yb, T, alpha)
    m1, m2, m3 = st.columns(3)
    m1.metric("Cross-entropy with the label (hard)", f"{parts['cross_entropy']:.4f}",
              f"× (1 - alpha) = {parts['weighted_cross_entropy']:.4f}", delta_color="off", delta_arrow="off")
    m2.metric("T² · KL(teacher ‖ student) (soft)", f"{parts['kd']:.4f}",
              f"× alpha = {parts['weighted_kd']:.4f}", delta_color="off", delta_arrow="off")
    m3.metric("Total loss", f"{parts['total']:.4f}")
    curves = panels.loss_vs_alpha(zb, tb, yb, T).rename(columns={
        "weighted_cross_entropy": "(1 - alpha) · CE", "weighted_kd": "alpha · T²·KL", "total": "total"})
    long = curves.melt("alpha", ["(1 - alpha) · CE", "alpha · T²·KL", "total"], var_name="term", value_name="loss")
    lines = alt.Chart(long).mark_line().encode(x="alpha:Q", y="loss:Q", color="term:N")
    rule = alt.Chart(pd.DataFrame({"alpha": [alpha]})).mark_rule(color="black", strokeDash=[4, 4]).encode(x="alpha:Q")
    st.altair_chart(lines + rule)
    st.caption("alpha moves weight from the label's cross-entropy to the teacher's soft term; the dashed line is "
               "the current alpha. Raising T changes the soft term itself (T² keeps its gradients comparable).")

def compare_panel(pool: dict, shown: list[int]) -> None:
    st.subheader("Two temperatures side by side, same images")
    a, b = st.columns(2)
    settings = [(a, a.select_slider("Left T", panels.temperatures(), 1.0, key="cmp_T_left")),
                (b, b.select_slider("Right T", panels.temperatures(), 8.0, key="cmp_T_right"))]
    for col, t in settings:
        soft_t = panels.soft_labels(pool["teacher_logits"][shown], pool["y"][shown], t)
        col.metric(f"Mean entropy at T = {t:g}", f"{float(soft_t['entropy'].mean()):.3f} nats")
        for index in shown:
            col.image(soft_label_png(dataset, MODE, CACHE, st.session_state.get('teacher_kind', 'full'), index, t, pool))

def methods_panel() -> None:
    st.subheader("Methods tour: one teacher, one student, one budget (notebook 11)")
    if dataset != "mnist":
        st.info("The methods tour runs on MNIST: pick MNIST in the sidebar.")
        return
    teacher, _ = get_cnn_teacher(MODE, CACHE)
    rec = tour.recipe()
    st.caption(f"MNIST, {rec['n_train']} labelled images, a 784-100-100-10 student, {rec['steps']} steps per run, "
               f"the course's CNN teacher ({MODE} mode). Results are cached; notebook 11 runs all of them with 3 seeds.")
    name = st.selectbox("Method", list(tour.FAMILIES), index=1, key="tour_method")
    seed = st.number_input("Seed", 0, 9, 0, key="tour_seed")
    if st.button(f"Train {name} now (seed {seed})", key="tour_train"):
        key = ("tour", MODE, CACHE, name, int(seed))
        training_queue().submit(key, f"{name}, seed {seed}", jobs.train_method(rec, teacher, name, int(seed)))
        st.session_state["tour_request"] = {"key": key}
    if "tour_request" in st.session_state:
        queued_training("tour_request", "Methods")
    table = tour.load(rec, teacher)
    if table.empty:
        st.info("No method trained yet: pick one and press the button (it also trains the scratch baseline).")
        return
    st.dataframe(tour.summary(StudentRuns(table)).round(2))
    st.image(method_bars_png(table))


@st.cache_resource(show_spinner="Loading the CNN teacher (trained once)…")
def get_cnn_teacher(mode: str, cache: str):  # mode and cache folder key the resource
    from kd_lessons.teachers import get_teacher as train_or_load

    return train_or_load("mnist", "cnn")


def kl_direction_panel() -> None:
    st.subheader("Generative KD: which way the KL points (notebook 10)")
    st.caption("A one-bump student fitted to a two-bump teacher on a 1-D grid (a softmax, like a next-token "
               "distribution). Forward KL(teacher ‖ student) covers both modes; reverse KL(student ‖ teacher), "
               "MiniLLM's choice, seeks one; GKD's generalized JSD(beta) lies between (0 = forward, 1 = reverse).")
    c1, c2, c3 = st.columns([3, 3, 2], vertical_alignment="bottom")
    beta = c1.slider("beta of the generalized JSD (0 = forward KL, 1 = reverse KL)", 0.0, 1.0, 0.5,
                     kl_direction.BETA_STEP, key="gen_beta")
    low, high, step = kl_direction.SEPARATIONS
    separation = c2.slider("Distance between the teacher's two modes", low, high, 4.0, step, key="gen_separation")
    reference = c3.checkbox("Show forward and reverse KL too", value=True, key="gen_reference")
    view = kl_direction.kl_direction_view(beta, separation, reference)
    fit = view["fit"]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(f"Student entropy, JSD(beta={fit.beta:g})", f"{fit.entropy:.3f} nats",
              help=f"the teacher's: {fit.teacher_entropy:.3f} nats")
    m2.metric("Student mass between the modes", f"{fit.mass_between:.3f}",
              help=f"the teacher's: {fit.teacher_mass_between:.3f}")
    m3.metric("Student mass near the left / right mode", f"{fit.mass_near[0]:.3f} / {fit.mass_near[1]:.3f}",
              help="the teacher's left mode holds 60% of its mass, the right one 40%")
    m4.metric("Redraw time (server)", f"{view['seconds']:.3f} s",
              help="fitting (cached per setting after the first time) and preparing the chart")
    curves = alt.Chart(view["frame"]).encode(x=alt.X("x:Q", title="position on the grid (the toy's vocabulary)"),
                                             y=alt.Y("probability:Q"), color=alt.Color("curve:N", title=None))
    chart = curves.transform_filter(alt.datum.curve == "teacher").mark_area(opacity=0.35) + \
        curves.transform_filter(alt.datum.curve != "teacher").mark_line(strokeWidth=2.5)
    st.altair_chart(chart.properties(height=300))
    st.dataframe(view["table"])


@st.fragment
def kl_direction_fragment() -> None:
    """Its sliders rerun only this tab; guarded inside, since a fragment's own reruns skip the caller's guard."""
    with guarded("Generative KD: KL direction"):
        kl_direction_panel()


def code_panel() -> None:
    st.subheader("The loss the students are trained with (from `kd_lessons/losses.py`)")
    st.code(panels.kd_source(), language="python")


tab_soft, tab_acc, tab_loss, tab_cmp, tab_methods, tab_gen, tab_code = st.tabs(
    ["Soft labels", "Accuracy", "Loss anatomy", "Compare", "Methods", "Generative KD: KL direction", "Code"])
NO_POOL = "This panel uses the soft-label panel's test images, which could not be loaded: see the message there."
pool, shown = None, []
with tab_soft, guarded("Soft labels"):
    pool, shown = soft_panel()
with tab_acc, guarded("Accuracy"):
    accuracy_panel()
with tab_loss, guarded("Loss anatomy"):
    if pool is None:
        st.info(NO_POOL)
    else:
        loss_panel(pool, shown)
with tab_cmp, guarded("Compare"):
    if pool is None:
        st.info(NO_POOL)
    else:
        compare_panel(pool, shown)
with tab_methods, guarded("Methods"):
    methods_panel()
with tab_gen:
    kl_direction_fragment()
with tab_code, guarded("Code"):
    code_panel()
