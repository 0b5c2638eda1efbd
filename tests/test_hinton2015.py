"""Tests for kd_lessons.runs.hinton2015: transfer sets, bias-shift search, the paper-vs-ours table, the
800-800 runs on tiny data and the `python -m kd_lessons hinton` command."""
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from torch import nn

from kd_lessons import __main__ as cli
from kd_lessons.objectives import HintonKD
from kd_lessons.runs import hinton2015 as h
from kd_lessons.runs.students import StudentRuns
from kd_lessons.train import predict_logits


def test_transfer_mask_drop_removes_every_3_and_nothing_else():
    y = torch.arange(10).repeat(7)
    mask = h.transfer_mask(y, drop=(3,))
    assert not bool((y[mask] == 3).any())
    assert int(mask.sum()) == len(y) - 7
    assert set(y[mask].tolist()) == set(range(10)) - {3}


def test_transfer_mask_keep_only_7s_and_8s():
    y = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    mask = h.transfer_mask(y, keep=(7, 8))
    assert set(y[mask].tolist()) == {7, 8}
    assert int(mask.sum()) == int(((y == 7) | (y == 8)).sum())


@pytest.mark.parametrize("kwargs, match", [
    (dict(drop=(3,), keep=(7,)), r"pass drop=\[3\] or keep=\[7\], not both"),
    (dict(keep=(11,)), r"the transfer set is empty .* check the class ids \(0-9\)")])
def test_transfer_mask_rejects_bad_requests(kwargs, match):
    with pytest.raises(ValueError, match=match):
        h.transfer_mask(torch.arange(10), **kwargs)


def test_shift_logits_moves_only_the_named_columns():
    z = torch.randn(4, 10)
    out = h.shift_logits(z, [7, 8], -2.5)
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
    sweep = h.bias_sweep(z, y, [3], np.arange(-1.0, 5.01, 0.5))
    assert list(sweep.columns) == ["shift", "errors", "accuracy", "errors_on_classes", "n_classes"]
    at = sweep.set_index("shift")
    assert at.loc[0.0, "errors"] == 20 and at.loc[0.0, "errors_on_classes"] == 20
    assert at.loc[2.0, "errors"] == 0 and at.loc[2.5, "errors"] == 0
    assert at.loc[4.0, "errors"] == 90  # too large: every other digit is now called a 3
    assert at.loc[1.0, "errors"] == 20  # not enough: the 3s still lose to 5
    assert (sweep["n_classes"] == 20).all()
    assert h.choose_shift(sweep) == 1.5  # ties (1.5 to 3.0) go to the smallest |shift|


@hyp_settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_chosen_shift_has_the_fewest_held_out_errors(seed):
    g = torch.Generator().manual_seed(seed)
    z, y = torch.randn(60, 10, generator=g), torch.randint(0, 10, (60,), generator=g)
    sweep = h.bias_sweep(z, y, [7, 8], np.round(np.arange(-3, 3.01, 0.25), 2))
    chosen = h.choose_shift(sweep)
    assert sweep.set_index("shift").loc[chosen, "errors"] == sweep["errors"].min()


def test_bias_sweep_rejects_mismatched_rows_and_no_shifts():
    with pytest.raises(ValueError, match=r"logits has 3 rows and y 4; pass one row per label"):
        h.bias_sweep(torch.zeros(3, 10), torch.zeros(4, dtype=torch.int64), [3], [0.0])
    with pytest.raises(ValueError, match=r"pass one row per label and >= 1 shift"):
        h.bias_sweep(torch.zeros(3, 10), torch.zeros(3, dtype=torch.int64), [3], [])


def test_recipe_is_small_in_quick_mode(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    quick = h.recipe()
    monkeypatch.setenv("KD_QUICK", "0")
    full = h.recipe()
    assert full.n_train is None and full.seeds == (0, 1, 2) and quick.seeds == (0,)
    assert quick.n_train == 5000 and quick.num_epochs < full.num_epochs
    assert full.T == quick.T == h.PAPER["T"] and full.shifts == quick.shifts
    assert 0.0 in full.shifts and min(full.shifts) == -20.0 and max(full.shifts) == 20.0


def _fake_results():
    base = pd.DataFrame({"method": ["scratch", "distilled"] * 2, "seed": [0, 0, 1, 1],
                         "errors": [150, 80, 160, 90], "seconds": [10.0, 12.0, 10.0, 12.0]})
    transfer = pd.DataFrame({"seed": [0, 1], "shift": [3.0, 4.0], "errors": [300, 320],
                             "errors_on_classes": [200, 220], "shifted_errors": [120, 130],
                             "shifted_errors_on_classes": [20, 30], "seconds": [9.0, 9.0]})
    return {"baseline": base, "no3": transfer, "only78": transfer, "teacher_errors": 60, "teacher_seconds": 100.0,
            "T": 20.0, "n_test": 10_000}


def test_paper_vs_ours_table_columns_and_values():
    table = h.paper_vs_ours(_fake_results())
    assert list(table.columns) == ["experiment", "paper", "ours", "ours_mean", "ours_std", "seeds", "wall_s_per_run"]
    assert len(table) == 12  # incl. the baseline rows' teacher
    scratch = table[table.experiment.str.contains("from scratch")].iloc[0]
    assert scratch.paper == 146 and scratch.ours_mean == 155 and scratch.ours == "155.0 ± 7.1" and scratch.seeds == 2
    assert scratch.wall_s_per_run == 10.0
    teacher = table.iloc[0]
    assert teacher.paper == h.PAPER["teacher_errors"] and teacher.ours == "60.0" and teacher.seeds == 1
    pct = table[table.experiment == "only 7s and 8s: test error %"].iloc[0]
    assert pct.ours_mean == pytest.approx(3.1)  # 310 of 10,000 errors
    md = h.to_markdown(table[["experiment", "paper", "ours"]])
    assert md.splitlines()[1] == "|---|---|---|" and len(md.splitlines()) == 14


def _tiny_data(seed=0):
    """80 transfer images (8 of each digit), 30 held out, 20 test, and random teacher logits."""
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(80, 1, 28, 28, generator=g), "y": torch.arange(10).repeat(8),
            "teacher_logits": torch.randn(80, 10, generator=g),
            "x_val": torch.randn(30, 1, 28, 28, generator=g), "y_val": torch.arange(10).repeat(3),
            "x_test": torch.randn(20, 1, 28, 28, generator=g), "y_test": torch.arange(10).repeat(2),
            "teacher_test": {"errors": 7}, "teacher_train_seconds": 3.0}


def _tiny_recipe(**kw):
    return h.recipe(**{"seeds": (0,), "num_epochs": 1, "batch_size": 32, "shifts": (0.0, 1.0, 2.0),
                       "temperatures": (1.0, 20.0), **kw})


def test_run_transfer_on_tiny_data_reports_a_shift_from_the_grid(one_thread):
    data, s = _tiny_data(), _tiny_recipe()
    rows, sweeps = h.run_transfer(data, s, drop=(3,), progress=False)
    row = rows.iloc[0]
    assert row["n_transfer"] == 72 and row["shift"] in (0.0, 1.0, 2.0)
    assert 0 <= row["shifted_errors_on_classes"] <= 2 and len(sweeps[0]) == 3
    assert row["shift"] == h.choose_shift(sweeps[0]) and row["seconds"] > 0
    only78, _ = h.run_transfer(data, s, keep=(7, 8), progress=False)
    assert only78.iloc[0]["n_transfer"] == 16 and 0 <= only78.iloc[0]["errors_on_classes"] <= 4


def test_train_on_uses_the_masked_transfer_set_and_the_paper_net(one_thread, monkeypatch):
    seen = []
    real = h.train_students

    def spy(make_student, split, methods, seeds, teacher=None, **kwargs):
        seen.append((split, teacher, kwargs))
        return real(make_student, split, methods, seeds, teacher=teacher, **kwargs)

    monkeypatch.setattr(h, "train_students", spy)
    data, s = _tiny_data(), _tiny_recipe(lr=2e-3)
    mask = h.transfer_mask(data["y"], drop=(3,))
    runs = h.train_on(data, s, {"kd": HintonKD(20.0, 0.9)}, [0, 1], mask, progress=False)
    assert isinstance(runs, StudentRuns) and list(runs.table["seed"]) == [0, 1]
    assert runs.students[("kd", 0)].hidden == (800, 800)
    ((split, teacher, kwargs),) = seen
    assert len(split["x"]) == 72 and not bool((split["y"] == 3).any())
    torch.testing.assert_close(teacher, data["teacher_logits"][mask])
    assert (kwargs["num_epochs"], kwargs["lr"], kwargs["options"].batch_size) == (1, 2e-3, 32)


def test_run_baseline_on_an_mnist_subset_learns_both_students(one_thread, mnist_subset):
    x, y, x_test, y_test = mnist_subset(600, 300)
    data = {"x": x, "y": y, "teacher_logits": 6.0 * nn.functional.one_hot(y, 10).float(),  # a perfect teacher
            "x_test": x_test, "y_test": y_test}
    s = _tiny_recipe(seeds=(0, 1), num_epochs=2, batch_size=64)
    table = h.run_baseline(data, s, progress=False)
    assert list(table.columns) == ["method", "seed", "T", "errors", "seconds"]
    assert list(zip(table["method"], table["seed"])) == [("scratch", 0), ("distilled", 0), ("scratch", 1),
                                                         ("distilled", 1)]
    assert table[table.method == "distilled"]["T"].tolist() == [20.0, 20.0]
    assert table[table.method == "scratch"]["T"].isna().all()
    assert (table["errors"] < 0.4 * len(y_test)).all()  # chance would be ~90% errors


def test_temperature_sweep_trains_only_the_unknown_temperatures(one_thread, monkeypatch):
    data, s = _tiny_data(), _tiny_recipe(temperatures=(1.0, 3.0, 20.0))
    trained = []
    real = h.train_on
    monkeypatch.setattr(h, "train_on", lambda d, s_, methods, seeds, *a, **k:
                        trained.append((list(methods), list(seeds))) or real(d, s_, methods, seeds, *a, **k))
    sweep = h.temperature_sweep(data, s, known={20.0: 5}, progress=False)
    assert trained == [(["T=1", "T=3"], [0])]
    assert sweep["T"].tolist() == [1.0, 3.0, 20.0] and sweep["errors"].iloc[2] == 5
    assert sweep["errors"].between(0, 20).all()
    h.temperature_sweep(data, s, known={1.0: 1, 3.0: 2, 20.0: 3}, progress=False)
    assert len(trained) == 1  # everything known: nothing trained


def test_known_errors_takes_the_first_seeds_distilled_run():
    base = _fake_results()["baseline"].assign(T=[None, 20.0] * 2)
    assert h.known_errors(base, h.recipe(seeds=(0, 1), T=20.0)) == {20.0: 80}
    assert h.known_errors(base, h.recipe(seeds=(1, 0), T=20.0)) == {20.0: 90}
    assert h.known_errors(base[base.method == "scratch"], h.recipe(seeds=(0,), T=20.0)) == {}


def test_load_data_splits_transfer_held_out_and_test(monkeypatch, tmp_path, one_thread):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # the logits of fake images are test-only cache entries
    g = torch.Generator().manual_seed(0)
    fake = {True: (torch.randn(200, 1, 28, 28, generator=g), torch.arange(10).repeat(20)),
            False: (torch.randn(30, 1, 28, 28, generator=g), torch.arange(10).repeat(3))}
    monkeypatch.setattr(h, "load_tensors", lambda name, train=True: fake[train])
    monkeypatch.setattr(h, "get_teacher", lambda *a, **k: pytest.fail("a given teacher must be used"))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    s = h.recipe(n_val=40, n_val_used=25, n_train=50)
    data = h.load_data(s, teacher=teacher)
    assert len(data["x"]) == 50 and torch.bincount(data["y"]).tolist() == [5] * 10
    assert torch.equal(data["x_val"], fake[True][0][160:185]) and torch.equal(data["y_val"], fake[True][1][160:185])
    held_out = {tuple(r.flatten()[:4].tolist()) for r in fake[True][0][160:]}
    assert not any(tuple(r.flatten()[:4].tolist()) in held_out for r in data["x"])  # no held-out image trains
    torch.testing.assert_close(data["teacher_logits"], predict_logits(teacher, data["x"]))
    assert data["x_test"] is fake[False][0] and data["teacher_test"]["n"] == 30
    assert data["teacher"] is teacher and data["teacher_train_seconds"] is None


def test_run_all_assembles_every_experiment_and_reuses_the_baseline_run(one_thread, monkeypatch):
    monkeypatch.setattr(h, "load_data", lambda s, arch: _tiny_data())
    s = _tiny_recipe(seeds=(0, 1))
    results = h.run_all(s, progress=False)
    assert len(results["table"]) == 12 and results["wall_seconds"] > 0
    assert set(results["baseline"]["method"]) == {"scratch", "distilled"} and len(results["baseline"]) == 4
    assert len(results["no3"]) == len(results["only78"]) == 2 and set(results["no3_sweeps"]) == {0, 1}
    d0 = results["baseline"].query("method == 'distilled' and seed == 0")["errors"].iloc[0]
    assert results["t_sweep"].set_index("T").loc[20.0, "errors"] == d0  # T=20, seed 0: not trained again
    assert results["teacher_errors"] == 7 and results["n_test"] == 20
    assert results["table"].iloc[0]["ours_mean"] == 7.0


def test_hinton_command_help_and_seeds(capsys, monkeypatch):
    parser = cli.build_parser()
    with pytest.raises(SystemExit, match=r"^0$"):  # argparse exits 0 after printing the help
        parser.parse_args(["hinton", "--help"])
    out = capsys.readouterr().out
    assert "--seeds" in out and "python -m kd_lessons hinton" in out
    assert parser.parse_args(["hinton", "--seeds", "0", "1"]).seeds == [0, 1]
    with pytest.raises(SystemExit, match=r"^2$"):  # quick mode is KD_QUICK=1 now; the reason goes to stderr
        parser.parse_args(["hinton", "--quick"])
    assert "unrecognized arguments: --quick" in capsys.readouterr().err
    seen = []
    results = {"table": h.paper_vs_ours(_fake_results()), "t_sweep": pd.DataFrame({"T": [20.0], "errors": [80]}),
               "wall_seconds": 1.0}
    monkeypatch.setattr(h, "run_all", lambda s: seen.append(s) or results)
    assert cli.main(["hinton", "--seeds", "4", "5"]) == 0
    assert seen[0].seeds == (4, 5)
    out = capsys.readouterr().out
    assert "| experiment | paper | ours | seeds | wall_s_per_run |" in out and "ours_mean" not in out
    assert "T sweep:" in out


def test_transfer_sets_get_extra_seeds_in_full_mode(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "0")
    full = h.recipe()
    assert full.transfer_seeds == (0, 1, 2, 3, 4) and full.seeds == (0, 1, 2)
    assert h.recipe(seeds=(4, 5)).transfer_seeds == (4, 5, 6, 7)
    assert full.replace(seeds=(1,), extra_transfer_seeds=0).transfer_seeds == (1,)
    monkeypatch.setenv("KD_QUICK", "1")
    assert h.recipe().transfer_seeds == (0,)
    with pytest.raises(ValueError, match=r"extra_transfer_seeds=-1: must be in \[0, 100\]"):
        h.recipe(extra_transfer_seeds=-1)


def test_run_transfer_trains_the_transfer_seeds_and_fills_predictions(one_thread):
    data, s = _tiny_data(), _tiny_recipe(seeds=(0,), extra_transfer_seeds=1)
    predictions = {}
    rows, sweeps = h.run_transfer(data, s, drop=(3,), progress=False, predictions=predictions)
    assert list(rows["seed"]) == [0, 1] and set(sweeps) == set(predictions) == {0, 1}
    for seed, row in rows.set_index("seed").iterrows():
        before, after = predictions[seed]
        assert int((before != data["y_test"]).sum()) == row["errors"]
        assert int((after != data["y_test"]).sum()) == row["shifted_errors"]
        assert int((after[data["y_test"] == 3] != 3).sum()) == row["shifted_errors_on_classes"]


def test_run_baseline_trains_only_the_named_methods(one_thread, monkeypatch):
    trained = []
    real = h.train_on
    monkeypatch.setattr(h, "train_on", lambda d, s_, methods, seeds, *a, **k:
                        trained.append(list(methods)) or real(d, s_, methods, seeds, *a, **k))
    table = h.run_baseline(_tiny_data(), _tiny_recipe(), progress=False, names=("distilled",))
    assert trained == [["distilled"]] and list(table["method"]) == ["distilled"] and table["T"].tolist() == [20.0]
    with pytest.raises(ValueError, match=r"names=\['teacher'\]: use 'scratch' and/or 'distilled'"):
        h.run_baseline(_tiny_data(), _tiny_recipe(), names=("teacher",))
