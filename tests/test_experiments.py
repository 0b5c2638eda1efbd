"""Tests for kd_lessons.experiments: transfer sets, bias-shift search, the paper-vs-ours table."""
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings as hyp_settings, strategies as st

from kd_lessons import experiments as ex


def test_transfer_mask_drop_removes_every_3_and_nothing_else():
    y = torch.arange(10).repeat(7)
    mask = ex.transfer_mask(y, drop=(3,))
    assert not bool((y[mask] == 3).any())
    assert int(mask.sum()) == len(y) - 7
    assert set(y[mask].tolist()) == set(range(10)) - {3}


def test_transfer_mask_keep_only_7s_and_8s():
    y = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    mask = ex.transfer_mask(y, keep=(7, 8))
    assert set(y[mask].tolist()) == {7, 8}
    assert int(mask.sum()) == int(((y == 7) | (y == 8)).sum())


@pytest.mark.parametrize("kwargs", [dict(drop=(3,), keep=(7,)), dict(keep=(11,))])
def test_transfer_mask_rejects_bad_requests(kwargs):
    with pytest.raises(ValueError):
        ex.transfer_mask(torch.arange(10), **kwargs)


def test_shift_logits_moves_only_the_named_columns():
    z = torch.randn(4, 10)
    out = ex.shift_logits(z, [7, 8], -2.5)
    torch.testing.assert_close(out[:, [7, 8]], z[:, [7, 8]] - 2.5)
    keep = [c for c in range(10) if c not in (7, 8)]
    torch.testing.assert_close(out[:, keep], z[:, keep])
    assert not torch.equal(out, z)  # the input is not modified in place


def _under_confident_3s():
    """Held-out logits where every true 3 loses to class 5 by 1.4 and every other digit wins by 3.2 over 3."""
    y = torch.tensor([3] * 20 + [0, 1, 2, 4, 5, 6, 7, 8, 9] * 10)
    z = torch.zeros(len(y), 10)
    z[y == 3, 5] = 1.4
    others = y != 3
    z[others, y[others]] = 3.2
    return z, y


def test_bias_sweep_and_choice_pick_the_best_held_out_shift():
    z, y = _under_confident_3s()
    sweep = ex.bias_sweep(z, y, [3], np.arange(-1.0, 5.01, 0.5))
    assert list(sweep.columns) == ["shift", "errors", "accuracy", "errors_on_classes", "n_classes"]
    at = sweep.set_index("shift")
    assert at.loc[0.0, "errors"] == 20 and at.loc[0.0, "errors_on_classes"] == 20
    assert at.loc[2.0, "errors"] == 0 and at.loc[2.5, "errors"] == 0
    assert at.loc[4.0, "errors"] == 90  # too large: every other digit is now called a 3
    assert at.loc[1.0, "errors"] == 20  # not enough: the 3s still lose to 5
    assert ex.choose_shift(sweep) == 1.5  # ties (1.5 to 3.0) go to the smallest |shift|


@hyp_settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_chosen_shift_has_the_fewest_held_out_errors(seed):
    g = torch.Generator().manual_seed(seed)
    z, y = torch.randn(60, 10, generator=g), torch.randint(0, 10, (60,), generator=g)
    sweep = ex.bias_sweep(z, y, [7, 8], np.round(np.arange(-3, 3.01, 0.25), 2))
    chosen = ex.choose_shift(sweep)
    assert sweep.set_index("shift").loc[chosen, "errors"] == sweep["errors"].min()


def test_bias_sweep_rejects_mismatched_rows():
    with pytest.raises(ValueError):
        ex.bias_sweep(torch.zeros(3, 10), torch.zeros(4, dtype=torch.int64), [3], [0.0])


def _fake_results():
    base = pd.DataFrame({"method": ["scratch", "distilled"] * 2, "seed": [0, 0, 1, 1],
                         "test_errors": [150, 80, 160, 90], "seconds": [10.0, 12.0, 10.0, 12.0]})
    transfer = pd.DataFrame({"seed": [0, 1], "shift": [3.0, 4.0], "errors": [300, 320], "errors_on_classes": [200, 220],
                             "shifted_errors": [120, 130], "shifted_errors_on_classes": [20, 30], "seconds": [9.0, 9.0]})
    return {"baseline": base, "no3": transfer, "only78": transfer, "teacher_errors": 60, "teacher_seconds": 100.0,
            "T": 20.0, "n_test": 10_000}


def test_paper_vs_ours_table_columns_and_values():
    table = ex.paper_vs_ours(_fake_results())
    assert list(table.columns) == ["experiment", "paper", "ours", "ours_mean", "ours_std", "seeds", "wall_s_per_run"]
    assert len(table) == 11
    scratch = table[table.experiment.str.contains("from scratch")].iloc[0]
    assert scratch.paper == 146 and scratch.ours_mean == 155 and scratch.ours == "155.0 ± 7.1" and scratch.seeds == 2
    pct = table[table.experiment == "only 7s and 8s: test error %"].iloc[0]
    assert pct.ours_mean == pytest.approx(3.1)  # 310 of 10,000 errors
    md = ex.to_markdown(table[["experiment", "paper", "ours"]])
    assert md.splitlines()[1] == "|---|---|---|" and len(md.splitlines()) == 13


def test_run_transfer_on_tiny_data_reports_a_shift_from_the_grid():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat(8)
    data = {"x": torch.randn(80, 1, 28, 28, generator=g), "y": y, "teacher_logits": torch.randn(80, 10, generator=g),
            "x_val": torch.randn(30, 1, 28, 28, generator=g), "y_val": torch.arange(10).repeat(3),
            "x_test": torch.randn(20, 1, 28, 28, generator=g), "y_test": torch.arange(10).repeat(2)}
    s = {**ex.settings(), "seeds": (0,), "num_epochs": 1, "batch_size": 32, "shifts": (0.0, 1.0, 2.0)}
    rows, sweeps = ex.run_transfer(data, s, drop=(3,), progress=False)
    row = rows.iloc[0]
    assert row["n_transfer"] == 72 and row["shift"] in (0.0, 1.0, 2.0)
    assert 0 <= row["shifted_errors_on_classes"] <= 2 and len(sweeps[0]) == 3
