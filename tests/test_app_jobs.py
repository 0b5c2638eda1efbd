"""Tests for kd_lessons.app.jobs: background teacher training and grid filling with progress the page can read.

Stand-ins replace get_teacher and the grid functions: the threads and the progress are under test here.
"""
import threading
import time

import pandas as pd
import pytest

from kd_lessons import data, teachers
from kd_lessons.app import jobs
from kd_lessons.runs import grid
from kd_lessons.train import TrainOptions


def test_job_reports_steps_as_a_fraction_and_text():
    job = jobs.Job("full teacher")
    assert job.fraction() is None and job.text() == ""
    job.on_step(30, 120)
    assert job.fraction() == pytest.approx(0.25) and job.text() == "full teacher: step 30/120"


def test_wait_with_progress_reads_the_training_steps():
    def get_teacher(dataset, options: TrainOptions, **kwargs):
        for step in range(1, 5):
            time.sleep(0.15)
            options.on_step(step, 4)
        return "teacher", {"test_accuracy": 0.9}

    running = jobs.start_teachers("mnist", get_teacher, starter=False)
    seen = []
    result = jobs.wait_with_progress(running["full"], lambda frac, text: seen.append((frac, text)), poll_s=0.05)
    assert result == ("teacher", {"test_accuracy": 0.9})
    fractions = [f for f, _ in seen if f is not None]
    assert fractions and fractions == sorted(fractions) and max(fractions) <= 1.0
    assert any("teacher: step" in text for _, text in seen)


def test_start_teachers_trains_the_starter_first_then_the_full_teacher():
    calls, release = [], threading.Event()

    def get_teacher(dataset, options, arch=None, recipe_override=None):
        assert options.progress is False and options.on_step is not None
        calls.append((arch, recipe_override))
        if recipe_override is None:
            release.wait(10)
            return "full", {}
        return "starter", {}

    running = jobs.start_teachers("mnist", get_teacher, starter=True)
    assert running["starter"].future.result(timeout=10) == ("starter", {})
    assert not running["full"].future.done()
    release.set()
    assert running["full"].future.result(timeout=10) == ("full", {})
    assert calls == [("cnn", jobs.STARTER_RECIPES["mnist"]), (None, None)]  # starter: a small CNN; then the course's
    only_full = jobs.start_teachers("mnist", lambda d, **kw: ("full", {}), starter=False)
    assert only_full["starter"] is None and only_full["full"].future.result(timeout=10) == ("full", {})


def test_a_failing_training_is_handed_to_whoever_waits():
    def get_teacher(dataset, options, **kwargs):
        raise RuntimeError("no data")

    running = jobs.start_teachers("mnist", get_teacher, starter=False)
    with pytest.raises(RuntimeError, match="no data"):
        running["full"].future.result(timeout=10)


def test_needs_starter_only_on_a_cpu_without_a_cached_teacher(monkeypatch):
    monkeypatch.setenv("KD_DEVICE", "cpu")
    monkeypatch.setattr(teachers, "teacher_info", lambda dataset: None)
    assert jobs.needs_starter("mnist") and jobs.needs_starter("fashion_mnist")
    assert not jobs.needs_starter("cifar10")  # no starter recipe: the page waits for the real teacher
    monkeypatch.setattr(teachers, "teacher_info", lambda dataset: {"test_accuracy": 0.99})
    assert not jobs.needs_starter("mnist")


def test_starter_recipes_are_small_overrides_of_the_cnn_recipe():
    assert set(jobs.STARTER_RECIPES) == {"mnist", "fashion_mnist"}
    for dataset, override in jobs.STARTER_RECIPES.items():
        cnn = teachers.recipe(dataset, "cnn")
        assert set(override) <= set(cnn.asdict())             # keys the cnn recipe has, so get_teacher applies them
        assert override["num_epochs"] == 1 and override["width"] <= cnn.width
        assert 0 < override["n_train"] < 60000           # a subset of the training images


# ---------------------------------------------------------------- the heatmap job

class _Recording(jobs.Job):
    """A Job that remembers every progress report."""

    def __init__(self, label):
        super().__init__(label)
        self.reports = []

    def on_step(self, done, total):
        self.reports.append((done, total))
        super().on_step(done, total)


@pytest.fixture
def fake_grid(monkeypatch):
    """grid.load / load_or_run / spread on an in-memory table; each cell 'trains' for 50 ms."""
    state = {"rows": [], "spread_calls": [], "release": threading.Event()}
    state["release"].set()

    def frame():
        return pd.DataFrame(state["rows"], columns=grid.COLUMNS)

    def load_or_run(rec, Ts, alphas, progress=True, callback=None):
        assert progress is False
        have = {(r["T"], r["alpha"]) for r in state["rows"]}
        todo = [(T, a) for a in alphas for T in Ts if (T, a) not in have]
        for done, (T, a) in enumerate(todo, 1):
            state["release"].wait(10)
            time.sleep(0.05)
            row = {"T": T, "alpha": a, "accuracy": 0.9, "errors": 10, "seconds": 0.05, "source": "grid"}
            state["rows"].append(row)
            if callback is not None:
                callback(done, len(todo), row)
        return frame()

    def spread(rec, cells, seeds=(0, 1, 2), progress=False):
        state["spread_calls"].append((rec, tuple(cells), tuple(seeds)))
        return pd.DataFrame({"T": [c[0] for c in cells], "alpha": [c[1] for c in cells],
                             "accuracy_std": [0.01] * len(cells), "seeds": [len(seeds)] * len(cells)})

    monkeypatch.setattr(grid, "load", lambda rec: frame())
    monkeypatch.setattr(grid, "load_or_run", load_or_run)
    monkeypatch.setattr(grid, "spread", spread)
    monkeypatch.setattr(jobs, "Job", _Recording)
    return state


def test_start_grid_fills_the_grid_then_the_spread_and_returns_the_spread(fake_grid):
    rec = grid.recipe("mnist")
    job = jobs.start_grid(rec, [1.0, 4.0], [0.0, 0.9], spread_cells=grid.SPREAD_CELLS, spread_seeds=(0, 1, 2))
    table = job.future.result(timeout=10)
    total = 4 + 2 * 2  # four cells, then two more seeds at each of two spread cells
    assert job.reports[:4] == [(1, total), (2, total), (3, total), (4, total)]  # one step per finished cell
    assert job.reports[-1] == (total, total) and job.fraction() == 1.0
    assert [done for done, _ in job.reports] == sorted(done for done, _ in job.reports)
    assert job.text() == f"heatmap: step {total}/{total}"
    assert fake_grid["spread_calls"] == [(rec, grid.SPREAD_CELLS, (0, 1, 2))]
    assert list(zip(table["T"], table["alpha"])) == list(grid.SPREAD_CELLS)
    assert len(fake_grid["rows"]) == 4


def test_start_grid_counts_cached_cells_as_done(fake_grid):
    fake_grid["rows"].append({"T": 1.0, "alpha": 0.0, "accuracy": 0.8, "errors": 20, "seconds": 1.0, "source": "grid"})
    fake_grid["rows"].append({"T": 3.0, "alpha": 0.5, "accuracy": 0.8, "errors": 20, "seconds": 1.0, "source": "live"})
    job = jobs.start_grid(grid.recipe("mnist"), [1.0, 4.0], [0.0, 0.9])
    assert job.future.result(timeout=10) is None          # no spread cells: no spread table
    assert job.reports[0] == (2, 4)                       # one of four cached (the off-grid live run is not)
    assert job.reports[-1] == (4, 4) and fake_grid["spread_calls"] == []


def test_start_grid_reports_progress_while_it_runs(fake_grid):
    fake_grid["release"].clear()
    job = jobs.start_grid(grid.recipe("mnist"), [1.0], [0.0, 0.9])
    time.sleep(0.1)
    assert not job.future.done() and job.fraction() is None and job.text() == ""
    fake_grid["release"].set()
    seen = []
    assert jobs.wait_with_progress(job, lambda frac, text: seen.append((frac, text)), poll_s=0.01) is None
    assert job.fraction() == 1.0


def test_start_grid_hands_errors_to_the_waiter(fake_grid, monkeypatch):
    def broken(rec, Ts, alphas, progress=True, callback=None):
        raise data.DataUnavailableError("Could not load dataset 'mnist' (simulated)")

    monkeypatch.setattr(grid, "load_or_run", broken)
    job = jobs.start_grid(grid.recipe("mnist"), [1.0], [0.0], spread_cells=grid.SPREAD_CELLS)
    with pytest.raises(data.DataUnavailableError, match=r"Could not load dataset 'mnist' \(simulated\)"):
        job.future.result(timeout=10)
    assert fake_grid["spread_calls"] == []


def test_start_grid_hands_spread_errors_to_the_waiter(fake_grid, monkeypatch):
    def broken(rec, cells, seeds=(0, 1, 2), progress=False):
        raise ValueError("seeds=[0]: a spread needs at least two seeds")

    monkeypatch.setattr(grid, "spread", broken)
    job = jobs.start_grid(grid.recipe("mnist"), [1.0], [0.0], spread_cells=grid.SPREAD_CELLS, spread_seeds=(0,))
    with pytest.raises(ValueError, match="a spread needs at least two seeds"):
        jobs.wait_with_progress(job, lambda frac, text: None, poll_s=0.01)
    assert len(fake_grid["rows"]) == 1  # the grid itself was filled first


def test_wait_with_progress_says_when_another_process_holds_the_teachers_lock(monkeypatch):
    from kd_lessons import cache

    message = "waiting for another process that is building the MNIST cnn teacher (/x/teacher.pt.lock)"
    monkeypatch.setattr(cache, "waiting", lambda: [message])

    def get_teacher(dataset, options, **kwargs):
        time.sleep(0.3)  # no training step reported: the lock is held elsewhere
        return "teacher", {}

    running = jobs.start_teachers("mnist", get_teacher, starter=False)
    seen = []
    jobs.wait_with_progress(running["full"], lambda frac, text: seen.append(text), poll_s=0.05)
    assert any(text.startswith(message) for text in seen)


# ---------------------------------------------------------------- the "train now" queue

def _gated_work(log, gate, result):
    """Work that records when it starts and trains until the gate opens."""
    def work(job):
        log.append(("start", result))
        job.on_step(1, 2)
        assert gate.wait(10), "the test never opened the gate"
        log.append(("end", result))
        return result
    return work


def test_two_requests_one_trains_the_other_shows_its_queue_position(tmp_path):
    queue, log = jobs.TrainingQueue(lock_file=tmp_path / "live"), []
    gate_a, gate_b = threading.Event(), threading.Event()
    a = queue.submit("a", "KD T=4", _gated_work(log, gate_a, "A"))
    b = queue.submit("b", "KD T=8", _gated_work(log, gate_b, "B"))
    deadline = time.monotonic() + 10
    while queue.ahead(a) != 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queue.ahead(a) == 0 and queue.ahead(b) == 1  # a trains; b waits with one training ahead
    time.sleep(0.2)
    assert log == [("start", "A")] and not b.future.running()  # b has not started while a trains
    gate_a.set()
    assert a.future.result(timeout=10) == "A"
    while queue.ahead(b) != 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queue.ahead(b) == 0 and queue.ahead(a) is None
    gate_b.set()
    assert b.future.result(timeout=10) == "B"
    assert log == [("start", "A"), ("end", "A"), ("start", "B"), ("end", "B")]  # one at a time, in order
    assert queue.trained == ["a", "b"]


def test_the_same_request_twice_trains_once(tmp_path):
    queue, log, gate = jobs.TrainingQueue(lock_file=tmp_path / "live"), [], threading.Event()
    first = queue.submit("cell", "KD", _gated_work(log, gate, "student"))
    again = queue.submit("cell", "KD", _gated_work(log, gate, "another student"))
    assert again is first
    gate.set()
    assert first.future.result(timeout=10) == "student"
    assert queue.submit("cell", "KD", _gated_work(log, gate, "later")) is first  # finished: its result is kept
    assert queue.trained == ["cell"] and log == [("start", "student"), ("end", "student")]


def test_a_failed_request_reports_its_error_and_can_be_retried(tmp_path):
    queue = jobs.TrainingQueue(lock_file=tmp_path / "live")

    def diverges(job):
        raise RuntimeError("simulated: training diverged")

    failed = queue.submit("cell", "KD", diverges)
    with pytest.raises(RuntimeError, match="diverged"):
        failed.future.result(timeout=10)
    retried = queue.submit("cell", "KD", lambda job: "ok")
    assert retried is not failed and retried.future.result(timeout=10) == "ok"
    assert queue.get("cell") is retried and queue.get("unknown") is None


def test_queues_sharing_a_lock_file_never_train_at_once(tmp_path):
    """Two servers on one machine (two queues, one lock file): their trainings never overlap."""
    spans, lock = [], threading.Lock()

    def work(job):
        start = time.monotonic()
        time.sleep(0.2)
        with lock:
            spans.append((start, time.monotonic()))
        return "done"

    queues = [jobs.TrainingQueue(lock_file=tmp_path / "live") for _ in range(2)]
    submitted = [q.submit(("cell", i), "KD", work) for i in range(2) for q in queues]
    assert [j.future.result(timeout=20) for j in submitted] == ["done"] * 4
    spans.sort()
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans


def test_finished_jobs_beyond_keep_are_dropped(tmp_path):
    queue = jobs.TrainingQueue(lock_file=False, keep=2)
    done = [queue.submit(i, "KD", lambda job, i=i: i) for i in range(4)]
    assert [j.future.result(timeout=10) for j in done] == [0, 1, 2, 3]
    queue.submit(4, "KD", lambda job: 4).future.result(timeout=10)
    assert queue.get(0) is None and queue.get(3) is done[3]


# ---------------------------------------------------------------- stopping at exit (jobs.stop_all)

def _spin(job, steps):
    """A training that reports every step and never ends by itself."""
    step = 0
    while True:
        step += 1
        steps.append(step)
        time.sleep(0.005)
        job.on_step(step, 10**9)


def test_stop_all_stops_a_training_at_its_next_step_and_fails_the_waiting_ones():
    queue, steps = jobs.TrainingQueue(lock_file=False), []
    running = queue.submit("a", "KD", lambda job: _spin(job, steps))
    waiting = queue.submit("b", "KD", lambda job: "never")
    deadline = time.monotonic() + 10
    while len(steps) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    assert jobs.stop_all(timeout=10, grace=10) == []  # no interruption needed: the step check stops it
    assert time.monotonic() - start < 2
    assert isinstance(running.future.exception(timeout=1), jobs.Stopped)
    assert isinstance(waiting.future.exception(timeout=1), jobs.Stopped) and queue.trained == ["a"]
    assert queue.submit("c", "KD", lambda job: "ok").future.result(timeout=10) == "ok"  # re-armed afterwards


def test_stop_all_interrupts_work_that_checks_no_hook():
    spins, ticks = threading.Event(), []

    def get_teacher(dataset, options, **kwargs):  # never calls options.on_step: a grid cell, the tour
        while True:
            ticks.append(1)
            spins.set()
            time.sleep(0.005)

    running = jobs.start_teachers("mnist", get_teacher, starter=True)
    assert spins.wait(10)
    start = time.monotonic()
    assert jobs.stop_all(timeout=10, grace=0.3) == []
    assert 0.3 <= time.monotonic() - start < 5  # waited the grace period, then interrupted it
    assert isinstance(running["starter"].future.exception(timeout=1), jobs.Stopped)
    assert isinstance(running["full"].future.exception(timeout=1), jobs.Stopped)  # the next job never started
    n = len(ticks)
    time.sleep(0.1)
    assert len(ticks) == n  # the thread has ended


def test_stop_all_leaves_a_thread_outside_a_jobs_work_alone():
    release = threading.Event()
    thread = jobs._spawn(lambda: release.wait(10), "kd-test-idle")
    assert jobs.stop_all(timeout=0.5, grace=0.1) == ["kd-test-idle"]  # not interrupted: it is in no job's work
    release.set()
    thread.join(5)
    assert not thread.is_alive()
