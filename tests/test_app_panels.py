"""Tests for kd_lessons.app.panels, what the app's panels compute: torch and the loss definitions are the oracles."""
import inspect
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kd_lessons import losses
from kd_lessons.app import panels as demo
from kd_lessons.cache import CorruptFileError
from kd_lessons.data import DataUnavailableError


def test_temperatures_are_log_spaced_round_and_cover_the_range():
    ts = demo.temperatures()
    assert ts[0] == 0.1 and ts[-1] == 50.0 and 1.0 in ts and 4.0 in ts and 8.0 in ts and 7.0 not in ts
    assert ts == sorted(set(ts))
    ratios = np.diff(np.log10(ts))
    assert ratios.max() < 0.21  # no big jumps on a log axis
    with pytest.raises(ValueError, match="low=5"):
        demo.temperatures(5, 1)


def test_nearest_snaps_on_a_log_scale():
    assert demo.nearest(3.0, [1.0, 4.0, 16.0]) == 4.0  # log: 3 is nearer 4 than 1
    assert demo.nearest(0.3, [0.0, 0.5, 0.9], log=False) == 0.5
    with pytest.raises(ValueError, match="empty"):
        demo.nearest(1.0, [])


@given(st.lists(st.floats(-20, 20), min_size=10, max_size=10), st.floats(0.1, 50), st.floats(0.1, 50))
@settings(max_examples=50, deadline=None)
def test_soft_label_entropy_rises_with_T(logits, t1, t2):
    z = torch.tensor([logits], dtype=torch.float64)
    y = torch.tensor([0])
    lo, hi = sorted((t1, t2))
    h_lo = demo.soft_labels(z, y, lo)["entropy"].item()
    h_hi = demo.soft_labels(z, y, hi)["entropy"].item()
    tol = 1e-6  # the panel computes in float32 (the app's logits are float32): its rounding, not a rise
    assert h_lo <= h_hi + tol
    assert 0 <= h_hi <= math.log(10) + tol


def test_soft_labels_match_torch_softmax():
    z = torch.randn(5, 10) * 4
    y = torch.randint(0, 10, (5,))
    out = demo.soft_labels(z, y, 3.0)
    p = F.softmax(z / 3.0, dim=1)
    torch.testing.assert_close(out["probs"], p)
    torch.testing.assert_close(out["entropy"], -(p * p.log()).sum(1))
    torch.testing.assert_close(out["p_true"], p[torch.arange(5), y])
    assert out["max_entropy"] == pytest.approx(math.log(10))


def test_soft_label_frame_pairs_one_hot_and_soft():
    p = torch.softmax(torch.randn(3), 0)
    df = demo.soft_label_frame(p, 2, ["a", "b", "c"], 4.0)
    assert df["probability"].tolist()[:3] == [0.0, 0.0, 1.0]
    assert df["probability"].tolist()[3:] == pytest.approx(p.tolist())
    assert set(df["target"]) == {"one-hot label", "soft label (T=4)"}
    with pytest.raises(ValueError, match="label=5"):
        demo.soft_label_frame(p, 5, ["a", "b", "c"], 4.0)


def test_loss_anatomy_matches_the_definition_and_alpha_trades_the_terms():
    torch.manual_seed(0)
    z, v, y = torch.randn(3, 10), torch.randn(3, 10) * 3, torch.tensor([1, 4, 9])
    T, alpha = 4.0, 0.7
    parts = demo.loss_anatomy(z, v, y, T, alpha)
    ce = F.cross_entropy(z, y).item()
    kl = F.kl_div(F.log_softmax(z / T, 1), F.softmax(v / T, 1), reduction="batchmean").item() * T * T
    assert parts["cross_entropy"] == pytest.approx(ce, rel=1e-5)
    assert parts["kd"] == pytest.approx(kl, rel=1e-5)
    assert parts["total"] == pytest.approx(alpha * kl + (1 - alpha) * ce, rel=1e-5)
    assert parts["weighted_kd"] + parts["weighted_cross_entropy"] == pytest.approx(parts["total"], rel=1e-5)
    only_hard, only_soft = demo.loss_anatomy(z, v, y, T, 0.0), demo.loss_anatomy(z, v, y, T, 1.0)
    assert only_hard["total"] == pytest.approx(ce, rel=1e-5) and only_soft["total"] == pytest.approx(kl, rel=1e-5)
    curve = demo.loss_vs_alpha(z, v, y, T)
    assert len(curve) == 21 and curve["alpha"].iloc[0] == 0 and curve["alpha"].iloc[-1] == 1
    assert curve["weighted_kd"].is_monotonic_increasing and curve["weighted_cross_entropy"].is_monotonic_decreasing
    with pytest.raises(ValueError, match="alpha"):
        demo.loss_anatomy(z, v, y, T, 1.5)


def test_pick_examples_prefers_distinct_classes_and_shuffles_with_the_seed():
    y = torch.arange(10).repeat(20)
    picked = demo.pick_examples(y, 4, seed=0)
    assert len(picked) == 4 and len({int(y[i]) for i in picked}) == 4
    assert picked == demo.pick_examples(y, 4, seed=0)
    assert picked != demo.pick_examples(y, 4, seed=1)
    few = demo.pick_examples(torch.tensor([0, 0, 1]), 3, seed=0)
    assert sorted(few) == [0, 1, 2]
    with pytest.raises(ValueError, match="n=0"):
        demo.pick_examples(y, 0)


def test_heatmap_frame_marks_the_current_cell_or_the_nearest():
    from kd_lessons.app.accuracy_tab import heatmap_frame

    df = pd.DataFrame({"T": [1.0, 4.0, 1.0, 4.0], "alpha": [0.0, 0.0, 0.9, 0.9],
                       "accuracy": [0.9, 0.9, 0.91, 0.95], "errors": [1, 1, 1, 1], "seconds": [1.0] * 4,
                       "source": ["sweep"] * 4})
    frame, exact = heatmap_frame(df, [1.0, 4.0], [0.0, 0.9], 4.0, 0.9)
    assert sorted(set(frame["alpha"])) == [0.0, 0.9] and sorted(set(frame["T"])) == [1.0, 4.0] and exact
    marked = frame[frame["current"]]
    assert len(marked) == 1
    assert (marked["T"].item(), marked["alpha"].item(), marked["accuracy"].item()) == (4.0, 0.9, 0.95)
    frame, exact = heatmap_frame(df, [1.0, 4.0], [0.0, 0.9], 3.0, 0.8)
    marked = frame[frame["current"]]
    assert (marked["T"].item(), marked["alpha"].item()) == (4.0, 0.9) and not exact
    frame, exact = heatmap_frame(df.iloc[:0], [1.0, 4.0], [0.0, 0.9], 1.0, 0.5)  # nothing trained: grey cells
    assert len(frame) == 4 and frame["accuracy"].isna().all() and not exact


def test_kd_source_is_the_library_code():
    src = demo.kd_source()
    assert inspect.getsource(losses.kd_loss) in src and inspect.getsource(losses.distillation_loss) in src
    assert src.startswith("def kd_loss(")


def test_untrained_student_is_seeded():
    x = torch.randn(2, 1, 28, 28)
    a = demo.student_logits(demo.untrained_student("mnist", 30), x)
    b = demo.student_logits(demo.untrained_student("mnist", 30), x)
    torch.testing.assert_close(a, b)
    assert a.shape == (2, 10)


def test_available_datasets_lists_cifar_only_when_present(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "data"))
    assert demo.available_datasets() == ["mnist", "fashion_mnist"]
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(b"x")
    assert demo.available_datasets() == ["mnist", "fashion_mnist", "cifar10"]


def test_explain_error_names_the_fix_that_fits_the_error_and_the_mode(monkeypatch):
    assert "make data" in demo.explain_error(DataUnavailableError("no MNIST"))
    assert "delete" in demo.explain_error(CorruptFileError("bad"))
    monkeypatch.setenv("KD_QUICK", "0")
    assert "KD_QUICK=1" in demo.explain_error(RuntimeError("boom"))
    assert "KD_QUICK=1" in demo.explain_error(MemoryError())
    monkeypatch.setenv("KD_QUICK", "1")  # already quick: restarting quick would not help
    for exc in (RuntimeError("boom"), MemoryError(), RuntimeError("CUDA out of memory")):
        assert "KD_QUICK=1" not in demo.explain_error(exc), exc
    shape = demo.explain_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied (32x3072 and 784x100)"))
    assert "shape" in shape and "KD_QUICK" not in shape and "report it" in shape
    bad_value = demo.explain_error(ValueError("T=-1: use a temperature > 0"))
    assert "which value to change" in bad_value and "make test-fast" not in bad_value


def test_test_pool_uses_cached_teacher_logits(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    x = torch.randn(100, 1, 28, 28)
    y = torch.arange(10).repeat(10)
    monkeypatch.setattr(demo, "load_tensors", lambda name, train: (x, y))
    calls = []
    real = demo.cached_logits
    monkeypatch.setattr(demo, "cached_logits", lambda t, xs: calls.append(len(xs)) or real(t, xs))
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    pool = demo.test_pool("mnist", teacher, size=50)
    assert len(pool["x"]) == 50 and pool["teacher_logits"].shape == (50, 10)
    assert torch.bincount(pool["y"]).tolist() == [5] * 10
    torch.testing.assert_close(pool["teacher_logits"], teacher(pool["x"]).detach())
    expected = float((pool["teacher_logits"].argmax(1) == pool["y"]).float().mean())
    assert pool["teacher_accuracy"] == pytest.approx(expected)
    files = sorted((tmp_path / "logits").glob("*.pt"))
    assert len(files) == 1 and calls == [50]               # cached on disk, once
    again = demo.test_pool("mnist", teacher, size=50)
    torch.testing.assert_close(again["teacher_logits"], pool["teacher_logits"])
    assert sorted((tmp_path / "logits").glob("*.pt")) == files  # read back, not recomputed


def test_label_comes_from_the_dataset_registry():
    assert demo.label("fashion_mnist") == "Fashion-MNIST" and demo.label("cifar10") == "CIFAR-10"


def test_figure_png_renders():
    from kd_lessons.plots import soft_label_bars

    png = demo.figure_png(soft_label_bars(losses.soften(torch.randn(10), 2.0), 3, T=2.0))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def _grid_table(accuracies):
    n = len(accuracies)
    return pd.DataFrame({"T": [1.0, 4.0] * (n // 2), "alpha": [0.0] * (n // 2) + [0.9] * (n // 2),
                         "accuracy": accuracies, "errors": [0] * n, "seconds": [1.0] * n, "source": ["grid"] * n})


def test_grid_summary_compares_the_heatmap_span_with_the_seed_spread():
    table = _grid_table([0.90, 0.90, 0.93, 0.97])
    spread = pd.DataFrame({"T": [4.0, 4.0], "alpha": [0.9, 0.0], "accuracy_mean": [0.965, 0.9],
                           "accuracy_std": [0.004, 0.01], "errors_mean": [35.0, 100.0], "errors_std": [4.0, 10.0],
                           "seeds": [3, 3]})
    summary = demo.grid_summary(table, spread)
    assert summary["span"] == pytest.approx(7.0)          # points: 97 % - 90 %
    assert summary["spread"] == pytest.approx(1.0)        # the largest std, in points
    assert summary["ratio"] == pytest.approx(7.0)
    assert summary["spread_cells"] == "std in points over 3 seeds at T=4, alpha=0.9: 0.40, T=4, alpha=0: 1.00"


def test_grid_summary_without_or_with_a_zero_spread():
    table = _grid_table([0.90, 0.92])
    for spread in (None, pd.DataFrame()):
        summary = demo.grid_summary(table, spread)
        assert summary["span"] == pytest.approx(2.0) and summary["spread_cells"] == ""
        assert math.isnan(summary["spread"]) and math.isnan(summary["ratio"])
    still = pd.DataFrame({"T": [4.0], "alpha": [0.9], "accuracy_std": [0.0], "seeds": [3]})
    assert demo.grid_summary(table, still)["ratio"] == math.inf  # seeds agreed exactly
    with pytest.raises(ValueError, match=r"the grid table is empty; fill it with grid.load_or_run\(rec\) first"):
        demo.grid_summary(table.iloc[:0], None)


def test_cached_chart_builds_each_spec_once_and_hands_out_copies():
    import altair as alt

    from kd_lessons.app import page

    built, drawn = [], []

    class Page:
        def vega_lite_chart(self, spec, **kwargs):
            drawn.append(spec)
            spec.pop("datasets")  # as Streamlit does with the data it ships separately

    def build(values):
        built.append(values)
        return alt.Chart(pd.DataFrame({"x": values})).mark_bar().encode(x="x:Q")

    key = ("test chart", object())  # a key no other test uses
    for _ in range(3):
        page.cached_chart(Page(), key, lambda: build([1, 2, 3]))
    assert built == [[1, 2, 3]] and len(drawn) == 3
    assert all(d == drawn[0] for d in drawn) and drawn[0] is not drawn[1]
    assert "datasets" in page._SPECS[key]  # the cached spec keeps its data though each draw took it out
    page.cached_chart(Page(), key[:1] + (object(),), lambda: build([4]))
    assert built == [[1, 2, 3], [4]]
    values = next(iter(page._SPECS[key].get("datasets").values()))
    assert [v["x"] for v in values] == [1, 2, 3]
