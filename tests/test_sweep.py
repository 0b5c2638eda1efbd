"""Tests for kd_lessons.sweep: cells are trained once, cached, joined by live results, rebuilt if corrupt."""
import warnings

import pandas as pd
import pytest
import torch

from kd_lessons import sweep
from kd_lessons.storage import save_verified


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A private cache dir and a synthetic 'mnist' (random images, a linear teacher) instead of real data."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(784, 10, generator=g)
    x = torch.randn(256, 1, 28, 28, generator=g)
    x_test = torch.randn(128, 1, 28, 28, generator=g)
    data = {"x": x, "y": (x.flatten(1) @ w).argmax(1), "teacher_logits": x.flatten(1) @ w / 10,
            "x_test": x_test, "y_test": (x_test.flatten(1) @ w).argmax(1)}
    monkeypatch.setattr(sweep, "_data", lambda s: data)
    calls = []
    real = sweep.run_one

    def counting(*args, **kwargs):
        calls.append(args[1:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "run_one", counting)
    return {"calls": calls, "kw": dict(student_width=16, num_epochs=1, n_train=256)}


def test_sweep_trains_each_cell_once_and_reuses_the_cache(tiny):
    df = sweep.load_or_run("mnist", [1.0, 4.0], [0.0, 0.9], progress=False, **tiny["kw"])
    assert list(df.columns) == sweep.COLUMNS
    assert len(df) == 4 and df["accuracy"].between(0, 1).all()
    # alpha=0 ignores the teacher: trained once, shared by both temperatures
    assert sorted(tiny["calls"]) == [(1.0, 0.0), (1.0, 0.9), (4.0, 0.9)]
    base = df[df["alpha"] == 0.0]
    assert base["accuracy"].nunique() == 1 and "sweep (alpha=0 shared)" in set(base["source"])
    again = sweep.load_or_run("mnist", [1.0, 4.0], [0.0, 0.9], progress=False, **tiny["kw"])
    assert len(tiny["calls"]) == 3  # nothing retrained
    pd.testing.assert_frame_equal(df, again)
    assert sweep.history_for("mnist", 4.0, 0.0, **tiny["kw"])["val_accuracy"]


def test_growing_the_grid_trains_only_new_cells(tiny):
    sweep.load_or_run("mnist", [1.0], [0.5], progress=False, **tiny["kw"])
    done = []
    df = sweep.load_or_run("mnist", [1.0, 2.0], [0.5], progress=False,
                           callback=lambda i, n, row: done.append((i, n, row["T"])), **tiny["kw"])
    assert tiny["calls"] == [(1.0, 0.5), (2.0, 0.5)]
    assert done == [(1, 1, 2.0)] and len(df) == 2


def test_add_result_joins_the_cached_sweep(tiny):
    sweep.load_or_run("mnist", [1.0, 4.0], [0.9], progress=False, **tiny["kw"])
    table = sweep.add_result("mnist", 3.0, 0.5, accuracy=0.75, errors=32, seconds=1.5,
                             history={"epoch": [1], "train_loss": [0.3], "val_accuracy": [0.75]}, **tiny["kw"])
    assert len(table) == 3
    row = table[(table["T"] == 3.0) & (table["alpha"] == 0.5)].iloc[0]
    assert row["accuracy"] == 0.75 and row["errors"] == 32 and row["source"] == "live"
    assert len(sweep.load("mnist", **tiny["kw"])) == 3
    grid_only = sweep.load_or_run("mnist", [1.0, 4.0], [0.9], progress=False, **tiny["kw"])
    assert len(grid_only) == 2  # off-grid live runs only with include_extra
    assert len(sweep.load_or_run("mnist", [1.0, 4.0], [0.9], progress=False, include_extra=True, **tiny["kw"])) == 3
    # the same cell again replaces, never duplicates
    table = sweep.add_result("mnist", 3.0, 0.5, accuracy=0.8, errors=26, seconds=1.0, **tiny["kw"])
    assert len(table) == 3 and table["accuracy"].max() >= 0.8
    assert sweep.history_for("mnist", 3.0, 0.5, **tiny["kw"])["val_accuracy"] == [0.75]


def test_live_result_fills_a_grid_cell_so_the_sweep_skips_it(tiny):
    _, row, history = sweep.run_one("mnist", 4.0, 0.9, **tiny["kw"])
    assert 0.0 <= row["accuracy"] <= 1.0 and row["errors"] == round((1 - row["accuracy"]) * 128)
    assert len(history["val_accuracy"]) == 1
    sweep.add_result("mnist", row["T"], row["alpha"], row["accuracy"], row["errors"], row["seconds"],
                     history=history, **tiny["kw"])
    df = sweep.load_or_run("mnist", [4.0], [0.9], progress=False, **tiny["kw"])
    assert len(tiny["calls"]) == 1 and df["source"].tolist() == ["live"]


@pytest.mark.parametrize("damage", ["garbage", "sidecar", "foreign"])
def test_corrupt_cache_is_detected_and_rebuilt_with_a_warning(tiny, damage):
    sweep.load_or_run("mnist", [1.0], [0.9], progress=False, **tiny["kw"])
    path = sweep.sweep_path(sweep.settings("mnist", **tiny["kw"]))
    if damage == "garbage":
        path.write_bytes(b"not a sweep")
    elif damage == "sidecar":
        path.with_name(path.name + ".sha256.json").write_text("{")
    else:  # right checksum, wrong content
        save_verified({"rows": [{"T": 1.0}], "histories": {}}, path,
                      sweep._meta(sweep.settings("mnist", **tiny["kw"])))
    with pytest.warns(sweep.SweepCacheWarning, match="recomputed"):
        assert sweep.load("mnist", **tiny["kw"]).empty
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bad file is gone: no second warning
        df = sweep.load_or_run("mnist", [1.0], [0.9], progress=False, **tiny["kw"])
    assert len(df) == 1 and len(tiny["calls"]) == 2 and path.exists()


def test_settings_name_separate_cache_files(tiny, monkeypatch):
    a = sweep.sweep_path(sweep.settings("mnist", 16, 1, n_train=256))
    assert a != sweep.sweep_path(sweep.settings("mnist", 32, 1, n_train=256))
    assert a != sweep.sweep_path(sweep.settings("fashion_mnist", 16, 1, n_train=256))
    monkeypatch.setenv("KD_QUICK", "1")
    quick = sweep.settings("mnist")
    monkeypatch.setenv("KD_QUICK", "0")
    assert quick.mode == "quick" and sweep.settings("mnist").mode == "full"
    assert quick.n_train < sweep.settings("mnist").n_train


@pytest.mark.parametrize("kwargs, match", [
    (dict(T=0.0, alpha=0.5), "T=0.0"), (dict(T=2.0, alpha=1.5), "alpha=1.5"),
    (dict(T=float("nan"), alpha=0.5), "T=nan")])
def test_bad_T_or_alpha_is_rejected(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sweep.add_result("mnist", accuracy=0.5, errors=1, seconds=1.0, **kwargs, **tiny["kw"])


def test_bad_settings_are_rejected(tiny):
    with pytest.raises(ValueError, match="dataset='svhn'"):
        sweep.settings("svhn")
    with pytest.raises(ValueError, match="num_epochs=0"):
        sweep.settings("mnist", num_epochs=0)
    with pytest.raises(ValueError, match="non-empty"):
        sweep.load_or_run("mnist", [], [0.5], progress=False, **tiny["kw"])


def test_teacher_logits_are_cached_per_teacher(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    x = torch.randn(20, 1, 28, 28)
    first = sweep.teacher_logits(teacher, x, "t")
    torch.testing.assert_close(first, teacher(x).detach())
    calls = []
    monkeypatch.setattr(sweep, "predict_logits", lambda *a, **k: calls.append(1) or torch.zeros(20, 10))
    torch.testing.assert_close(sweep.teacher_logits(teacher, x, "t"), first)
    assert calls == []
    with torch.no_grad():
        teacher[1].bias.add_(1.0)  # a retrained teacher must not reuse old logits
    sweep.teacher_logits(teacher, x, "t")
    assert calls == [1]
