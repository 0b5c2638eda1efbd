"""kd_lessons.results: record checks and stages, finalize writes atomically, bad ledgers name the lesson to rerun."""
import json
import os

import pytest

from kd_lessons import results, stats

RUN = {"commit": "0" * 40, "date": "2026-12-07T12:00:00Z", "machine": {"cpu": "x", "threads": 2}, "mode": "full",
       "wall_s": {"total": 12.5}, "asserts": [{"cell": 3, "source": "assert d.high < 0", "passed": True,
                                               "full_only": True}], "status": "passed"}


@pytest.fixture
def ledger_env(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("KD_LESSON", "04_distill_mnist")
    return tmp_path


def test_record_outside_make_full_checks_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("KD_RESULTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    entry = results.record("teacher_errors", [60, 62, 61], "errors", seeds=[0, 1, 2])
    assert entry["value"] == 61 and entry["n"] == 3 and entry["low"] < 61 < entry["high"]
    assert list(tmp_path.iterdir()) == []


def test_staged_numbers_and_stages_reach_the_ledger(ledger_env):
    d = stats.paired([10, 12, 11, 13, 12], [14, 15, 13, 16, 15])
    results.record("kd_minus_scratch_errors", d, "errors", seeds=[0, 1, 2, 3, 4], higher_is_better=False)
    with results.stage("students"):
        pass
    path = results.finalize("04_distill_mnist", RUN, ledger_env)
    obj = results.load("04_distill_mnist", ledger_env)
    entry = obj["numbers"]["kd_minus_scratch_errors"]
    assert path.name == "04_distill_mnist.json" and obj["seeds"] == [0, 1, 2, 3, 4]
    assert entry["verdict"] == "better" and entry["high"] < 0 and entry["values"] == list(d.values)
    assert [s["name"] for s in obj["wall_s"]["stages"]] == ["students"] and obj["wall_s"]["total"] == 12.5
    assert not (ledger_env / ".staging" / "04_distill_mnist.json").exists()


def test_numpy_numbers_reach_the_ledger_as_json(ledger_env):
    import numpy as np
    d = stats.Interval(np.float64(-0.5), np.float64(-0.7), np.float64(-0.3), np.int64(3))  # as pandas rows give them
    results.record("numpy_minus_scratch", d, "bits/char", seeds=[0, 1, 2], higher_is_better=False)
    results.finalize("04_distill_mnist", RUN, ledger_env)
    entry = results.load("04_distill_mnist", ledger_env)["numbers"]["numpy_minus_scratch"]
    assert entry["n"] == 3 and entry["verdict"] == "better"


def test_an_interrupted_write_leaves_the_previous_ledger(ledger_env, monkeypatch):
    results.record("teacher_errors", 61, "errors")
    results.finalize("04_distill_mnist", RUN, ledger_env)
    before = (ledger_env / "04_distill_mnist.json").read_text()
    results.record("teacher_errors", 99, "errors")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        results.finalize("04_distill_mnist", RUN, ledger_env)
    assert (ledger_env / "04_distill_mnist.json").read_text() == before
    assert not [p for p in os.listdir(ledger_env) if p.endswith(".tmp")]


def test_missing_and_malformed_ledgers_name_the_file_and_the_rerun(tmp_path):
    with pytest.raises(results.LedgerError, match=r"12_data_free_kd.json is missing.*make full LESSONS=12"):
        results.load("12_data_free_kd", tmp_path)
    (tmp_path / "12_data_free_kd.json").write_text("{not json")
    with pytest.raises(results.LedgerError, match="not valid JSON.*LESSONS=12"):
        results.load("12_data_free_kd", tmp_path)
    bad = {"schema": 1, **RUN, "lesson": "12_data_free_kd", "seeds": [], "numbers": {"x": {"value": "high"}}}
    (tmp_path / "12_data_free_kd.json").write_text(json.dumps(bad))
    with pytest.raises(results.LedgerError, match="number 'x'.*LESSONS=12"):
        results.load("12_data_free_kd", tmp_path)


@pytest.mark.parametrize("args,match", [(("Bad Name", 1.0, "s"), "lower_snake_case"), (("x", 1.0, ""), "unit"),
                                        (("x", [1.0, float("inf")], "s"), "diverged")])
def test_record_refuses_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        results.record(*args)


def test_record_under_make_full_needs_a_lesson_id(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("KD_LESSON", "")
    with pytest.raises(results.LedgerError, match="KD_LESSON"):
        results.record("x", 1.0, "s")
