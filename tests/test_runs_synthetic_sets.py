"""kd_lessons.runs.synthetic_sets: the cached synthetic set, the transfer sets and their augmentation."""
import dataclasses
import warnings

import pytest
import torch

from kd_lessons import cache
from kd_lessons.methods.deep_inversion import SynthesisOptions
from kd_lessons.models import TeacherCNN
from kd_lessons.objectives import UNLABELED
from kd_lessons.runs import synthetic_sets

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    teacher = TeacherCNN(width=4).eval()
    rec = synthetic_sets.recipe(n_images=20, snapshots=[1], n_small_real=10,
                           synthesis=SynthesisOptions(steps=2, batch_size=10))
    return teacher, rec


def test_synthetic_set_is_built_once_then_loaded_verified(tiny):
    teacher, rec = tiny
    first = synthetic_sets.synthetic_set(teacher, rec, progress=False)
    assert not first["cached"] and first["x"].shape == (20, 1, 28, 28) and set(first["snapshots"]) == {1}
    assert torch.equal(first["y"], torch.arange(20) % 10) and first["seconds"] > 0
    again = synthetic_sets.synthetic_set(teacher, rec, progress=False)
    assert again["cached"] and torch.equal(again["x"], first["x"])
    other = synthetic_sets.synthetic_set(teacher, rec.replace(seed=1), progress=False)
    assert not other["cached"] and not torch.equal(other["x"], first["x"])  # the seed is part of the key


def test_a_corrupt_synthetic_set_is_rebuilt_with_a_warning(tiny):
    teacher, rec = tiny
    first = synthetic_sets.synthetic_set(teacher, rec, progress=False)
    path = next(p for p in cache.path("tensors", "x").parent.glob("deepinversion-*.pt"))
    path.write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = synthetic_sets.synthetic_set(teacher, rec, progress=False)
    assert any(issubclass(w.category, cache.CacheWarning) for w in caught)
    assert not rebuilt["cached"] and torch.equal(rebuilt["x"], first["x"])  # same seed, same images


def test_transfer_sets_have_the_right_sizes_and_only_the_teachers_labels(tiny):
    teacher, rec = tiny
    g = torch.Generator().manual_seed(0)
    data = {"x": torch.randn(60, 1, 28, 28, generator=g), "y": torch.arange(60) % 10}
    sets = synthetic_sets.transfer_sets(teacher, rec, data, progress=False)
    assert list(sets) == list(synthetic_sets.SETS)
    assert [len(x) for x, _ in sets.values()] == [20, 20, 20, 10, 30]
    for name, (x, y) in sets.items():  # no set's own labels: the sets differ only in their images (review F22)
        assert len(x) == len(y) and x.shape[1:] == (1, 28, 28) and (y == UNLABELED).all(), name


def test_each_seed_draws_its_own_sets(tiny):
    teacher, rec = tiny
    g = torch.Generator().manual_seed(0)
    data = {"x": torch.randn(200, 1, 28, 28, generator=g), "y": torch.arange(200) % 10}
    zero = synthetic_sets.transfer_sets(teacher, rec, data, progress=False)
    one = synthetic_sets.transfer_sets(teacher, rec.replace(seed=1), data, progress=False)
    for name in synthetic_sets.SETS:  # synthetic set, noise and real subsets are all resampled (review F40)
        assert not torch.equal(zero[name][0], one[name][0]), name
    small, real_next = zero[synthetic_sets.SETS[3]][0], one[synthetic_sets.SETS[2]][0]
    assert not torch.equal(small, real_next[:len(small)])  # the small set is not a prefix of the next seed's draw


@pytest.fixture
def fake_mnist(monkeypatch):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, 1, 28, 28, generator=g), torch.arange(300) % 10
    monkeypatch.setattr(synthetic_sets, "load_tensors", lambda dataset, train=True: (x, y) if train else None)
    return x, y


def test_the_validation_split_is_held_out_fixed_and_sized(tiny, fake_mnist):
    _, rec = tiny
    rec = rec.replace(n_validation=50)
    data = synthetic_sets.load_data(rec)
    assert data["split"] == "validation" and len(data["x_test"]) == 50 and len(data["x"]) == 250
    rows = {tuple(r.flatten()[:8].tolist()) for r in data["x"]}
    assert not any(tuple(r.flatten()[:8].tolist()) in rows for r in data["x_test"])  # disjoint from the pool
    again = synthetic_sets.load_data(rec.replace(seed=3))
    assert torch.equal(again["x_test"], data["x_test"])  # the same split for every seed: the measuring stick
    with pytest.raises(ValueError, match="leaves no training images"):
        synthetic_sets.load_data(rec.replace(n_validation=300))


def test_compare_trains_every_set_per_seed_on_its_own_synthetic_set(tiny, fake_mnist):
    teacher, rec = tiny
    rec = rec.replace(n_validation=40, student_steps=2, batch_size=10, student_width=2)
    runs = synthetic_sets.compare(teacher, rec, seeds=[0, 1])
    assert len(runs.table) == 8 and set(runs.table["seed"]) == {0, 1} and len(runs.students) == 8
    assert runs.table["errors"].between(0, 40).all()  # scored on the 40 validation images
    files = list(cache.path("tensors", "x").parent.glob("deepinversion-*.pt"))
    assert len(files) == 2  # one DeepInversion run per seed
    wrong = synthetic_sets.mistakes(runs, torch.zeros(5, 1, 28, 28), torch.zeros(5, dtype=torch.long))
    assert set(wrong) == set(runs.students) and all(len(v) == 5 and set(v) <= {0.0, 1.0} for v in wrong.values())
    test = synthetic_sets.score(runs, torch.zeros(5, 1, 28, 28), torch.zeros(5, dtype=torch.long))
    assert list(test.columns) == ["method", "seed", "errors", "accuracy"] and len(test) == 8
    assert (test["errors"] == [int(sum(wrong[(m, s)])) for m, s in zip(test["method"], test["seed"])]).all()
    with pytest.raises(ValueError, match="at least one seed"):
        synthetic_sets.compare(teacher, rec, seeds=[])


def test_curves_and_train_on_return_one_student_per_point(tiny, fake_mnist):
    teacher, rec = tiny
    rec = rec.replace(n_validation=40, student_steps=2, batch_size=10, student_width=2)
    data = synthetic_sets.load_data(rec)
    budget = synthetic_sets.curve_over_student_steps(teacher, rec, [1, 2], data=data)
    assert budget.table["student_steps"].tolist() == [1, 2] and len(budget.students) == 2
    snaps = synthetic_sets.curve_over_steps(teacher, rec, data=data)
    assert snaps.table["synthesis_steps"].tolist() == [1] and snaps.table["method"].tolist() == ["after 1 steps"]
    one = synthetic_sets.train_on(teacher, rec, {"mine": torch.zeros(10, 1, 28, 28)}, data=data)
    assert one.table["method"].tolist() == ["mine"]
    with pytest.raises(ValueError, match="map a name to a batch"):
        synthetic_sets.train_on(teacher, rec, {"flat": torch.zeros(10, 784)}, data=data)


def test_without_bn_term_changes_only_the_bn_weight(tiny):
    _, rec = tiny
    other = synthetic_sets.without_bn_term(rec)
    assert other.synthesis.bn_weight == 0 and rec.synthesis.bn_weight == 1.0
    assert dataclasses.replace(other.synthesis, bn_weight=1.0) == rec.synthesis and other.key != rec.key


def test_mix_and_shift_is_seeded_and_mixes_within_the_batch():
    x = torch.zeros(8, 1, 28, 28)
    x[:4] = 1.0
    a = synthetic_sets.mix_and_shift(x, generator=torch.Generator().manual_seed(3))
    b = synthetic_sets.mix_and_shift(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    values = a[:, 0, 14, 14]
    assert ((values > 0) & (values < 1)).any()  # some images are mixes of a 1-image and a 0-image


def test_grid_order_puts_one_class_per_column():
    y = torch.arange(30) % 10
    order = synthetic_sets.grid_order(y, per_class=3)
    assert y[order].view(3, 10).eq(torch.arange(10)).all()
    with pytest.raises(ValueError, match="at least per_class=4 images of every class"):
        synthetic_sets.grid_order(y, per_class=4)


def test_bad_recipes_and_set_names_are_rejected(tiny):
    teacher, rec = tiny
    with pytest.raises(ValueError, match=r"SyntheticSetsRecipe has no field\(s\) \['n_imgs'\]"):
        synthetic_sets.recipe(n_imgs=10)
    with pytest.raises(ValueError, match=r"unknown transfer sets \['imagenet'\]"):
        synthetic_sets.compare(teacher, rec, names=["imagenet"])


def test_student_step_curve_rejects_bad_steps(tiny):
    teacher, rec = tiny
    for steps in ([0, 10], [2.5], [], [True]):
        with pytest.raises(ValueError, match="pass positive integers"):
            synthetic_sets.curve_over_student_steps(teacher, rec, steps)


def test_the_default_comparison_is_the_four_transfer_sets_of_the_lesson():
    import inspect
    assert inspect.signature(synthetic_sets.compare).parameters["names"].default == synthetic_sets.SETS[:4]
