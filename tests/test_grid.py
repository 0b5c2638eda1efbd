"""Tests for kd_lessons.runs.grid: cells are trained once, cached, joined by live results, rebuilt if corrupt.

Every test here writes grid tables for tiny recipes, so each points KD_CACHE_DIR at tmp_path, and
replaces the data (few_labels.load_tensors) and the teacher (grid.get_teacher) by small synthetic
ones: the grid's caching logic is what is under test, not the quick teacher.
"""
import json
import re
import threading
import warnings

import pandas as pd
import pytest
import torch
from torch import nn

from kd_lessons import cache, teachers
from kd_lessons.objectives import UNLABELED, CrossEntropy, HintonKD
from kd_lessons.runs import few_labels, grid
from kd_lessons.runs.students import Arm

N_TRAIN, N_TEST, N_LABELED, STEPS = 256, 128, 40, 6


@pytest.fixture
def tiny(monkeypatch, tmp_path, one_thread):
    """A private cache dir, a synthetic 'mnist' and a linear teacher that labels it; run_one calls are counted."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KD_DEVICE", "cpu")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(784, 10, generator=g)
    x = torch.randn(N_TRAIN, 1, 28, 28, generator=g)
    x_test = torch.randn(N_TEST, 1, 28, 28, generator=g)
    y, y_test = (x.flatten(1) @ w).argmax(1), (x_test.flatten(1) @ w).argmax(1)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        teacher[1].weight.copy_(w.T / 10)
        teacher[1].bias.zero_()
    loads, teacher_calls = [], []
    monkeypatch.setattr(few_labels, "load_tensors", lambda dataset, train=True:
                        loads.append((dataset, train)) or ((x, y) if train else (x_test, y_test)))
    monkeypatch.setattr(grid, "get_teacher", lambda dataset, **kw:
                        teacher_calls.append((dataset, kw.get("arch"))) or (teacher, {"test_accuracy": 1.0}))
    calls, seeds = [], []
    real = grid.run_one

    def counting(rec, T, alpha, *args, **kwargs):
        calls.append((T, alpha))
        seeds.append(rec.seed)
        return real(rec, T, alpha, *args, **kwargs)

    monkeypatch.setattr(grid, "run_one", counting)
    rec = grid.recipe("mnist", student_width=16, n_labeled=N_LABELED, steps=STEPS)
    return {"calls": calls, "seeds": seeds, "rec": rec, "loads": loads, "teacher_calls": teacher_calls,
            "teacher": teacher, "tmp": tmp_path}


def _row(T, alpha, accuracy=0.75, errors=32, seconds=1.5, source="live"):
    return {"T": T, "alpha": alpha, "accuracy": accuracy, "errors": errors, "seconds": seconds, "source": source}


def test_grid_trains_each_cell_once_and_reuses_the_cache(tiny):
    rec = tiny["rec"]
    df = grid.load_or_run(rec, [1.0, 4.0], [0.0, 0.9], progress=False)
    assert list(df.columns) == grid.COLUMNS
    assert len(df) == 4 and df["accuracy"].between(0, 1).all()
    # alpha=0 ignores the teacher: trained once, shared by both temperatures
    assert sorted(tiny["calls"]) == [(1.0, 0.0), (1.0, 0.9), (4.0, 0.9)]
    base = df[df["alpha"] == 0.0]
    assert base["accuracy"].nunique() == 1 and "grid (alpha=0 shared)" in set(base["source"])
    assert set(df[df["alpha"] == 0.9]["source"]) == {"grid"}
    again = grid.load_or_run(rec, [1.0, 4.0], [0.0, 0.9], progress=False)
    assert len(tiny["calls"]) == 3  # nothing retrained
    pd.testing.assert_frame_equal(df, again)
    assert grid.history_for(rec, 4.0, 0.0)["val_accuracy"]  # the shared cell has the baseline's history
    assert grid.path(rec).exists() and grid.path(rec).is_relative_to(tiny["tmp"])


def test_two_threads_filling_one_grid_train_each_cell_once(tiny):
    """The app's heatmap job and a notebook (or two processes) filling the same grid share its cells."""
    rec, start, tables = tiny["rec"], threading.Barrier(2), []

    def fill():
        start.wait(10)
        tables.append(grid.load_or_run(rec, [1.0, 4.0], [0.0, 0.9], progress=False))

    threads = [threading.Thread(target=fill) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(tables) == 2
    assert sorted(tiny["calls"]) == [(1.0, 0.0), (1.0, 0.9), (4.0, 0.9)]  # each cell once, alpha=0 shared
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert len(tables[0]) == 4


def test_a_live_result_is_stored_while_a_cell_trains_elsewhere(tiny, capsys):
    """The app's "train now" saves its row without waiting for the background grid's current cell."""
    rec, training, release = tiny["rec"], threading.Event(), threading.Event()

    def cell():
        with grid._training(rec):
            training.set()
            release.wait(30)

    thread = threading.Thread(target=cell)
    thread.start()
    try:
        assert training.wait(10)
        grid.add_result(rec, _row(2.0, 0.5))
        assert len(grid.load(rec)) == 1 and "waiting" not in capsys.readouterr().err
    finally:
        release.set()
        thread.join(10)


def test_run_one_uses_the_recipe_data_and_teacher(tiny):
    rec = tiny["rec"]
    grid.run_one(rec, 2.0, 0.5)
    assert tiny["loads"] == [("mnist", True), ("mnist", False)]
    assert tiny["teacher_calls"] == [("mnist", None)]  # the course's teacher (arch=None)


def _spy_study(monkeypatch):
    """Record what few_labels.train_students is asked to train."""
    seen = []
    real = few_labels.train_students

    def spy(make_student, data, methods, seeds, **kwargs):
        seen.append({"data": data, "methods": methods, "seeds": seeds, **kwargs})
        return real(make_student, data, methods, seeds, **kwargs)

    monkeypatch.setattr(few_labels, "train_students", spy)
    return seen


def test_alpha_zero_trains_scratch_on_the_labelled_images_only(tiny, monkeypatch):
    seen = _spy_study(monkeypatch)
    student, row, history = grid.run_one(tiny["rec"], 4.0, 0.0)
    (run,) = seen
    assert list(run["methods"]) == ["scratch"] and run["seeds"] == [0]
    method = run["methods"]["scratch"]
    assert isinstance(method, Arm) and isinstance(method.objective, CrossEntropy)
    assert len(method.x) == len(method.y) == N_LABELED and bool((method.y >= 0).all())
    assert torch.equal(method.x, run["data"]["x_labeled"])
    assert run["options"].max_steps == STEPS and history["step"][-1] == STEPS
    assert history["step"] == list(range(1, STEPS + 1))  # 40 images: one batch per epoch
    assert row["alpha"] == 0.0 and row["T"] == 4.0 and student.hidden == (16, 16)
    # T does not matter without a teacher: the same student at another T
    _, other, _ = grid.run_one(tiny["rec"], 1.0, 0.0)
    assert (other["accuracy"], other["errors"]) == (row["accuracy"], row["errors"])


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_other_cells_distil_on_every_image_with_the_few_labels(tiny, monkeypatch, alpha):
    seen = _spy_study(monkeypatch)
    _, row, history = grid.run_one(tiny["rec"], 2.0, alpha)
    (run,) = seen
    assert list(run["methods"]) == ["distilled"] and run["teacher"] is tiny["teacher"]
    objective = run["methods"]["distilled"]
    assert isinstance(objective, HintonKD) and (objective.T, objective.alpha) == (2.0, alpha)
    data = run["data"]
    assert len(data["x"]) == N_TRAIN and int((data["y"] != UNLABELED).sum()) == N_LABELED  # labels hidden
    assert run["options"].max_steps == STEPS and history["step"] == [2, 4, 6]  # 256 images: two batches per epoch
    assert row["alpha"] == alpha


def test_growing_the_grid_trains_only_new_cells(tiny):
    rec = tiny["rec"]
    grid.load_or_run(rec, [1.0], [0.5], progress=False)
    done = []
    df = grid.load_or_run(rec, [1.0, 2.0], [0.5], progress=False,
                          callback=lambda i, n, row: done.append((i, n, row["T"])))
    assert tiny["calls"] == [(1.0, 0.5), (2.0, 0.5)]
    assert done == [(1, 1, 2.0)] and len(df) == 2


def test_add_result_joins_the_cached_grid(tiny):
    rec = tiny["rec"]
    grid.load_or_run(rec, [1.0, 4.0], [0.9], progress=False)
    table = grid.add_result(rec, _row(3.0, 0.5), history={"epoch": [1], "train_loss": [0.3], "val_accuracy": [0.75]})
    assert len(table) == 3
    row = table[(table["T"] == 3.0) & (table["alpha"] == 0.5)].iloc[0]
    assert row["accuracy"] == 0.75 and row["errors"] == 32 and row["source"] == "live"
    assert len(grid.load(rec)) == 3
    grid_only = grid.load_or_run(rec, [1.0, 4.0], [0.9], progress=False)
    assert len(grid_only) == 2  # off-grid live runs only with include_extra
    assert len(grid.load_or_run(rec, [1.0, 4.0], [0.9], progress=False, include_extra=True)) == 3
    # the same cell again replaces, never duplicates, and keeps its history when none is given
    table = grid.add_result(rec, _row(3.0, 0.5, accuracy=0.8, errors=26, seconds=1.0))
    assert len(table) == 3 and table["accuracy"].max() >= 0.8
    assert grid.history_for(rec, 3.0, 0.5)["val_accuracy"] == [0.75]
    assert len(tiny["calls"]) == 2  # add_result never trains


def test_live_result_fills_a_grid_cell_so_the_grid_skips_it(tiny):
    rec = tiny["rec"]
    _, row, history = grid.run_one(rec, 4.0, 0.9)
    assert set(row) == set(grid.COLUMNS) and row["source"] == "live"
    assert 0.0 <= row["accuracy"] <= 1.0 and row["errors"] == round((1 - row["accuracy"]) * N_TEST)
    assert len(history["val_accuracy"]) == 3 and history["val_step"] == [2, 4, 6]  # every epoch of a short run
    grid.add_result(rec, row, history)
    stored = grid.history_for(rec, 4.0, 0.9)
    assert set(stored) == {"epoch", "step", "train_loss", "val_accuracy", "val_step"}  # the small form
    assert stored["step"] == stored["val_step"] == [2.0, 4.0, 6.0] and stored["epoch"] == [1.0, 2.0, 3.0]
    assert stored["val_accuracy"] == pytest.approx(history["val_accuracy"])
    df = grid.load_or_run(rec, [4.0], [0.9], progress=False)
    assert len(tiny["calls"]) == 1 and df["source"].tolist() == ["live"]


def test_baseline_is_trained_once_then_read_from_the_cache(tiny):
    rec = tiny["rec"]
    row, history = grid.baseline(rec)
    assert row["alpha"] == 0.0 and history["val_accuracy"] and tiny["calls"] == [(1.0, 0.0)]
    again, history_again = grid.baseline(rec)
    assert len(tiny["calls"]) == 1 and again["accuracy"] == row["accuracy"]
    assert history_again == history
    # and the grid reuses it for alpha=0
    grid.load_or_run(rec, [1.0], [0.0], progress=False)
    assert len(tiny["calls"]) == 1


def _damage(path, how):
    if how == "garbage":
        path.write_bytes(b"not a grid")
    elif how == "sidecar":
        cache.sidecar(path).write_text("{")
    elif how == "foreign":  # right checksum and meta, wrong content
        meta = {k: v for k, v in json.loads(cache.sidecar(path).read_text()).items() if k not in ("sha256", "bytes")}
        cache.save_verified({"rows": [{"T": 1.0}], "histories": {}}, path, meta)
    else:  # a valid table, but saved for another recipe
        cache.save_verified({"rows": [_row(1.0, 0.9)], "histories": {}}, path,
                            {"kind": "kd_lessons.grid", "format": 2, "recipe": "another-recipe"})


@pytest.mark.parametrize("damage", ["garbage", "sidecar", "foreign", "other_recipe"])
def test_corrupt_cache_is_detected_and_rebuilt_with_a_warning(tiny, damage):
    rec = tiny["rec"]
    grid.load_or_run(rec, [1.0], [0.9], progress=False)
    path = grid.path(rec)
    _damage(path, damage)
    with pytest.warns(cache.CacheWarning, match="deleted and will be rebuilt"):
        assert grid.load(rec).empty
    assert not path.exists() and not cache.sidecar(path).exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bad file is gone: no second warning
        df = grid.load_or_run(rec, [1.0], [0.9], progress=False)
    assert len(df) == 1 and len(tiny["calls"]) == 2 and path.exists()


def test_empty_cache_gives_an_empty_table_with_the_columns(tiny):
    df = grid.load(tiny["rec"])
    assert df.empty and list(df.columns) == grid.COLUMNS
    assert grid.history_for(tiny["rec"], 1.0, 0.9) is None
    assert tiny["calls"] == []  # load never trains


def test_recipes_name_separate_cache_files(tiny, monkeypatch):
    a = grid.path(grid.recipe("mnist", student_width=16, seed=1, n_labeled=40, steps=6))
    assert a == grid.path(grid.recipe("mnist", student_width=16, seed=1, n_labeled=40, steps=6))
    assert a != grid.path(grid.recipe("mnist", student_width=32, seed=1, n_labeled=40, steps=6))
    assert a != grid.path(grid.recipe("fashion_mnist", student_width=16, seed=1, n_labeled=40, steps=6))
    assert a != grid.path(grid.recipe("mnist", student_width=16, seed=2, n_labeled=40, steps=6))
    assert a != grid.path(grid.recipe("mnist", student_width=16, seed=1, n_labeled=80, steps=6))
    assert a != grid.path(grid.recipe("mnist", student_width=16, seed=1, n_labeled=40, steps=7))
    rec = grid.recipe("mnist", student_width=16, seed=1, n_labeled=40, steps=6)
    assert {k: v for k, v in rec.asdict().items() if k != "teacher"} == \
        few_labels.recipe("mnist", n_labeled=40, student_width=16, steps=6, seed=1).asdict()
    # the course's teacher (the ensemble) names the table
    assert grid.recipe("mnist").teacher == teachers.recipe_key(teachers.recipe("mnist")) == \
        teachers.recipe_key(teachers.recipe("mnist", "ensemble"))
    # a new teacher recipe starts a new table
    monkeypatch.setattr(grid, "teacher_recipe", lambda dataset: teachers.recipe(dataset, "cnn", seed=99))
    assert a != grid.path(grid.recipe("mnist", student_width=16, seed=1, n_labeled=40, steps=6))
    monkeypatch.setenv("KD_QUICK", "1")
    quick = grid.recipe("mnist")
    monkeypatch.setenv("KD_QUICK", "0")
    full = grid.recipe("mnist")
    assert quick.mode == "quick" and full.mode == "full" and grid.path(quick) != grid.path(full)
    assert quick.n_labeled < full.n_labeled and quick.steps < full.steps
    assert quick.n_pool == 5000 and full.n_pool is None  # full mode: every training image


def test_default_grid_is_small_in_quick_mode(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    Ts, alphas = grid.default_grid()
    assert (Ts, alphas) == ([1.0, 4.0], [0.0, 0.9])
    monkeypatch.setenv("KD_QUICK", "0")
    Ts, alphas = grid.default_grid()
    assert (len(Ts), len(alphas)) == (6, 4) and 0.0 in alphas and 4.0 in Ts and 0.9 in alphas
    # the spread cells are cells of both grids, so the spread's seed 0 is the heatmap's own cell
    for mode in ("0", "1"):
        monkeypatch.setenv("KD_QUICK", mode)
        Ts, alphas = grid.default_grid()
        assert all(T in Ts and alpha in alphas for T, alpha in grid.SPREAD_CELLS)


@pytest.mark.parametrize("T, alpha, match", [
    (0.0, 0.5, r"T=0\.0; pass a float such as T=4\.0"), (2.0, 1.5, r"alpha=1\.5; alpha is the weight"),
    (float("nan"), 0.5, r"T=nan; pass a float such as")])
def test_bad_T_or_alpha_is_rejected(tiny, T, alpha, match):
    with pytest.raises(ValueError, match=match):
        grid.add_result(tiny["rec"], _row(T, alpha))
    assert grid.load(tiny["rec"]).empty  # nothing was stored


def test_bad_rows_are_rejected(tiny):
    with pytest.raises(ValueError, match=r"accuracy=1\.5: pass a fraction in \[0, 1\]"):
        grid.add_result(tiny["rec"], _row(1.0, 0.5, accuracy=1.5))
    with pytest.raises(ValueError, match=r"row lacks \['source'\]; pass the row run_one returns"):
        grid.add_result(tiny["rec"], {k: v for k, v in _row(1.0, 0.5).items() if k != "source"})
    assert grid.load(tiny["rec"]).empty


def test_bad_recipes_are_rejected(tiny):
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; use one of"):
        grid.recipe("svhn")
    with pytest.raises(ValueError, match=r"GridRecipe.steps=0: must be > 0"):
        grid.recipe("mnist", steps=0)
    with pytest.raises(ValueError, match=r"GridRecipe.n_labeled=-5: must be > 0"):
        grid.recipe("mnist", n_labeled=-5)
    with pytest.raises(ValueError, match=r"GridRecipe.student_width=True \(bool\): expected int"):
        grid.recipe("mnist", student_width=True)
    with pytest.raises(ValueError, match=r"must both be non-empty lists"):
        grid.load_or_run(tiny["rec"], [], [0.5], progress=False)
    assert tiny["calls"] == []


# ---------------------------------------------------------------- seed spread

def test_spread_trains_each_cell_under_each_seed_once_and_returns_the_std(tiny):
    rec = tiny["rec"]
    cells = ((4.0, 0.9), (4.0, 0.0))
    grid.load_or_run(rec, [4.0], [0.9], progress=False)  # seed 0 of a cell is the heatmap's own cell
    table = grid.spread(rec, cells, seeds=(0, 1, 2))
    assert list(zip(tiny["calls"], tiny["seeds"])) == [((4.0, 0.9), 0), ((4.0, 0.9), 1), ((4.0, 0.9), 2),
                                                       ((4.0, 0.0), 0), ((4.0, 0.0), 1), ((4.0, 0.0), 2)]
    assert list(table.columns) == ["T", "alpha", "accuracy_mean", "accuracy_std", "errors_mean", "errors_std",
                                   "seeds"]
    assert list(zip(table["T"], table["alpha"])) == list(cells) and set(table["seeds"]) == {3}
    for row in table.itertuples():
        found = [grid.load(rec.replace(seed=s)) for s in (0, 1, 2)]
        acc = pd.Series([f[(f["T"] == row.T) & (f["alpha"] == row.alpha)]["accuracy"].iloc[0] for f in found])
        err = pd.Series([f[(f["T"] == row.T) & (f["alpha"] == row.alpha)]["errors"].iloc[0] for f in found])
        assert row.accuracy_mean == pytest.approx(acc.mean()) and row.accuracy_std == pytest.approx(acc.std(ddof=1))
        assert row.errors_mean == pytest.approx(err.mean()) and row.errors_std == pytest.approx(err.std(ddof=1))
    assert {grid.path(rec.replace(seed=s)) for s in (0, 1, 2)} == set((tiny["tmp"] / "sweeps").glob("*.pt"))
    again = grid.spread(rec, cells, seeds=(0, 1, 2))
    assert len(tiny["calls"]) == 6                       # all cached: nothing trained
    pd.testing.assert_frame_equal(again, table)


def test_seeds_pick_other_labelled_images(tiny, monkeypatch):
    seen = _spy_study(monkeypatch)
    grid.spread(tiny["rec"], [(4.0, 0.0)], seeds=(0, 1))
    first, second = (run["methods"]["scratch"].x for run in seen)
    assert [run["seeds"] for run in seen] == [[0], [1]] and not torch.equal(first, second)


@pytest.mark.parametrize("seeds", [(0,), ()])
def test_spread_needs_two_seeds(tiny, seeds):
    with pytest.raises(ValueError, match=re.escape(f"seeds={list(seeds)}: a spread needs at least two seeds")):
        grid.spread(tiny["rec"], grid.SPREAD_CELLS, seeds=seeds)
    assert tiny["calls"] == []


def test_per_seed_gives_one_row_per_cell_and_seed_for_paired_differences(tiny):
    from kd_lessons.runs.seeds import paired_differences

    rows = grid.per_seed(tiny["rec"], grid.SPREAD_CELLS, seeds=(0, 1, 2))
    assert list(rows.columns) == ["T", "alpha", "method", "seed", "accuracy", "errors"]
    assert list(zip(rows["method"], rows["seed"])) == [("T=4,alpha=0.9", s) for s in (0, 1, 2)] + [
        ("T=4,alpha=0", s) for s in (0, 1, 2)]
    spread = grid.spread(tiny["rec"], grid.SPREAD_CELLS, seeds=(0, 1, 2))
    assert len(tiny["calls"]) == 6                       # per_seed trained them; spread read the cache
    assert spread["errors_mean"].tolist() == pytest.approx(rows.groupby("method", sort=False)["errors"].mean().tolist())
    d = paired_differences(rows, "T=4,alpha=0.9", "T=4,alpha=0")
    assert d["per_seed"] == {s: float(a - b) for s, a, b in zip((0, 1, 2), rows.errors[:3], rows.errors[3:])}
    with pytest.raises(ValueError, match=r"seeds=\[0\]: a spread needs at least two seeds"):
        grid.per_seed(tiny["rec"], grid.SPREAD_CELLS, seeds=(0,))
