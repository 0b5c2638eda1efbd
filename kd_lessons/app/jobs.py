"""Background training for the classroom app: a job per teacher, with progress any page rerun can read.

Introduced in notebook 00_start_here (the app tour). Training reports its steps through
`TrainOptions.on_step`, so the app shows real progress without the library knowing about Streamlit.
Every thread here is stopped and joined when the process exits (`stop_all`, run by atexit): a thread
left inside torch's C++ code while Python finalises aborts the server ("terminate called without an
active exception", SIGABRT) instead of letting it exit cleanly.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Hashable
from weakref import WeakSet

from kd_lessons import cache, config
from kd_lessons.datasets import DATASETS
from kd_lessons.train import TrainOptions

__all__ = ["Job", "Stopped", "STARTER_RECIPES", "TrainingQueue", "needs_starter", "start_teachers", "start_grid",
           "wait_with_progress", "train_cell", "train_method", "stop_all"]

# Small CNN recipes (overrides of teachers.recipe(dataset, "cnn")) for a fast first launch on a CPU: the app
# shows soft labels from this "starter" teacher (1 epoch on a subset) while the course's teacher trains.
# A view of the records' `starter` (kd_lessons.datasets): datasets without one get no starter teacher.
STARTER_RECIPES = {name: dict(info.starter) for name, info in DATASETS.items() if info.starter is not None}


class Stopped(BaseException):
    """Raised inside a job's thread when the process shuts down: its training unwinds and the thread ends.

    A BaseException (like KeyboardInterrupt): no `except Exception` on the way (a cache read's) may take it
    for a failure and act on it.
    """


_STOP = threading.Event()  # set while stop_all runs: every training stops at its next step (or epoch, or cell)
_CLOSED = threading.Event()  # set at interpreter exit: no new thread starts
_THREADS: WeakSet[threading.Thread] = WeakSet()
_QUEUES: WeakSet[TrainingQueue] = WeakSet()
_BUSY: set[int] = set()  # idents of the threads inside a job's work (the only ones stop_all may interrupt)
_REGISTRY = threading.Lock()
STOP_TIMEOUT, STOP_GRACE = 20.0, 2.0  # seconds stop_all waits in all; after GRACE it interrupts the work


def _check_stop() -> None:
    if _STOP.is_set() or _CLOSED.is_set():
        raise Stopped("the app server is shutting down; the training stopped (its cache is written atomically)")


def _spawn(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a daemon thread that stop_all stops and joins (daemon: a stuck one never blocks the exit)."""
    if _CLOSED.is_set():
        _check_stop()

    def run():
        with contextlib.suppress(Stopped):  # a Stopped raised outside a job's own try: nothing left to report
            target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    with _REGISTRY:
        _THREADS.add(thread)
    thread.start()
    return thread


@contextlib.contextmanager
def _busy():
    """Mark this thread as inside a job's work, where stop_all may raise Stopped if it ignores the stop event."""
    ident = threading.get_ident()
    with _REGISTRY:
        _BUSY.add(ident)
    try:
        yield
    finally:
        with _REGISTRY:
            _BUSY.discard(ident)


def _interrupt(thread: threading.Thread) -> None:
    """Raise Stopped in a thread at its next Python line: training code that checks no hook (a grid cell, the
    tour) runs Python between torch's operations, so it unwinds within one operation."""
    with _REGISTRY:
        if thread.ident not in _BUSY:
            return
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(Stopped))


def stop_all(timeout: float = STOP_TIMEOUT, grace: float = STOP_GRACE) -> list[str]:
    """Stop every job thread of this process and wait for them; return the names of those still running.

    Introduced in notebook 00_start_here (the app tour). Trainings stop at their next step or epoch check
    (Job.on_step raises Stopped); after `grace` seconds a job still working gets Stopped raised in its thread.
    Waiters on the stopped jobs get Stopped. Run at interpreter exit (atexit), also when Streamlit stops on
    SIGTERM or Ctrl-C; afterwards new jobs run normally (tests call it between jobs).
    """
    _STOP.set()
    try:
        for queue in list(_QUEUES):
            queue._wake()
        start, interrupted = time.monotonic(), False
        threads = [t for t in list(_THREADS) if t is not threading.current_thread()]
        while (alive := [t for t in threads if t.is_alive()]) and time.monotonic() - start < timeout:
            if not interrupted and time.monotonic() - start > grace:
                for thread in alive:
                    _interrupt(thread)
                interrupted = True
            alive[0].join(0.05)
        return [t.name for t in threads if t.is_alive()]
    finally:
        _STOP.clear()


def _at_exit() -> None:
    _CLOSED.set()
    left = stop_all()
    if left:
        print(f"kd_lessons.app.jobs: {', '.join(left)} still running {STOP_TIMEOUT:g} s after the stop; exiting "
              "anyway", file=sys.stderr)


atexit.register(_at_exit)


class Job:
    """A result to come (`future`) and how far its training is (`on_step` is given to the training loop)."""

    def __init__(self, label: str):
        self.label, self.future = label, Future()
        self.done_steps, self.total_steps = 0, 0

    def on_step(self, done: int, total: int) -> None:
        """Called by train's loop after each step; raises Stopped when the process is shutting down."""
        self.done_steps, self.total_steps = done, total
        _check_stop()

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
    its (teacher, info). stop_all stops it at the next step (checkpoints are written atomically).
    """
    jobs = {"starter": Job("starter teacher") if starter else None,
            "full": Job(f"{config.mode()} teacher" + (f" ({arch})" if arch else ""))}

    def work():
        for kind in ("starter", "full"):
            job = jobs[kind]
            if job is None or not job.future.set_running_or_notify_cancel():
                continue
            try:
                _check_stop()
                kwargs = {"arch": "cnn", "recipe_override": STARTER_RECIPES[dataset]} if kind == "starter" else \
                    ({"arch": arch} if arch else {})
                with _busy():
                    result = get_teacher(dataset, options=TrainOptions(progress=False, on_step=job.on_step), **kwargs)
                job.future.set_result(result)
            except BaseException as exc:  # handed to whoever waits on the future
                job.future.set_exception(exc)

    _spawn(work, f"kd-teachers-{dataset}")
    return jobs


def start_grid(rec: dict, Ts, alphas, spread_cells=(), spread_seeds=(0, 1, 2)) -> Job:
    """Fill the recipe's T x alpha grid (then the seed spread at `spread_cells`) in a thread stop_all stops.

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
            _check_stop()
            cached = grid.load(rec)
            have = len({(t, a) for t, a in zip(cached["T"], cached["alpha"]) if t in Ts and a in alphas})
            with _busy():
                grid.load_or_run(rec, Ts, alphas, progress=False,
                                 callback=lambda done, n, row: job.on_step(have + done, total))
                job.on_step(len(Ts) * len(alphas), total)
                table = grid.spread(rec, spread_cells, spread_seeds) if spread_cells else None
            job.on_step(total, total)
            job.future.set_result(table)
        except BaseException as exc:  # handed to whoever waits on the future
            job.future.set_exception(exc)

    _spawn(work, f"kd-grid-{rec.dataset}")
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
        _QUEUES.add(self)

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
                self._thread = _spawn(self._serve, "kd-training-queue")
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

    def _wake(self) -> None:
        """stop_all: end the worker (it hands Stopped to every waiting request)."""
        with self._lock:
            self._lock.notify_all()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not _STOP.is_set():
                    self._lock.wait()
                if _STOP.is_set():
                    for _, job, _ in self._waiting:
                        if job.future.set_running_or_notify_cancel():
                            job.future.set_exception(Stopped("the app server shut down before this training"))
                    self._waiting.clear()
                    return
                key, job, work = self._waiting.pop(0)
                self._running = job
            try:
                if job.future.set_running_or_notify_cancel():
                    lock_file = cache.path("sweeps", "live_training") if self._lock_file is None else self._lock_file
                    with contextlib.nullcontext() if lock_file is False else \
                            cache.lock(lock_file, "a live training of the classroom app"):
                        with self._lock:
                            self.trained.append(key)
                        with _busy():
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
