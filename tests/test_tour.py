"""kd_lessons.runs.tour: every family trained with one budget, and the summary table's paired gains."""
import pandas as pd
import pytest
import torch

from kd_lessons.models import TeacherCNN
from kd_lessons.runs import tour
from kd_lessons.runs.students import StudentRuns

CRD = "KD + CRD (in-batch)"


def _fake_split(mnist_subset, monkeypatch, n_train=128):
    """tour's load_split on a small MNIST subset; records the seed each split was drawn with."""
    x, y, x_test, y_test = mnist_subset(n_train, 64)
    drawn = []

    def split(dataset, n_train, seed=0):
        drawn.append(seed)
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(x), generator=g)[: len(x) - 8]  # a different subset per seed
        return {"dataset": dataset, "x": x[keep], "y": y[keep], "x_test": x_test, "y_test": y_test}
    monkeypatch.setattr(tour, "load_split", split)
    return drawn


def test_every_family_is_in_the_tour_with_its_objective():
    methods = tour.methods(TeacherCNN(width=2), tour.recipe(n_train=100, steps=5))
    assert list(methods) == list(tour.FAMILIES)
    assert {tour.FAMILIES[m] for m in methods} == {"none", "logits", "relations", "contrastive"}
    assert callable(methods[CRD]) and not hasattr(methods[CRD], "forward")  # fresh heads per run
    assert {"KD + RKD", CRD} <= set(tour.COSTLY) and "DKD" not in tour.COSTLY


def test_run_trains_each_method_per_seed_with_the_same_steps(monkeypatch, mnist_subset, one_thread):
    drawn = _fake_split(mnist_subset, monkeypatch)
    runs = tour.run(tour.recipe(n_train=128, steps=4), TeacherCNN(width=2).eval(), seeds=[0, 1],
                    names=["scratch", "Hinton KD", "KD + RKD"])
    assert sorted(runs.table.groupby("method").size().items()) == [("Hinton KD", 2), ("KD + RKD", 2), ("scratch", 2)]
    assert {h["step"][-1] for h in runs.histories.values()} == {4}
    assert drawn == [0, 1]  # each seed draws its own training subset


def test_costly_methods_train_on_their_seeds_only_and_the_subset_can_be_fixed(monkeypatch, mnist_subset, one_thread):
    drawn = _fake_split(mnist_subset, monkeypatch)
    rec = tour.recipe(n_train=128, steps=2, subset_per_seed=False)
    runs = tour.run(rec, TeacherCNN(width=2).eval(), seeds=[0, 1, 2], names=["scratch", "KD + RKD"], costly_seeds=[1])
    assert sorted(zip(runs.table["method"], runs.table["seed"])) == [("KD + RKD", 1), ("scratch", 0), ("scratch", 1),
                                                                     ("scratch", 2)]
    assert drawn == [0, 0, 0]  # subset_per_seed=False: seed 0's subset for every seed
    assert tour.recipe().key != rec.key  # the choice names the cache


def test_shift_controls_train_on_shifted_batches_with_the_teacher_live(monkeypatch, mnist_subset, one_thread):
    _fake_split(mnist_subset, monkeypatch)
    calls = []
    teacher = TeacherCNN(width=2).eval()
    teacher.register_forward_hook(lambda *_: calls.append(1))
    rows = tour.run_shift_controls(tour.recipe(n_train=128, steps=3), teacher, seeds=[0])
    assert list(rows["method"]) == list(tour.SHIFT_CONTROLS)
    assert len(calls) >= 3  # Hinton KD + shifts: the teacher ran on each shifted batch (no cached logits)
    assert set(tour.summary(StudentRuns(rows))["family"]) == {"control"}


def test_difference_pairs_shared_seeds_in_points_and_names_its_ledger_entry():
    rows = [("scratch", 0, 0.90), ("scratch", 1, 0.92), ("scratch", 2, 0.91), ("KD + RKD", 0, 0.93),
            ("KD + RKD", 2, 0.95)]
    table = pd.DataFrame([{"method": m, "seed": s, "accuracy": a} for m, s, a in rows])
    d, seeds = tour.difference(table, "KD + RKD", "scratch")
    assert seeds == [0, 2] and d.n == 2 and d.mean == pytest.approx(3.5)  # points: (3 + 4) / 2
    assert d.low < 3 < 4 < d.high  # two seeds: a wide t-interval (12.7 x the standard error)
    assert tour.ledger_name("KD + CRD (in-batch)", "Hinton KD") == "kd_crd_in_batch_minus_hinton_kd_points"


def test_summary_reports_paired_gains_over_scratch_and_hinton_kd():
    rows = [("scratch", 0, 0.90), ("scratch", 1, 0.92), ("Hinton KD", 0, 0.93), ("Hinton KD", 1, 0.94),
            ("DIST", 0, 0.91), ("DIST", 1, 0.93)]
    table = pd.DataFrame([{"method": m, "seed": s, "accuracy": a, "errors": round((1 - a) * 100), "seconds": 1.0}
                          for m, s, a in rows])
    out = tour.summary(StudentRuns(table), extra_params={"DIST": 0})
    assert out.loc["Hinton KD", "gain_vs_scratch"] == pytest.approx(2.5)       # points: (3 + 2) / 2
    assert out.loc["DIST", "gain_vs_hinton"] == pytest.approx(-1.5)            # (-2 - 1) / 2
    assert out.loc["DIST", "gain_vs_hinton_ci95"] == pytest.approx(12.706 * 0.5)  # t(1) x standard error 0.5
    assert out.loc["Hinton KD", "paired_seeds"] == 2
    assert pd.isna(out.loc["scratch", "gain_vs_scratch"]) and out.loc["DIST", "family"] == "logits"


def test_schemes_run_with_the_tour_budget_and_join_its_table(monkeypatch, mnist_subset, one_thread):
    _fake_split(mnist_subset, monkeypatch)
    rows = tour.run_schemes(tour.recipe(n_train=128, steps=3), TeacherCNN(width=2).eval(), seeds=[0])
    assert list(rows["method"]) == list(tour.SCHEMES)
    few = tour.run_schemes(tour.recipe(n_train=128, steps=2), TeacherCNN(width=2).eval(), seeds=[0, 1],
                           names=["born-again", "function matching"], costly_seeds=[0])
    assert sorted(zip(few["method"], few["seed"])) == [("born-again", 0), ("born-again", 1), ("function matching", 0)]
    assert list(rows.columns) == ["method", "seed", "accuracy", "errors", "seconds", "device"]  # joins run()'s table
    out = tour.summary(StudentRuns(rows))
    assert set(out["family"]) == {"scheme"} and out["gain_vs_scratch"].isna().all()  # no scratch row to pair with
