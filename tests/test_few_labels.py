"""Tests for kd_lessons.runs.few_labels: a few labelled images, the teacher labels the rest.

Unit tests only, on small synthetic data (few_labels.load_tensors is replaced) with a stand-in linear
teacher and a private KD_CACHE_DIR (teacher logits are cached): whether distillation beats scratch on
real MNIST is notebook 04's job.
"""
import pytest
import torch
from torch import nn

from kd_lessons.models import MLPStudent
from kd_lessons.objectives import UNLABELED, CrossEntropy, HintonKD
from kd_lessons.runs import few_labels
from kd_lessons.runs.students import Arm

N_TRAIN, N_TEST, N_LABELED = 300, 60, 50


def _synthetic():
    """x holds the row number in its first pixel; classes are balanced (30 per class)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN, 1, 28, 28, generator=g)
    x[:, 0, 0, 0] = torch.arange(N_TRAIN).float()
    y = torch.arange(N_TRAIN) % 10
    x_test = torch.randn(N_TEST, 1, 28, 28, generator=g)
    return x, y, x_test, torch.arange(N_TEST) % 10


@pytest.fixture
def tiny(monkeypatch, tmp_path, one_thread):
    """A private cache, synthetic 'mnist' splits and a random linear teacher (often wrong)."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KD_DEVICE", "cpu")
    x, y, x_test, y_test = _synthetic()
    loads = []
    monkeypatch.setattr(few_labels, "load_tensors", lambda name, train=True: loads.append((name, train)) or (
        (x.clone(), y.clone()) if train else (x_test.clone(), y_test.clone())))
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    rec = few_labels.recipe("mnist", n_labeled=N_LABELED, student_width=8, steps=5)
    return {"rec": rec, "teacher": teacher, "x": x, "y": y, "loads": loads}


def test_recipe_defaults_follow_the_mode(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    quick = few_labels.recipe("MNIST")
    assert quick.asdict() == {"dataset": "mnist", "n_labeled": 500, "n_pool": 5000, "student_width": 100, "steps": 300,
                     "lr": 3e-3, "batch_size": 128, "weight_decay": 5e-4, "seed": 0, "mode": "quick"}
    monkeypatch.setenv("KD_QUICK", "0")
    full = few_labels.recipe("fashion_mnist", seed=2)
    assert (full.n_labeled, full.n_pool, full.steps) == (1000, None, 3000)
    assert (full.dataset, full.seed, full.mode) == ("fashion_mnist", 2, "full")
    assert few_labels.recipe("mnist", n_labeled=100, student_width=30, steps=7).n_labeled == 100


@pytest.mark.parametrize("kwargs, match", [
    ({"n_labeled": 0}, r"FewLabelsRecipe.n_labeled=0: must be > 0"),
    ({"student_width": True}, r"FewLabelsRecipe.student_width=True \(bool\): expected int"),
    ({"steps": 2.5}, r"FewLabelsRecipe.steps=2.5 \(float\): expected int"),
    ({"n_labeled": 6000}, r"FewLabelsRecipe.n_labeled=6000: must be <= n_pool=5000"),
])
def test_recipe_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        few_labels.recipe("mnist", **kwargs)
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; use one of"):
        few_labels.recipe("svhn")


def test_make_student_is_the_recipes_mlp(tiny):
    student = few_labels.make_student(tiny["rec"].replace(student_width=12))
    assert isinstance(student, MLPStudent) and student.hidden == (12, 12)


def test_split_keeps_exactly_n_labeled_class_balanced_labels(tiny):
    data = few_labels.split(tiny["rec"])
    y, y_true = data["y"], data["y_true"]
    labelled = y != UNLABELED
    assert int(labelled.sum()) == N_LABELED
    assert torch.bincount(y[labelled], minlength=10).tolist() == [5] * 10    # class-balanced
    assert torch.equal(y[labelled], y_true[labelled])                         # kept labels are the true ones
    assert bool((y[~labelled] == UNLABELED).all()) and int((~labelled).sum()) == N_TRAIN - N_LABELED
    assert torch.equal(data["x"], tiny["x"]) and torch.equal(y_true, tiny["y"])  # the pool: every image
    assert torch.equal(data["x_labeled"], data["x"][labelled]) and torch.equal(data["y_labeled"], y_true[labelled])
    rows = data["x_labeled"][:, 0, 0, 0].long()
    assert torch.equal(tiny["y"][rows], data["y_labeled"])                    # x_labeled lines up with its labels
    assert len(data["x_test"]) == N_TEST and data["dataset"] == "mnist"
    assert tiny["loads"] == [("mnist", True), ("mnist", False)]


def test_split_follows_the_recipe_seed_and_pool_size(tiny):
    rec = tiny["rec"]
    first = few_labels.split(rec)["y"]
    assert torch.equal(few_labels.split(rec)["y"], first)
    assert not torch.equal(few_labels.split(rec.replace(seed=1))["y"], first)  # another seed: other labelled images
    small = few_labels.split(rec.replace(n_pool=200))
    assert len(small["x"]) == 200 and torch.bincount(small["y_true"]).tolist() == [20] * 10
    assert int((small["y"] != UNLABELED).sum()) == N_LABELED


def test_methods_train_each_on_its_own_inputs(tiny):
    data = few_labels.split(tiny["rec"])
    teacher = tiny["teacher"]
    table = few_labels.methods(data, teacher, T=2.0, alpha=0.6)
    assert list(table) == list(few_labels.METHODS) == ["scratch", "distilled", "pseudo-labels", "all labels"]
    scratch = table["scratch"]
    assert isinstance(scratch, Arm) and isinstance(scratch.objective, CrossEntropy)
    assert torch.equal(scratch.x, data["x_labeled"]) and torch.equal(scratch.y, data["y_labeled"])
    assert len(scratch.x) == N_LABELED and bool((scratch.y >= 0).all())      # the labelled images only
    distilled = table["distilled"]
    assert isinstance(distilled, HintonKD) and (distilled.T, distilled.alpha) == (2.0, 0.6)  # on the study's x, y
    every = table["all labels"]
    assert isinstance(every.objective, CrossEntropy)
    assert torch.equal(every.x, data["x"]) and torch.equal(every.y, data["y_true"])


def test_pseudo_labels_are_the_teachers_top_class_where_no_label_is_kept(tiny):
    data = few_labels.split(tiny["rec"])
    teacher = tiny["teacher"]
    pseudo = few_labels.methods(data, teacher, names=("pseudo-labels",))["pseudo-labels"]
    assert isinstance(pseudo.objective, CrossEntropy) and torch.equal(pseudo.x, data["x"])
    with torch.no_grad():
        top = teacher(data["x"]).argmax(1)
    labelled = data["y"] != UNLABELED
    assert torch.equal(pseudo.y[~labelled], top[~labelled])
    assert torch.equal(pseudo.y[labelled], data["y_true"][labelled])
    # the check means something: the teacher is wrong on some labelled rows, so keeping their labels shows
    assert bool((top[labelled] != data["y_true"][labelled]).any()) and bool((top != data["y_true"]).any())
    assert bool((pseudo.y != data["y_true"]).any()) and bool((pseudo.y >= 0).all())


def test_methods_by_name_and_unknown_names(tiny):
    data = few_labels.split(tiny["rec"])
    table = few_labels.methods(data, None, names=("distilled", "scratch"))  # no pseudo-labels: no teacher needed
    assert list(table) == ["distilled", "scratch"]
    with pytest.raises(ValueError, match=r"unknown methods \['mixup'\]; use some of \['scratch', 'distilled'"):
        few_labels.methods(data, None, names=("scratch", "mixup"))


def test_study_gives_every_method_the_recipes_number_of_steps(tiny):
    rec = tiny["rec"]
    runs = few_labels.study(rec, tiny["teacher"], seeds=(0, 1), T=2.0, alpha=0.5)
    assert sorted(runs.table["method"].unique()) == sorted(few_labels.METHODS)
    assert len(runs.table) == 8 and set(runs.table["seed"]) == {0, 1}
    for (name, _seed), history in runs.histories.items():
        # 50 labelled rows: one batch per epoch; 300 pool rows: 3 batches; the same 5 steps either way
        assert history["step"][-1] == rec.steps == len(history["step_loss"]), name
        assert history["val_accuracy"] == []                    # val=False
    assert runs.histories[("scratch", 0)]["step"] == [1, 2, 3, 4, 5]
    assert runs.histories[("distilled", 0)]["step"] == [3, 5]
    assert all(0.0 <= a <= 1.0 for a in runs.table["accuracy"])
    assert set(runs.table["errors"] + (runs.table["accuracy"] * N_TEST).round().astype(int)) == {N_TEST}
    assert all(isinstance(s, MLPStudent) and s.hidden == (8, 8) for s in runs.students.values())


def test_study_with_val_records_test_accuracy_at_the_steps(tiny):
    runs = few_labels.study(tiny["rec"], tiny["teacher"], names=("scratch",), val=True)
    history = runs.histories[("scratch", 0)]
    assert history["val_step"] == [1, 2, 3, 4, 5] and len(history["val_accuracy"]) == 5
    assert list(runs.table["method"]) == ["scratch"]


def test_study_is_deterministic_and_uses_the_recipes_weight_decay(tiny, monkeypatch):
    seen = []
    real = few_labels.train_students
    monkeypatch.setattr(few_labels, "train_students", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    a = few_labels.study(tiny["rec"], tiny["teacher"], names=("distilled",))
    b = few_labels.study(tiny["rec"], tiny["teacher"], names=("distilled",))
    assert a.table["errors"].tolist() == b.table["errors"].tolist()
    assert a.histories[("distilled", 0)]["step_loss"] == b.histories[("distilled", 0)]["step_loss"]
    assert seen[0]["options"].weight_decay == tiny["rec"].weight_decay and seen[0]["options"].max_steps == 5
    assert (seen[0]["lr"], seen[0]["options"].batch_size) == (tiny["rec"].lr, tiny["rec"].batch_size)


def test_study_draws_each_seeds_own_labelled_images(tiny, monkeypatch):
    seen = []
    real = few_labels.train_students
    monkeypatch.setattr(few_labels, "train_students", lambda make, data, arms, seeds, **kw:
                        seen.append((list(seeds), arms["scratch"].x)) or real(make, data, arms, seeds, **kw))
    runs = few_labels.study(tiny["rec"], tiny["teacher"], seeds=(0, 1), names=("scratch",))
    assert [s for s, _ in seen] == [[0], [1]] and list(runs.table["seed"]) == [0, 1]
    assert not torch.equal(seen[0][1], seen[1][1])                       # another seed: other labelled images
    assert torch.equal(seen[0][1], few_labels.split(tiny["rec"])["x_labeled"])   # seed s: split(rec.replace(seed=s))
    assert torch.equal(seen[1][1], few_labels.split(tiny["rec"].replace(seed=1))["x_labeled"])


def test_dark_knowledge_resamples_labels_and_shuffle_per_seed_and_trains_the_named_arms(tiny, monkeypatch):
    from kd_lessons.runs import dark_knowledge

    seen = []
    real = dark_knowledge.train_students
    monkeypatch.setattr(dark_knowledge, "train_students", lambda make, data, arms, seeds, **kw:
                        seen.append((list(seeds), arms)) or real(make, data, arms, seeds, **kw))
    runs, info = dark_knowledge.study(tiny["rec"], tiny["teacher"], seeds=(0, 1), T=2.0,
                                      names=("teacher", "shuffled"))
    assert [s for s, _ in seen] == [[0], [1]] and [list(a) for _, a in seen] == [["teacher", "shuffled"]] * 2
    assert sorted(zip(runs.table["method"], runs.table["seed"])) == [("shuffled", 0), ("shuffled", 1),
                                                                   ("teacher", 0), ("teacher", 1)]
    (first, second) = (arms for _, arms in seen)
    assert not torch.equal(first["teacher"].x, second["teacher"].x)      # each seed: its own labelled images
    for arms, seed in ((first, 0), (second, 1)):
        logits = tiny["teacher"](arms["teacher"].x).detach()
        expected = dark_knowledge.control_logits(logits, arms["teacher"].y, 2.0, "shuffled", seed=seed)
        torch.testing.assert_close(arms["shuffled"].teacher, expected)  # ... and its own shuffle
    assert info["T"] == 2.0 and 0 < info["epsilon"] < 0.9 and info["entropy"] > 0
    with pytest.raises(ValueError, match=r"names=\['mixup'\]: use some of \['scratch', 'teacher'"):
        dark_knowledge.study(tiny["rec"], tiny["teacher"], names=("mixup",))
