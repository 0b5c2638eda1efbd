"""Tests for kd_lessons.app.jobs: background teacher training with progress the page can read."""
import threading
import time

import pytest

from kd_lessons import teachers
from kd_lessons.app import jobs
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

    def get_teacher(dataset, options, recipe_override=None):
        assert options.progress is False and options.on_step is not None
        calls.append(recipe_override)
        if recipe_override is None:
            release.wait(10)
            return "full", {}
        return "starter", {}

    running = jobs.start_teachers("mnist", get_teacher, starter=True)
    assert running["starter"].future.result(timeout=10) == ("starter", {})
    assert not running["full"].future.done()
    release.set()
    assert running["full"].future.result(timeout=10) == ("full", {})
    assert calls == [jobs.STARTER_RECIPES["mnist"], None]
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
    assert jobs.needs_starter("mnist")
    monkeypatch.setattr(teachers, "teacher_info", lambda dataset: {"test_accuracy": 0.99})
    assert not jobs.needs_starter("mnist")
