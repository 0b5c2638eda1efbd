"""kd_lessons.runs.dino: a tiny recipe end to end (arms, histories, summary, plot, cache), k-NN, bad input."""
import math

import pytest
import torch
from torch import nn

from kd_lessons.runs import dino as rd

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(n_train=64, n_bank=40, n_test=40, steps=4, batch_size=16, width=2, out_dim=8, seeds=(0, 1), knn_k=5)


@pytest.fixture(scope="module")
def result():
    return rd.run(rd.recipe(**TINY), progress=False)


def test_every_arm_and_variant_per_seed(result):
    assert set(result["knn"]) == {"random init", "DINO", "no centering", "no sharpening", "supervised"}
    assert all(len(v) == 2 and all(0 <= a <= 1 for a in v) for v in result["knn"].values())
    for hs in result["histories"].values():
        assert len(hs) == 2 and all(len(h["entropy"]) == 4 for h in hs)
    assert result["histories"]["DINO"][0]["loss"] != result["histories"]["DINO"][1]["loss"]  # seeds redraw


def test_summary_and_plot(result):
    s = rd.summary(result)
    assert s["log_K"] == pytest.approx(math.log(8))
    assert set(s["differences"]) == {"DINO - random init", "DINO - no centering", "DINO - no sharpening",
                                     "DINO - supervised"}
    d = s["differences"]["DINO - random init"]
    assert d.values == tuple(a - b for a, b in zip(result["knn"]["DINO"], result["knn"]["random init"]))
    assert all(0 <= v["entropy"] <= math.log(8) + 1e-5 for v in s["diagnostics"].values())
    fig = rd.plot_diagnostics(result)
    assert [ax.get_title() for ax in fig.axes] == ["teacher output entropy", "KL(teacher || student)"]
    assert len(fig.axes[0].lines) == 4  # three variants and the log K line


def test_cached_run_builds_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    rec = rd.recipe(**{**TINY, "seeds": (0,), "steps": 2})
    first = rd.cached_run(rec, progress=False)
    assert list((tmp_path / "sweeps").glob("dino-*.pt"))
    monkeypatch.setattr(rd, "run", lambda *a, **k: pytest.fail("rebuilt a cached result"))
    assert rd.cached_run(rec, progress=False)["knn"] == first["knn"]


def test_knn_on_separable_features():
    bank = (torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), torch.tensor([0, 0, 1, 1]))
    test = (torch.tensor([[1.0, 0.05], [0.05, 1.0]]), torch.tensor([0, 1]))
    assert rd.knn_accuracy(nn.Identity(), bank, test, k=3) == 1.0
    assert rd.knn_accuracy(nn.Identity(), bank, (test[0], 1 - test[1]), k=3) == 0.0
    with pytest.raises(ValueError, match="bank holds"):
        rd.knn_accuracy(nn.Identity(), bank, test, k=5)


@pytest.mark.parametrize("bad", [{"steps": 0},
                                 {"seeds": ()}, {"tau_t": 0.0}, {"stepz": 3}])
def test_bad_recipes_are_rejected(bad):
    with pytest.raises(ValueError):
        rd.recipe(**bad)


@pytest.mark.parametrize("bad", [{"teacher_momentum": 1.0}, {"center_momentum": -0.5}])
def test_a_momentum_outside_zero_one_names_the_field(bad):
    with pytest.raises(ValueError, match=rf"{next(iter(bad))}=.*\[0, 1\)"):
        rd.recipe(**bad)
