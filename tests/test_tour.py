"""kd_lessons.runs.tour: every family trained with one budget, and the summary table's paired gains."""
import pandas as pd
import pytest

from kd_lessons.models import TeacherCNN
from kd_lessons.runs import tour
from kd_lessons.runs.students import StudentRuns


def test_every_family_is_in_the_tour_with_its_objective():
    methods = tour.methods(TeacherCNN(width=2), tour.recipe(n_train=100, steps=5))
    assert list(methods) == list(tour.FAMILIES)
    assert {tour.FAMILIES[m] for m in methods} == {"none", "logits", "relations", "contrastive"}
    assert callable(methods["CRD"]) and not hasattr(methods["CRD"], "forward")  # fresh heads per run


def test_run_trains_each_method_per_seed_with_the_same_steps(monkeypatch, mnist_subset, one_thread):
    x, y, x_test, y_test = mnist_subset(128, 64)
    monkeypatch.setattr(tour, "load_split", lambda dataset, n_train: {"dataset": dataset, "x": x, "y": y,
                                                                      "x_test": x_test, "y_test": y_test})
    runs = tour.run(tour.recipe(n_train=128, steps=4), TeacherCNN(width=2).eval(), seeds=[0, 1],
                    names=["scratch", "Hinton KD", "RKD"])
    assert sorted(runs.table.groupby("method").size().items()) == [("Hinton KD", 2), ("RKD", 2), ("scratch", 2)]
    assert {h["step"][-1] for h in runs.histories.values()} == {4}


def test_summary_reports_paired_gains_over_scratch_and_hinton_kd():
    rows = [("scratch", 0, 0.90), ("scratch", 1, 0.92), ("Hinton KD", 0, 0.93), ("Hinton KD", 1, 0.94),
            ("DIST", 0, 0.91), ("DIST", 1, 0.93)]
    table = pd.DataFrame([{"method": m, "seed": s, "accuracy": a, "errors": round((1 - a) * 100), "seconds": 1.0}
                          for m, s, a in rows])
    out = tour.summary(StudentRuns(table), extra_params={"DIST": 0})
    assert out.loc["Hinton KD", "gain_vs_scratch"] == pytest.approx(2.5)       # points: (3 + 2) / 2
    assert out.loc["DIST", "gain_vs_hinton"] == pytest.approx(-1.5)            # (-2 - 1) / 2
    assert pd.isna(out.loc["scratch", "gain_vs_scratch"]) and out.loc["DIST", "family"] == "logits"


def test_schemes_run_with_the_tour_budget_and_join_its_table(monkeypatch, mnist_subset, one_thread):
    x, y, x_test, y_test = mnist_subset(128, 64)
    monkeypatch.setattr(tour, "load_split", lambda dataset, n_train: {"dataset": dataset, "x": x, "y": y,
                                                                      "x_test": x_test, "y_test": y_test})
    rows = tour.run_schemes(tour.recipe(n_train=128, steps=3), TeacherCNN(width=2).eval(), seeds=[0])
    assert list(rows["method"]) == list(tour.SCHEMES)
    assert list(rows.columns) == ["method", "seed", "accuracy", "errors", "seconds", "device"]  # joins run()'s table
    out = tour.summary(StudentRuns(rows))
    assert set(out["family"]) == {"scheme"} and out["gain_vs_scratch"].isna().all()  # no scratch row to pair with
