"""kd_lessons.runs.kd_map: distilled vs supervised over student widths x labelled examples, as a map (lesson 18)."""
import numpy as np
import pytest

from kd_lessons import mnist1d
from kd_lessons.runs import kd_map

TINY = dict(student_widths=(4, 8), n_labeled=(20, 160), teacher_width=2, teacher_epochs=1, steps=4, num_samples=200,
            seeds=(0, 1))


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_map_rows_cells_and_plot(tmp_cache, monkeypatch):
    calls = []
    real = kd_map.run
    monkeypatch.setattr(kd_map, "run", lambda rec: calls.append(rec) or real(rec))
    rec = kd_map.recipe(**TINY)
    rows = kd_map.cached_run(rec)
    keys = [(r["seed"], r["n_labeled"], r["student_width"], r["method"]) for r in rows]
    methods = ("supervised", "distilled")
    assert keys == [(s, n, w, m) for s in (0, 1) for n in (20, 160) for w in (4, 8) for m in methods]
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["teacher_accuracy"] <= 1 for r in rows)
    assert len({r["teacher_accuracy"] for r in rows if r["seed"] == 0}) == 1  # one teacher per seed
    assert kd_map.cached_run(rec) == rows and len(calls) == 1
    table = kd_map.cells(rows)
    assert [(c["student_width"], c["n_labeled"]) for c in table] == [(4, 20), (4, 160), (8, 20), (8, 160)]
    acc = {(r["seed"], r["n_labeled"], r["student_width"], r["method"]): r["accuracy"] for r in rows}
    first = table[0]
    want = np.mean([acc[(s, 20, 4, "distilled")] - acc[(s, 20, 4, "supervised")] for s in (0, 1)])
    assert first["diff"] == pytest.approx(want) and first["seeds"] == 2
    assert all(c["verdict"] in ("better", "worse", "inconclusive") for c in table)
    fig = kd_map.plot(rows)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 4 and all(c["verdict"] in t for c, t in zip(table, texts))


def test_a_cell_without_its_pair_is_refused():
    rows = [{"student_width": 4, "n_labeled": 20, "method": "supervised", "seed": 0, "accuracy": 0.5}]
    with pytest.raises(ValueError, match="lacks paired"):
        kd_map.cells(rows)
    with pytest.raises(ValueError, match="empty"):
        kd_map.cells([])


@pytest.mark.parametrize("change, match", [
    ({"student_widths": ()}, "student_widths.*empty"), ({"n_labeled": ()}, "n_labeled.*empty"),
    ({"n_labeled": (160, 20)}, "increasing"), ({"student_widths": (-4,)}, "positive"),
    ({"n_labeled": (20, 4000)}, "160 training"), ({"student_widths": ("tiny",)}, "expected"),
    ({"seeds": ()}, "seed"), ({"widths": (4,)}, "no field")])
def test_bad_grids_say_what_is_allowed(change, match):
    with pytest.raises(ValueError, match=match):
        kd_map.recipe(**{**TINY, **change})


def test_missing_package_says_how_to_install_it(tmp_cache, monkeypatch):
    def absent(name):
        raise mnist1d.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(mnist1d.metadata, "version", absent)
    with pytest.raises(mnist1d.Mnist1DUnavailableError, match="pip install"):
        kd_map.cached_run(kd_map.recipe(**TINY))
