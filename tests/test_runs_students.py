"""kd_lessons.runs.students: every student of a comparison gets the same data and budget, objectives are
fresh per run, a teacher's logits are computed once, and the summaries match hand computations."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from kd_lessons import teachers, train
from kd_lessons.data import random_shift
from kd_lessons.models import CNNStudent, MLPStudent
from kd_lessons.objectives import CrossEntropy, HintonKD
from kd_lessons.runs import students
from kd_lessons.runs.students import (
    StudentRuns,
    error_ratio,
    load_split,
    paired_differences,
    scratch_vs_distilled,
    summarize,
    train_students,
)
from kd_lessons.train import TrainOptions

N_TEST = 30


def _runs():
    return pd.DataFrame({"method": ["scratch", "distilled"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                         "errors": [150, 100, 160, 110, 170, 90], "accuracy": [.985, .990, .984, .989, .983, .991]})


def test_summarize_is_mean_and_sample_std_per_method():
    s = summarize(_runs())
    assert list(s.index) == ["scratch", "distilled"]
    assert s.loc["scratch", "errors_mean"] == 160 and s.loc["distilled", "errors_mean"] == 100
    assert math.isclose(s.loc["scratch", "errors_std"], np.std([150, 160, 170], ddof=1))
    assert math.isclose(s.loc["distilled", "accuracy_mean"], np.mean([.990, .989, .991]))
    assert math.isclose(s.loc["distilled", "accuracy_std"], np.std([.990, .989, .991], ddof=1))
    assert s.loc["distilled", "seeds"] == 3
    one = summarize(_runs().iloc[:2])
    assert math.isnan(one.loc["scratch", "errors_std"])


def test_error_ratio_with_default_and_named_methods():
    assert math.isclose(error_ratio(_runs()), 100 / 160)
    table = pd.concat([_runs(), pd.DataFrame({"method": ["hint"] * 3, "seed": [0, 1, 2], "errors": [80, 80, 80],
                                              "accuracy": [.992] * 3})])
    assert math.isclose(error_ratio(table, method="hint"), 80 / 160)
    assert math.isclose(error_ratio(table, method="hint", baseline="distilled"), 80 / 100)


def test_error_ratio_and_summarize_input_checks():
    with pytest.raises(ValueError, match=r"need 'scratch' \(with errors > 0\) and 'distilled' rows"):
        error_ratio(_runs()[_runs()["method"] == "distilled"])
    perfect = _runs().assign(errors=0)
    with pytest.raises(ValueError, match=r"need 'scratch' \(with errors > 0\)"):
        error_ratio(perfect)
    with pytest.raises(ValueError, match=r"lacks columns \['accuracy', 'errors'\]; pass train_students"):
        summarize(pd.DataFrame({"method": ["a"]}))


def test_paired_differences_per_seed_mean_and_std():
    d = paired_differences(_runs(), "distilled")
    assert d["per_seed"] == {0: -50.0, 1: -50.0, 2: -80.0}
    assert math.isclose(d["mean"], -60.0) and math.isclose(d["std"], np.std([-50, -50, -80], ddof=1))
    assert d["n"] == 3 and d["all_below_zero"] and not d["all_above_zero"]
    acc = paired_differences(_runs(), "distilled", value="accuracy")
    assert acc["all_above_zero"] and math.isclose(acc["per_seed"][2], .991 - .983)
    reverse = paired_differences(_runs(), "scratch", baseline="distilled")
    assert reverse["per_seed"] == {0: 50.0, 1: 50.0, 2: 80.0} and reverse["all_above_zero"]


def test_paired_differences_95_percent_t_interval():
    d = paired_differences(_runs(), "distilled")  # diffs -50, -50, -80: mean -60, std 17.32, t(2) = 4.303
    half = 4.303 * np.std([-50, -50, -80], ddof=1) / math.sqrt(3)
    assert d["ci95"] == pytest.approx((-60.0 - half, -60.0 + half))
    assert d["ci95"][0] < d["mean"] < d["ci95"][1] < 0  # -103 to -17 errors: below zero even with three seeds
    from kd_lessons.runs.seeds import t_quantile_975
    assert t_quantile_975(1) == pytest.approx(12.706) and t_quantile_975(30) == pytest.approx(2.042)
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=5e-4)
    assert t_quantile_975(120) == pytest.approx(1.9799, abs=5e-4)
    assert t_quantile_975(10 ** 6) == pytest.approx(1.96, abs=1e-3)  # the normal limit
    with pytest.raises(ValueError, match="df=0"):
        t_quantile_975(0)


def test_summaries_are_one_function_for_every_study():
    from kd_lessons.runs import lm_students, seeds, trace_students
    assert students.summarize is seeds.summarize and students.paired_differences is seeds.paired_differences
    rows = [{"method": m, "seed": s, "held_out": v, "longer": v / 2}
            for m, vs in {"a": (0.5, 0.7), "b": (0.2, 0.4)}.items() for s, v in enumerate(vs)]
    table = trace_students.summarize(pd.DataFrame(rows))
    assert table.loc["a", "held_out_mean"] == pytest.approx(0.6)
    assert table.loc["b", "longer_std"] == pytest.approx(0.1 / 2 ** .5)
    assert seeds.summarize(rows, ("held_out",)).equals(table[["seeds", "held_out_mean", "held_out_std"]])
    assert lm_students.summarize.__module__ == "kd_lessons.runs.lm_students" and not hasattr(lm_students, "paired")


def test_paired_differences_use_only_shared_seeds_and_std_is_nan_for_one():
    table = _runs()[~((_runs()["method"] == "scratch") & (_runs()["seed"] > 0))]  # scratch only has seed 0
    d = paired_differences(table, "distilled")
    assert d["per_seed"] == {0: -50.0} and d["n"] == 1 and math.isnan(d["std"])
    assert all(math.isnan(v) for v in d["ci95"])


def test_paired_differences_refuse_tables_without_a_shared_seed():
    table = pd.DataFrame({"method": ["scratch", "distilled"], "seed": [0, 1], "errors": [10, 5]})
    with pytest.raises(ValueError, match=r"share no seed; train both with the same seeds"):
        paired_differences(table, "distilled")
    with pytest.raises(ValueError, match=r"need 'hint' and 'scratch' rows, got methods"):
        paired_differences(_runs(), "hint")


@pytest.fixture
def tiny(monkeypatch, tmp_path, one_thread):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(96, 1, 28, 28, generator=g), torch.randn(N_TEST, 1, 28, 28, generator=g)
    y, yt = torch.randint(0, 10, (96,), generator=g), torch.randint(0, 10, (N_TEST,), generator=g)
    torch.manual_seed(0)
    teacher = MLPStudent(hidden=(32,)).eval()
    return teacher, {"dataset": "toy", "x": x, "y": y, "x_test": xt, "y_test": yt}


def test_scratch_vs_distilled_runs_both_methods_per_seed_and_caches_teacher_logits(tiny, tmp_path):
    teacher, data = tiny
    runs = scratch_vs_distilled(lambda: MLPStudent(hidden=(16, 16)), data, teacher, seeds=[0, 1], num_epochs=1,
                                options=TrainOptions(batch_size=32, progress=False))
    assert isinstance(runs, StudentRuns)
    assert list(runs.table["method"]) == ["scratch", "distilled"] * 2 and list(runs.table["seed"]) == [0, 0, 1, 1]
    assert (runs.table["errors"] == ((1 - runs.table["accuracy"]) * N_TEST).round().astype(int)).all()
    assert set(runs.students) == set(runs.histories) == {(m, s) for m in ("scratch", "distilled") for s in (0, 1)}
    assert all(s.hidden == (16, 16) for s in runs.students.values())
    assert (runs.table["seconds"] > 0).all()
    assert len(list((tmp_path / "logits").glob("*.pt"))) == 1  # one teacher, one x: one cached file
    with pytest.raises(ValueError, match=r"pass at least one of each, e.g. seeds=\[0, 1, 2\]"):
        scratch_vs_distilled(lambda: MLPStudent(hidden=(16,)), data, teacher, seeds=[])


def test_scratch_vs_distilled_uses_T_and_alpha(tiny, monkeypatch):
    teacher, data = tiny
    seen = []
    real = students.train_students
    monkeypatch.setattr(students, "train_students", lambda make, d, methods, *a, **k: seen.append(methods) or
                        real(make, d, methods, *a, **k))
    scratch_vs_distilled(lambda: MLPStudent(hidden=(8,)), data, teacher, T=7.0, alpha=0.3, num_epochs=1)
    (methods,) = seen
    assert isinstance(methods["scratch"], CrossEntropy)
    assert (methods["distilled"].T, methods["distilled"].alpha) == (7.0, 0.3)


def test_same_seed_gives_the_same_result(tiny):
    teacher, data = tiny
    make = lambda: MLPStudent(hidden=(16,))  # noqa: E731
    a = scratch_vs_distilled(make, data, teacher, seeds=[3], num_epochs=1,
                             options=TrainOptions(batch_size=32, progress=False)).table
    b = scratch_vs_distilled(make, data, teacher, seeds=[3], num_epochs=1,
                             options=TrainOptions(batch_size=32, progress=False)).table
    assert a["errors"].tolist() == b["errors"].tolist()


def test_every_run_gets_the_same_data_and_budget(tiny, monkeypatch):
    teacher, data = tiny
    calls = []
    real = students.distill

    def spy(student, x, y, source, objective, **kwargs):
        calls.append({"x": x, "y": y, "source": source, "objective": objective, **kwargs})
        return real(student, x, y, source, objective, **kwargs)

    monkeypatch.setattr(students, "distill", spy)
    methods = {"scratch": CrossEntropy(), "T=2": HintonKD(2.0, 0.5), "T=8": HintonKD(8.0, 0.9)}
    runs = train_students(lambda: MLPStudent(hidden=(8,)), data, methods, seeds=[0, 1], teacher=teacher, num_epochs=2,
                          lr=1e-2, options=TrainOptions(batch_size=48, val=True, progress=False))
    assert len(runs.table) == len(calls) == 6
    assert list(zip(runs.table["method"], runs.table["seed"])) == [(m, s) for s in (0, 1) for m in methods]
    for call, seed in zip(calls, [0, 0, 0, 1, 1, 1]):
        assert call["x"] is data["x"] and call["y"] is data["y"] and call["options"].seed == seed
        assert (call["num_epochs"], call["lr"], call["options"].batch_size) == (2, 1e-2, 48)
        assert call["options"].weight_decay is None  # distill's default (0) for every method
        assert call["options"].val[0] is data["x_test"]  # val=True: the study's test split
    assert calls[0]["source"] is None  # cross-entropy: no teacher
    teacher_logits = [c["source"] for c in calls if c["source"] is not None]
    assert all(torch.equal(t, teacher_logits[0]) for t in teacher_logits)  # the same cached logits
    # val=True: test accuracy per epoch
    assert all(len(h["val_accuracy"]) == 2 for h in runs.histories.values())


def test_an_objective_factory_gets_a_fresh_objective_per_run(tiny):
    teacher, data = tiny
    made = []

    def factory(student):
        made.append((student, HintonKD(4.0, 0.9)))
        return made[-1][1]

    runs = train_students(lambda: MLPStudent(hidden=(8,)), data, {"kd": factory, "scratch": CrossEntropy()},
                          seeds=[0, 1, 2], teacher=teacher, num_epochs=1)
    assert len(made) == 3 and len({id(obj) for _, obj in made}) == 3
    assert [student for student, _ in made] == [runs.students[("kd", s)] for s in (0, 1, 2)]


def test_a_teacher_model_runs_once_per_call_then_its_logits_come_from_the_cache(tiny, monkeypatch):
    teacher, data = tiny
    calls = []
    for module in (teachers, train):
        real = module.predict_logits
        monkeypatch.setattr(module, "predict_logits", lambda model, *a, _real=real, **k:
                            (calls.append(1) if model is teacher else None) or _real(model, *a, **k))
    methods = {"T=2": HintonKD(2.0), "T=4": HintonKD(4.0), "scratch": CrossEntropy()}
    train_students(lambda: MLPStudent(hidden=(8,)), data, methods, seeds=[0, 1], teacher=teacher, num_epochs=1)
    assert len(calls) == 1
    train_students(lambda: MLPStudent(hidden=(8,)), data, methods, seeds=[0], teacher=teacher, num_epochs=1)
    assert len(calls) == 1  # second call: the logits cache hit


def test_teacher_logits_are_cached_per_teacher_and_per_input(monkeypatch, tmp_path):
    """Moved from the old sweep tests (sweep.teacher_logits is now teachers.cached_logits)."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    x = torch.randn(20, 1, 28, 28)
    first = teachers.cached_logits(teacher, x)
    torch.testing.assert_close(first, teacher(x).detach())
    calls = []
    monkeypatch.setattr(teachers, "predict_logits", lambda m, xs, *a, **k: calls.append(1) or torch.zeros(len(xs), 10))
    torch.testing.assert_close(teachers.cached_logits(teacher, x), first)
    assert calls == []
    teachers.cached_logits(teacher, x[:10])  # other inputs: other logits
    assert calls == [1]
    with torch.no_grad():
        teacher[1].bias.add_(1.0)  # a retrained teacher must not reuse old logits
    teachers.cached_logits(teacher, x)
    assert calls == [1, 1]


def test_any_student_with_augmentation_runs_the_teacher_per_batch(tiny, tmp_path):
    teacher, data = tiny
    runs = scratch_vs_distilled(lambda: CNNStudent(width=2), data, teacher, seeds=[0], num_epochs=1,
                                options=TrainOptions(batch_size=32, augment=random_shift, device="cpu", progress=False))
    assert list(runs.table["method"]) == ["scratch", "distilled"] and set(runs.table["device"]) == {"cpu"}
    assert isinstance(runs.students[("distilled", 0)], CNNStudent)
    assert not list((tmp_path / "logits").glob("*.pt"))  # augmented batches: no cached logits


def test_teacher_logits_can_be_passed_instead_of_a_model(tiny, tmp_path):
    teacher, data = tiny
    logits = train.predict_logits(teacher, data["x"])
    runs = train_students(lambda: MLPStudent(hidden=(8,)), data, {"kd": HintonKD()}, teacher=logits, num_epochs=1)
    assert len(runs.table) == 1 and not list((tmp_path / "logits").glob("*.pt"))


def test_bad_methods_are_rejected(tiny):
    teacher, data = tiny
    with pytest.raises(ValueError, match=r"a method must be an Objective \(e.g. HintonKD\(T=4, alpha=0.9\)\)"):
        train_students(lambda: MLPStudent(hidden=(8,)), data, {"kd": "hinton"}, teacher=teacher, num_epochs=1)
    with pytest.raises(ValueError, match=r"a method must be an Objective .* or a function student -> Objective"):
        train_students(lambda: MLPStudent(hidden=(8,)), data, {"kd": lambda s: None}, teacher=teacher, num_epochs=1)
    with pytest.raises(ValueError, match=r"pass at least one of each"):
        train_students(lambda: MLPStudent(hidden=(8,)), data, {}, teacher=teacher)


def test_load_split_takes_a_balanced_subset_and_the_whole_test_set(monkeypatch):
    g = torch.Generator().manual_seed(0)
    fake = {True: (torch.randn(500, 1, 28, 28, generator=g), torch.arange(10).repeat(50)),
            False: (torch.randn(40, 1, 28, 28, generator=g), torch.arange(10).repeat(4))}
    monkeypatch.setattr(students, "load_tensors", lambda name, train=True: fake[train])
    split = load_split("mnist", n_train=100)
    assert split["dataset"] == "mnist" and len(split["x"]) == 100
    assert torch.bincount(split["y"]).tolist() == [10] * 10
    assert split["x_test"] is fake[False][0] and split["y_test"] is fake[False][1]
    assert len(load_split("mnist")["x"]) == 500


def _one_seed_runs(seed, method="scratch"):
    table = pd.DataFrame({"method": [method], "seed": [seed], "errors": [10 + seed], "accuracy": [0.9]})
    return StudentRuns(table, {(method, seed): f"student {seed}"}, {(method, seed): {"step": [seed]}})


def test_each_seed_runs_once_per_seed_and_stacks_the_runs():
    calls = []
    runs = students.each_seed(lambda seed: calls.append(seed) or _one_seed_runs(seed), [2, 0, 1])
    assert calls == [2, 0, 1] and list(runs.table["seed"]) == [2, 0, 1] and list(runs.table.index) == [0, 1, 2]
    assert runs.students == {("scratch", s): f"student {s}" for s in (0, 1, 2)}
    assert runs.histories[("scratch", 1)] == {"step": [1]}
    assert paired_differences(pd.concat([runs.table, _one_seed_runs(0, "kd").table, _one_seed_runs(1, "kd").table]),
                              "kd")["per_seed"] == {0: 0.0, 1: 0.0}


@pytest.mark.parametrize("seeds, run, match", [
    ([], _one_seed_runs, r"seeds=\[\]: pass at least one seed, each once"),
    ([0, 0], _one_seed_runs, r"seeds=\[0, 0\]: pass at least one seed, each once"),
    ([0, 1], lambda seed: _one_seed_runs(0), r"run\(1\) must return the StudentRuns of train_students\(\.\.\., "
                                              r"seeds=\[1\]\)"),
    ([0], lambda seed: None, r"run\(0\) must return the StudentRuns"),
])
def test_each_seed_rejects_repeated_seeds_and_runs_of_other_seeds(seeds, run, match):
    with pytest.raises(ValueError, match=match):
        students.each_seed(run, seeds)
