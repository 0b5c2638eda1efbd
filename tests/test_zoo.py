"""get_teacher: trains once, caches a verified checkpoint, and retrains (with a warning) when it is bad."""
import shutil
import warnings

import pytest
import torch

from kd_lessons import config, zoo
from conftest import mnist_subset
from kd_lessons.data import DataUnavailableError, load_tensors
from kd_lessons.storage import save_verified
from kd_lessons.train import evaluate

TINY = {"width": 2, "num_epochs": 1, "batch_size": 64, "augment": "none"}


@pytest.fixture(scope="module")
def mnist_tiny():
    return mnist_subset(300, 100)


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch, mnist_tiny):
    """A private cache folder, tiny MNIST splits and a counter of how often a teacher is trained."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    x, y, x_test, y_test = mnist_tiny
    monkeypatch.setattr(zoo, "load_tensors", lambda name, train=True: (x, y) if train else (x_test, y_test))
    calls = []
    real_train = zoo._train
    monkeypatch.setattr(zoo, "_train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    return calls


def _get(**kw):
    return zoo.get_teacher("mnist", device="cpu", progress=False, recipe_override={**TINY, **kw})


def test_trains_once_then_loads_the_same_weights(tiny_zoo):
    first = _get()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = _get()
    assert len(tiny_zoo) == 1
    assert not second.training
    for key, value in first.state_dict().items():
        torch.testing.assert_close(second.state_dict()[key].cpu(), value.cpu())
    assert second.info["test_errors"] == first.info["test_errors"]
    assert 0.0 <= second.info["test_accuracy"] <= 1.0
    assert second.info["precision"] in {"bfloat16", "float32"}   # how it was trained is on record
    assert zoo.teacher_info("mnist", recipe_override=TINY)["n_test"] == 100
    path = zoo.checkpoint_path("mnist", {**zoo.recipe("mnist"), **TINY})
    assert path.parent.name == "teachers" and path.name.startswith("mnist-quick-" if config.is_quick() else "mnist-full-")


def test_corrupt_checkpoint_is_reported_and_retrained(tiny_zoo):
    _get()
    path = zoo.checkpoint_path("mnist", {**zoo.recipe("mnist"), **TINY})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte in the middle
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="sha256"):
        teacher = _get()
    assert len(tiny_zoo) == 2 and not teacher.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _get()  # the retrained checkpoint is valid again
    assert len(tiny_zoo) == 2


def test_checkpoint_of_another_recipe_is_rejected(tiny_zoo):
    _get(width=3)
    other = zoo.checkpoint_path("mnist", {**zoo.recipe("mnist"), **TINY, "width": 3})
    mine = zoo.checkpoint_path("mnist", {**zoo.recipe("mnist"), **TINY})
    shutil.copy(other, mine)  # someone copied a checkpoint (and its checksum) to the wrong name
    shutil.copy(other.with_name(other.name + ".sha256.json"), mine.with_name(mine.name + ".sha256.json"))
    with pytest.warns(RuntimeWarning, match="recipe_hash"):
        _get()
    assert len(tiny_zoo) == 2


def test_state_dict_that_does_not_fit_is_rejected(tiny_zoo):
    rec = {**zoo.recipe("mnist"), **TINY}
    wrong = zoo.build_teacher({**rec, "width": 3}).state_dict()
    save_verified({"state_dict": wrong, "info": {}}, zoo.checkpoint_path("mnist", rec),
                  {"recipe_hash": zoo._recipe_hash(rec), "dataset": "mnist"})
    with pytest.warns(RuntimeWarning, match="size mismatch"):
        _get()
    assert len(tiny_zoo) == 1


def test_retrain_flag_forces_training(tiny_zoo):
    _get()
    _get()
    zoo.get_teacher("mnist", device="cpu", progress=False, recipe_override=TINY, retrain=True)
    assert len(tiny_zoo) == 2


def test_unknown_dataset_raises():
    with pytest.raises(ValueError, match="no teacher recipe"):
        zoo.get_teacher("imagenet")


def test_cifar10_without_data_raises_the_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # no cached CIFAR teacher here

    def missing(name, train=True):
        raise DataUnavailableError(f"{name} is not available offline (simulated)")

    monkeypatch.setattr(zoo, "load_tensors", missing)
    with pytest.raises(DataUnavailableError):
        zoo.get_teacher("cifar10", device="cpu", progress=False)


@pytest.mark.slow
def test_quick_mnist_teacher_reaches_98_percent(monkeypatch):
    """Uses the real cache: the first run trains the quick teacher (about a minute), later runs load it."""
    monkeypatch.setenv("KD_QUICK", "1")
    try:
        x_test, y_test = load_tensors("mnist", train=False)
    except DataUnavailableError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    teacher = zoo.get_teacher("mnist", progress=False)
    result = evaluate(teacher, x_test, y_test)
    assert result["accuracy"] >= 0.98
    assert result["errors"] == teacher.info["test_errors"]
