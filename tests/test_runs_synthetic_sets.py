"""kd_lessons.runs.synthetic_sets: the cached synthetic set, the transfer sets and their augmentation."""
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


def test_transfer_sets_have_the_right_sizes_and_labels(tiny):
    teacher, rec = tiny
    g = torch.Generator().manual_seed(0)
    data = {"x": torch.randn(60, 1, 28, 28, generator=g), "y": torch.arange(60) % 10}
    sets = synthetic_sets.transfer_sets(teacher, rec, data, progress=False)
    assert list(sets) == list(synthetic_sets.SETS)
    assert [len(x) for x, _ in sets.values()] == [20, 20, 20, 10, 30]
    labelled = synthetic_sets.SETS[2]
    for name, (x, y) in sets.items():
        assert len(x) == len(y) and x.shape[1:] == (1, 28, 28)
        assert (y >= 0).all() if name == labelled else (y == UNLABELED).all(), name


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
    with pytest.raises(ValueError, match="unknown transfer sets"):
        synthetic_sets.compare(teacher, rec, names=["imagenet"])


def test_student_step_curve_rejects_bad_steps(tiny):
    teacher, rec = tiny
    for steps in ([0, 10], [2.5], [], [True]):
        with pytest.raises(ValueError, match="pass positive integers"):
            synthetic_sets.curve_over_student_steps(teacher, rec, steps)


def test_the_default_comparison_is_the_four_transfer_sets_of_the_lesson():
    import inspect
    assert inspect.signature(synthetic_sets.compare).parameters["names"].default == synthetic_sets.SETS[:4]
