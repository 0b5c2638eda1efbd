"""kd_lessons.runs.capacity_gap: teacher sizes x stopping epochs against one MLP student, TAKD (lesson 18)."""
import pytest
import torch

from kd_lessons import mnist1d
from kd_lessons.runs import capacity_gap as cg

TINY = dict(teacher_widths=(2, 4), teacher_epochs=2, stops=(1, 2), assistant_width=2, student_width=8, n_labeled=40,
            steps=4, num_samples=200, seeds=(0, 1))


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cnn1d_shapes_and_features():
    model = cg.CNN1D(3)
    logits, features = model(torch.randn(5, mnist1d.LENGTH), return_features=True)
    assert logits.shape == (5, 10) and [tuple(f.shape) for f in features] == [(5, 3, 19), (5, 3, 10), (5, 3, 5)]
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="width"):
            cg.CNN1D(bad)


def test_rows_summary_and_plot(tmp_cache, monkeypatch):
    calls = []
    real = cg.run
    monkeypatch.setattr(cg, "run", lambda rec: calls.append(rec) or real(rec))
    rec = cg.recipe(**TINY)
    rows = cg.cached_run(rec)
    grid = [f"CNN-{w} @{e}" for w in (2, 4) for e in (1, 2)]
    assert [r["method"] for r in rows] == (["scratch", *grid, "TAKD"]) * 2
    assert [r["seed"] for r in rows] == [0] * 6 + [1] * 6
    grid_rows = [r for r in rows if r["method"] in grid]
    assert {(r["teacher_width"], r["teacher_epochs"]) for r in grid_rows} == {(2, 1), (2, 2), (4, 1), (4, 2)}
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["teacher_accuracy"] <= 1 for r in grid_rows)
    takd = [r for r in rows if r["method"] == "TAKD"]
    assert all(r["teacher_width"] == 2 and r["teacher_params"] == cg.count_params(cg.CNN1D(2)) for r in takd)
    assert cg.cached_run(rec) == rows and len(calls) == 1  # the second call reads the cache
    table = {r["method"]: r for r in cg.summary(rows)}
    assert table["scratch"]["verdict"] == "baseline"
    by = {(r["method"], r["seed"]): r["accuracy"] for r in rows}
    want = sum(by[("TAKD", s)] - by[("scratch", s)] for s in (0, 1)) / 2
    assert table["TAKD"]["diff"] == pytest.approx(want)  # paired seed by seed
    assert table["TAKD"]["low"] <= table["TAKD"]["diff"] <= table["TAKD"]["high"]
    assert table["TAKD"]["verdict"] in ("better", "worse", "inconclusive")
    fig = cg.plot(rows)
    assert len(fig.axes) == 2 and fig.axes[1].get_xscale() == "log"


def test_early_stopped_teachers_are_the_same_runs_earlier_weights(tmp_cache):
    data = cg.load_data(200, 40, seed=0)
    snaps = cg.train_teacher(4, data, 3, (1, 3), 1e-2, 64, seed=0)
    assert sorted(snaps) == [1, 3]
    assert not torch.equal(snaps[1].out.weight, snaps[3].out.weight)
    again = cg.train_teacher(4, data, 3, (1, 3), 1e-2, 64, seed=0)
    assert torch.equal(again[1].out.weight, snaps[1].out.weight)  # seeded: the same run
    other = cg.load_data(200, 40, seed=1)
    assert not torch.equal(data["y_few"], other["y_few"])  # each seed draws its own labelled subset
    assert int((data["y_few"] >= 0).sum()) == 40 and data["x_labeled"].shape == (40, 40)


@pytest.mark.parametrize("change, match", [
    ({"teacher_widths": ()}, "teacher_widths.*empty"), ({"teacher_widths": (8, 4)}, "increasing"),
    ({"teacher_widths": (0, 4)}, "positive"), ({"teacher_widths": (4, "big")}, "expected"),
    ({"stops": ()}, "stops.*empty"), ({"stops": (1,)}, "teacher_epochs"), ({"seeds": ()}, "seed"),
    ({"seeds": (1, 1)}, "each once"), ({"n_labeled": 500}, "160 training"), ({"alpha": 1.5}, "alpha"),
    ({"teacher_size": 4}, "no field")])
def test_bad_recipes_say_what_is_allowed(change, match):
    with pytest.raises(ValueError, match=match):
        cg.recipe(**{**TINY, **change})


def test_summary_needs_rows_and_a_baseline():
    with pytest.raises(ValueError, match="empty"):
        cg.summary([])
    with pytest.raises(ValueError, match="scratch"):
        cg.summary([{"method": "TAKD", "seed": 0, "accuracy": 0.5}])


def test_missing_package_stops_before_training(tmp_cache, monkeypatch):
    def absent(name):
        raise mnist1d.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(mnist1d.metadata, "version", absent)
    with pytest.raises(mnist1d.Mnist1DUnavailableError, match="pip install"):
        cg.cached_run(cg.recipe(**TINY))
