"""Background training for the classroom app: a job per teacher, with progress any page rerun can read.

Introduced in notebook 00_start_here (the app tour). Training reports its steps through
`TrainOptions.on_step`, so the app shows real progress without the library knowing about Streamlit.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from kd_lessons import cache, config
from kd_lessons.train import TrainOptions

__all__ = ["Job", "STARTER_RECIPES", "needs_starter", "start_teachers", "start_grid", "wait_with_progress"]

# Small CNN recipes (overrides of teachers.recipe(dataset, "cnn")) for a fast first launch on a CPU: the app
# shows soft labels from this "starter" teacher (1 epoch on a subset) while the course's teacher trains.
STARTER_RECIPES = {"mnist": {"width": 16, "num_epochs": 1, "augment": "none", "n_train": 10000},
                   "fashion_mnist": {"width": 16, "num_epochs": 1, "augment": "none", "n_train": 10000}}


class Job:
    """A result to come (`future`) and how far its training is (`on_step` is given to the training loop)."""

    def __init__(self, label: str):
        self.label, self.future = label, Future()
        self.done_steps, self.total_steps = 0, 0

    def on_step(self, done: int, total: int) -> None:
        """Called by train's loop after each step."""
        self.done_steps, self.total_steps = done, total

    def fraction(self) -> float | None:
        """Steps done / total, or None before the first step."""
        return min(self.done_steps / self.total_steps, 1.0) if self.total_steps else None

    def text(self) -> str:
        """'full teacher: step 120/469', or '' before the first step."""
        return f"{self.label}: step {self.done_steps}/{self.total_steps}" if self.total_steps else ""


def needs_starter(dataset: str) -> bool:
    """True on a CPU while the teacher is not cached yet: training it takes minutes (full mode: much longer)."""
    from kd_lessons.teachers import teacher_info

    return dataset in STARTER_RECIPES and config.get_device().type == "cpu" and teacher_info(dataset) is None


def start_teachers(dataset: str, get_teacher: Callable, starter: bool) -> dict[str, Job | None]:
    """One daemon thread: the starter teacher first (if asked), then the full one; a Job for each.

    get_teacher is teachers.get_teacher (passed in so tests can use a stand-in); each Job's result is
    its (teacher, info). Daemon: stopping the server never waits (checkpoints are written atomically).
    """
    jobs = {"starter": Job("starter teacher") if starter else None, "full": Job(f"{config.mode()} teacher")}

    def work():
        for kind in ("starter", "full"):
            job = jobs[kind]
            if job is None or not job.future.set_running_or_notify_cancel():
                continue
            try:
                kwargs = {"arch": "cnn", "recipe_override": STARTER_RECIPES[dataset]} if kind == "starter" else {}
                job.future.set_result(get_teacher(dataset, options=TrainOptions(progress=False, on_step=job.on_step),
                                                  **kwargs))
            except BaseException as exc:  # handed to whoever waits on the future
                job.future.set_exception(exc)

    threading.Thread(target=work, name=f"kd-teachers-{dataset}", daemon=True).start()
    return jobs


def start_grid(rec: dict, Ts, alphas, spread_cells=(), spread_seeds=(0, 1, 2)) -> Job:
    """Fill the recipe's T x alpha grid (then the seed spread at `spread_cells`) in a daemon thread.

    Cells are cached as they finish, so the page can draw the heatmap while it fills; the Job's
    steps count cells. Its result is the spread table (empty without spread_cells).
    """
    from kd_lessons.runs import grid  # late: grid imports the training stack

    job = Job("heatmap")
    total = len(Ts) * len(alphas) + len(spread_cells) * (len(spread_seeds) - 1)

    def work():
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            cached = grid.load(rec)
            have = len({(t, a) for t, a in zip(cached["T"], cached["alpha"]) if t in Ts and a in alphas})
            grid.load_or_run(rec, Ts, alphas, progress=False,
                             callback=lambda done, n, row: job.on_step(have + done, total))
            job.on_step(len(Ts) * len(alphas), total)
            table = grid.spread(rec, spread_cells, spread_seeds) if spread_cells else None
            job.on_step(total, total)
            job.future.set_result(table)
        except BaseException as exc:  # handed to whoever waits on the future
            job.future.set_exception(exc)

    threading.Thread(target=work, name=f"kd-grid-{rec['dataset']}", daemon=True).start()
    return job


def wait_with_progress(job: Job, on_progress: Callable[[float | None, str], None], poll_s: float = 0.5):
    """Wait for a job, calling on_progress(fraction or None, text) from this thread; return its result."""
    start = time.perf_counter()
    while True:
        try:
            return job.future.result(timeout=poll_s)
        except FutureTimeout:
            pass
        elapsed = f"{time.perf_counter() - start:.0f} s"
        waits = cache.waiting()  # another process (a notebook, the CLI) may be training the same teacher
        text = f"{job.text()}, {elapsed}" if job.text() else (f"{waits[0]}, {elapsed}" if waits else elapsed)
        on_progress(job.fraction(), text)
