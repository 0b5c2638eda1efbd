"""Background training for the classroom app: a job per teacher, with progress any page rerun can read.

Introduced in notebook 00_start_here (the app tour). Training reports its steps through
`TrainOptions.on_step`, so the app shows real progress without the library knowing about Streamlit.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Hashable

from kd_lessons import cache, config
from kd_lessons.datasets import DATASETS
from kd_lessons.train import TrainOptions

__all__ = ["Job", "STARTER_RECIPES", "TrainingQueue", "needs_starter", "start_teachers", "start_grid",
           "wait_with_progress", "train_cell", "train_method"]

# Small CNN recipes (overrides of teachers.recipe(dataset, "cnn")) for a fast first launch on a CPU: the app
# shows soft labels from this "starter" teacher (1 epoch on a subset) while the course's teacher trains.
# A view of the records' `starter` (kd_lessons.datasets): datasets without one get no starter teacher.
STARTER_RECIPES = {name: dict(info.starter) for name, info in DATASETS.items() if info.starter is not None}


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


def start_teachers(dataset: str, get_teacher: Callable, starter: bool,
                   arch: str | None = None) -> dict[str, Job | None]:
    """One daemon thread: the starter teacher first (if asked), then the full one (arch None: the course's).

    get_teacher is teachers.get_teacher (passed in so tests can use a stand-in); each Job's result is
    its (teacher, info). Daemon: stopping the server never waits (checkpoints are written atomically).
    """
    jobs = {"starter": Job("starter teacher") if starter else None,
            "full": Job(f"{config.mode()} teacher" + (f" ({arch})" if arch else ""))}

    def work():
        for kind in ("starter", "full"):
            job = jobs[kind]
            if job is None or not job.future.set_running_or_notify_cancel():
                continue
            try:
                kwargs = {"arch": "cnn", "recipe_override": STARTER_RECIPES[dataset]} if kind == "starter" else \
                    ({"arch": arch} if arch else {})
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

    threading.Thread(target=work, name=f"kd-grid-{rec.dataset}", daemon=True).start()
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


class TrainingQueue:
    """"Train now" requests from every session of a server, trained one at a time, in order of arrival.

    Introduced in notebook 00_start_here (the app tour). A class of students pressing the button at once would
    otherwise start a training each and starve every page of the cores. Identical requests (same key) share one
    Job, so nothing is trained twice while its result is kept (the last `keep` finished jobs; a failed one is
    replaced by the next request). Across processes on one machine (two app servers, a notebook kernel using
    the same queue) the worker also holds cache.lock on `lock_file` while it trains (default: beside the cache's
    sweeps; False: no cross-process lock).
    """

    def __init__(self, lock_file=None, keep: int = 64):
        self._lock = threading.Condition()
        self._waiting: list[tuple[Hashable, Job, Callable[[Job], Any]]] = []  # in arrival order
        self._jobs: OrderedDict[Hashable, Job] = OrderedDict()  # key -> its job: waiting, training or finished
        self._running: Job | None = None
        self._lock_file, self._keep, self._thread = lock_file, keep, None
        self.trained: list[Hashable] = []  # keys in the order their training started (what the load test checks)

    def submit(self, key: Hashable, label: str, work: Callable[[Job], Any]) -> Job:
        """The Job for key: the one already waiting, training or done, else a new one at the end of the queue.

        work(job) trains and returns the result; it may report steps with job.on_step(done, total).
        """
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not (job.future.done() and job.future.exception() is not None):
                return job
            job = self._jobs[key] = Job(label)
            self._jobs.move_to_end(key)
            self._waiting.append((key, job, work))
            finished = [k for k, j in self._jobs.items() if j.future.done()]
            for old in finished[:max(0, len(finished) - self._keep)]:
                del self._jobs[old]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="kd-training-queue", daemon=True)
                self._thread.start()
            self._lock.notify()
        return job

    def get(self, key: Hashable) -> Job | None:
        """The Job of key (waiting, training or finished), or None when unknown (never submitted, or dropped)."""
        with self._lock:
            return self._jobs.get(key)

    def ahead(self, job: Job) -> int | None:
        """How many trainings come before this job: 0 while it trains, None once it is done (or unknown)."""
        with self._lock:
            if job.future.done():
                return None
            if self._running is job:
                return 0
            for i, (_, waiting, _) in enumerate(self._waiting):
                if waiting is job:
                    return i + (self._running is not None)
            return None

    def status(self, job: Job) -> tuple[int | None, str]:
        """(trainings ahead, what the page says): its place in the queue, its progress, or (None, "done")."""
        ahead = self.ahead(job)
        if job.future.done() or ahead is None:
            return None, f"{job.label}: done"
        if ahead:
            return ahead, (f"Queued: {ahead} training{'s' if ahead > 1 else ''} ahead of yours ({job.label}). One "
                           f"student trains at a time on this server, so every page stays responsive; yours "
                           f"starts by itself.")
        waits = cache.waiting()  # the worker may wait for another process's training on this machine
        return 0, job.text() or (f"{job.label}: {waits[0]}" if waits else f"{job.label}: starting…")

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._waiting:
                    self._lock.wait()
                key, job, work = self._waiting.pop(0)
                self._running = job
            try:
                if job.future.set_running_or_notify_cancel():
                    lock_file = cache.path("sweeps", "live_training") if self._lock_file is None else self._lock_file
                    with contextlib.nullcontext() if lock_file is False else \
                            cache.lock(lock_file, "a live training of the classroom app"):
                        with self._lock:
                            self.trained.append(key)
                        result = work(job)
                    job.future.set_result(result)
            except BaseException as exc:  # handed to whoever waits on the future
                job.future.set_exception(exc)
            finally:
                with self._lock:
                    self._running = None


def train_cell(rec: dict, T: float, alpha: float) -> Callable[[Job], dict]:
    """The app's "train this student now": the baseline (cached after its first run), then (T, alpha), stored.

    For TrainingQueue.submit; the result is {"row", "base", "student"} and the Job counts the student's steps.
    """
    from kd_lessons.runs import grid  # late: grid imports the training stack

    def work(job: Job) -> dict:
        base_row, _ = grid.baseline(rec)
        student, row, history = grid.run_one(
            rec, T, alpha, callback=lambda epoch, h: job.on_step(int(h["step"][-1]), rec.steps))
        grid.add_result(rec, row, history)
        return {"row": row, "base": base_row, "student": student}

    return work


def train_method(rec: dict, teacher, name: str, seed: int) -> Callable[[Job], Any]:
    """The Methods tab's "train now": one method, scratch and Hinton KD for one seed (runs.tour caches them)."""
    from kd_lessons.runs import tour

    names = list(dict.fromkeys(["scratch", "Hinton KD", name]))  # both baselines of the tab's gain columns
    return lambda job: tour.load_or_run(rec, teacher, seeds=[int(seed)], names=names)
