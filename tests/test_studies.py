"""Notebook 04's comparisons: summaries match pandas/numpy, both methods share one budget, the
model table measures what it says."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from kd_lessons.models import MLPStudent, count_params, size_on_disk
from kd_lessons.studies import error_ratio, model_table, scratch_vs_distilled, summarize


def _runs():
    return pd.DataFrame({"method": ["scratch", "distilled"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                         "errors": [150, 100, 160, 110, 170, 90], "accuracy": [.985, .990, .984, .989, .983, .991]})


def test_summarize_is_mean_and_sample_std_per_method():
    s = summarize(_runs())
    assert list(s.index) == ["scratch", "distilled"]
    assert s.loc["scratch", "errors_mean"] == 160 and s.loc["distilled", "errors_mean"] == 100
    assert math.isclose(s.loc["scratch", "errors_std"], np.std([150, 160, 170], ddof=1))
    assert s.loc["distilled", "seeds"] == 3
    one = summarize(_runs().iloc[:2])
    assert math.isnan(one.loc["scratch", "errors_std"])


def test_error_ratio_and_its_input_checks():
    assert math.isclose(error_ratio(_runs()), 100 / 160)
    with pytest.raises(ValueError, match="scratch"):
        error_ratio(_runs()[_runs()["method"] == "distilled"])
    with pytest.raises(ValueError, match="columns"):
        summarize(pd.DataFrame({"method": ["a"]}))


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(96, 1, 28, 28, generator=g), torch.randn(30, 1, 28, 28, generator=g)
    y, yt = torch.randint(0, 10, (96,), generator=g), torch.randint(0, 10, (30,), generator=g)
    torch.manual_seed(0)
    teacher = MLPStudent(hidden=(32,)).eval()
    return teacher, {"dataset": "toy", "x": x, "y": y, "x_test": xt, "y_test": yt}


def test_scratch_vs_distilled_runs_both_methods_per_seed_and_caches_teacher_logits(tiny, tmp_path):
    teacher, data = tiny
    runs, students = scratch_vs_distilled(teacher, data, hidden=(16, 16), seeds=[0, 1], num_epochs=1,
                                          batch_size=32, progress=False)
    assert list(runs["method"]) == ["scratch", "distilled"] * 2 and list(runs["seed"]) == [0, 0, 1, 1]
    assert (runs["errors"] == ((1 - runs["accuracy"]) * 30).round().astype(int)).all()
    assert all(s.hidden == (16, 16) for s in students.values())
    assert list((tmp_path / "logits").glob("toy_train_n96_*.pt"))
    with pytest.raises(ValueError, match="seed"):
        scratch_vs_distilled(teacher, data, seeds=[])


def test_same_seed_gives_the_same_result(tiny):
    teacher, data = tiny
    a, _ = scratch_vs_distilled(teacher, data, hidden=(16,), seeds=[3], num_epochs=1, batch_size=32, progress=False)
    b, _ = scratch_vs_distilled(teacher, data, hidden=(16,), seeds=[3], num_epochs=1, batch_size=32, progress=False)
    assert a["errors"].tolist() == b["errors"].tolist()


def test_model_table_counts_and_times_each_model(tiny):
    teacher, data = tiny
    student = MLPStudent(hidden=(8,))
    table = model_table({"teacher": teacher, "student": student}, data, (1, 28, 28), device="cpu", repeats=2,
                        rounds=2, batch_sizes=(1, 4))
    assert table.loc["student", "params"] == count_params(student) == 784 * 8 + 8 + 8 * 10 + 10
    assert table.loc["teacher", "size_MB"] == size_on_disk(teacher) / 1e6
    assert table.loc["teacher", "speedup_b1"] == 1.0 and (table["latency_ms_b4"] > 0).all()
    with pytest.raises(ValueError, match="reference"):
        model_table({"a": student}, data, (1, 28, 28), reference="b")
    with pytest.raises(ValueError, match="rounds"):
        model_table({"a": student}, data, (1, 28, 28), rounds=0)


def test_any_student_with_augmentation_runs_the_teacher_per_batch(tiny, tmp_path):
    from kd_lessons.data import random_shift
    from kd_lessons.models import CNNStudent

    teacher, data = tiny
    runs, students = scratch_vs_distilled(teacher, data, seeds=[0], num_epochs=1, batch_size=32,
                                          augment=random_shift, make_student=lambda: CNNStudent(width=2),
                                          device="cpu", progress=False)
    assert list(runs["method"]) == ["scratch", "distilled"] and set(runs["device"]) == {"cpu"}
    assert isinstance(students[("distilled", 0)], CNNStudent)
    assert not list((tmp_path / "logits").glob("*.pt"))  # augmented batches: no cached logits
