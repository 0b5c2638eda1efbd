"""What every tab of the classroom app shares: the per-tab guard, the one teacher getter, "train now" status, figures.

Introduced in notebook 00_start_here (the app tour). Functions here take `st` (the streamlit module, or a
container) and the sidebar's values as parameters; `Shared` carries the server's cached pieces that `app.py`
builds with its st.cache_* / st.fragment wrappers, so this package never imports Streamlit.
"""
from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable

from kd_lessons import config, datasets, plots, teachers
from kd_lessons.app import jobs, panels
from kd_lessons.cache import CacheWarning

__all__ = ["TABS", "NO_POOL", "Shared", "guarded", "teacher_with_progress", "starter_notice", "queued_training",
           "missing_datasets", "figure_png", "cached_chart"]

TABS = ("Playground", "Soft labels", "Accuracy", "Loss anatomy", "Compare", "Methods", "Generative KD: KL direction",
        "Code")
NO_POOL = "This panel uses the soft-label panel's test images, which could not be loaded: see the message there."


@dataclass(frozen=True)
class Shared:
    """The server's cached pieces, built by app.py's st.cache_* and st.fragment wrappers and handed to every tab.

    Introduced in notebook 00_start_here. teacher(dataset, arch=None) -> ((teacher, info), kind);
    pool(dataset, kind, teacher) -> panels.test_pool; png(name, key, args) -> figure_png(name, *args) cached
    by key; student(dataset, width) -> panels.untrained_student; heatmap(rec, T, alpha), queued(request,
    panel) and watch(dataset) are fragments; grid_jobs maps (grid file, cache) to its heatmap Job.
    """

    teacher: Callable[..., tuple]
    pool: Callable[..., dict]
    png: Callable[..., bytes]
    student: Callable[..., Any]
    queue: jobs.TrainingQueue
    grid_jobs: dict
    heatmap: Callable[..., None]
    queued: Callable[..., None]
    watch: Callable[..., None]


@contextlib.contextmanager
def guarded(st, panel: str):
    """Show a failing panel's error and fix in the page; the other panels keep working. Notebook 00_start_here."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CacheWarning)
            yield
        for w in caught:
            if issubclass(w.category, CacheWarning):
                st.warning(f"{w.message}. Nothing to do: it is rebuilt from scratch.")
    except Exception as exc:  # Streamlit's rerun/stop signals are BaseExceptions and pass through
        st.error(f"**{panel} failed.** {panels.explain_error(exc)}")


def _key(dataset: str, arch: str | None) -> tuple:
    return dataset, arch, config.mode(), str(config.cache_dir())


def teacher_with_progress(st, running: dict, dataset: str, arch: str | None = None) -> tuple[tuple, str]:
    """((teacher, info), kind): teachers.get_teacher run in a background job, one per (dataset, arch, mode, cache).

    Introduced in notebook 00_start_here. kind is "full", or on a CPU's first launch "starter" (the course's
    teacher only): a small teacher shown while the mode's own one trains. Training shows a progress bar.
    A failed job is started again on the next call. `running` is the server's dict of jobs (app.py caches it).
    """
    key = _key(dataset, arch)
    job = running.get(key)
    if job is None or any(j is not None and j.future.done() and j.future.exception() is not None
                          for j in job.values()):
        starter = arch is None and jobs.needs_starter(dataset)
        job = running[key] = jobs.start_teachers(dataset, teachers.get_teacher, starter=starter, arch=arch)
    kind = "starter" if job["starter"] is not None and not job["full"].future.done() else "full"
    with contextlib.suppress(FutureTimeout):
        return job[kind].future.result(timeout=1.0), kind  # cached on disk: loads in well under a second
    what = "a small starter teacher (the full one follows in the background)" if kind == "starter" else "the teacher"
    with st.status(f"First launch: training {what}; afterwards it is loaded from `{config.cache_dir()}`",
                   expanded=True) as status:
        bar = st.progress(0.0, text="starting…")
        teacher = jobs.wait_with_progress(job[kind], lambda frac, text: bar.progress(frac or 0.0, text=text))
        status.update(label=f"{kind.capitalize()} teacher trained and cached", state="complete", expanded=False)
    return teacher, kind


def starter_notice(st, running: dict, dataset: str) -> None:
    """While a starter teacher is shown: the full one's training; redraws the page when done. Notebook 00_start_here."""
    job = running.get(_key(dataset, None))
    if job is None or job["full"].future.done():
        st.rerun(scope="app")
    main = "quick-mode" if config.is_quick() else "full"
    st.info(f"Showing a **starter teacher** (1 epoch on a subset) so the class can begin. The {main} teacher is "
            f"training in the background ({job['full'].text() or 'starting'}); the page switches to it when it is "
            f"done. Tip: `python -m kd_lessons teacher {dataset}` before class, or KD_QUICK=1 for small settings.")


def queued_training(st, queue: jobs.TrainingQueue, request: str, panel: str) -> None:
    """This session's "train now": its place in the queue, then its progress, then a redraw. Notebook 00_start_here."""
    # Guarded here too: Streamlit shows an error raised inside a fragment as a traceback itself (the
    # caller's guard then only sees FragmentHandledException), and timed fragment reruns skip the caller.
    with guarded(st, panel):
        ask = st.session_state.get(request)
        job = queue.get(ask["key"]) if ask else None
        if job is None:  # the server restarted since: the button asks again
            st.session_state.pop(request, None)
            return
        ahead, text = queue.status(job)
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


def missing_datasets(available: list[str]) -> list[str]:
    """One sidebar line per registered dataset not on offer yet: where its files must go. Notebook 00_start_here."""
    return [f"{info.label} appears here once its files are in the data folder (`python -m kd_lessons data`)."
            for name, info in datasets.DATASETS.items() if name not in available]


_FIGURES = {"curves": (plots.training_curves, 100)}  # the Accuracy tab's training curves (matplotlib)


def figure_png(name: str, *args) -> bytes:
    """PNG bytes of one of the app's figures (app.py caches them: a redraw renders nothing). Notebook 00_start_here."""
    if name not in _FIGURES:
        raise ValueError(f"no app figure named {name!r}; pick one of {sorted(_FIGURES)}")
    draw, dpi = _FIGURES[name]
    return panels.figure_png(draw(*args), dpi=dpi)


_SPECS: OrderedDict = OrderedDict()  # key -> Vega-Lite spec, shared by the server's sessions
_SPECS_LOCK, SPECS_KEEP = threading.Lock(), 2000


def cached_chart(st, key, build: Callable[[], Any], **kwargs) -> None:
    """Draw an Altair chart (build() makes it) whose Vega-Lite spec is made once per key. Notebook 00_start_here.

    Profiling 10 load-test sessions showed building and validating Altair specs as the largest share of a
    redraw's CPU; a slider move mostly redraws charts seen before. key must name everything the chart shows.
    """
    with _SPECS_LOCK:
        spec = _SPECS.get(key)
        if spec is not None:
            _SPECS.move_to_end(key)
    if spec is None:
        spec = build().to_dict()
        with _SPECS_LOCK:
            _SPECS[key] = spec
            while len(_SPECS) > SPECS_KEEP:
                _SPECS.popitem(last=False)
    st.vega_lite_chart(copy.deepcopy(spec), **kwargs)  # a copy: Streamlit takes the data out of the spec it gets
