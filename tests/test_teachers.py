"""get_teacher: trains once, caches a verified checkpoint, and retrains (with a warning) when it is bad;
cached_logits: a teacher's logits cached once per (weights, inputs)."""
import copy
import shutil
import warnings

import pytest
import torch

from kd_lessons import cache, config, teachers
from kd_lessons.cache import save_verified
from kd_lessons.data import DataUnavailableError, load_tensors
from kd_lessons.models import TeacherCNN
from kd_lessons.train import TrainOptions, evaluate, predict_logits

TINY = {"width": 2, "num_epochs": 1, "batch_size": 64, "augment": "none"}
QUIET = TrainOptions(progress=False)


@pytest.fixture(scope="module")
def mnist_tiny(mnist_subset):
    return mnist_subset(300, 100)


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch, mnist_tiny):
    """A private cache folder, tiny MNIST splits and a counter of how often a teacher is trained."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    x, y, x_test, y_test = mnist_tiny
    monkeypatch.setattr(teachers, "load_tensors", lambda name, train=True: (x, y) if train else (x_test, y_test))
    calls = []
    real_train = teachers._train
    monkeypatch.setattr(teachers, "_train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    return calls


def _get(options=QUIET, **kw):
    return teachers.get_teacher("mnist", device="cpu", options=options, recipe_override={**TINY, **kw})


def _path(**kw):
    return teachers.checkpoint_path("mnist", {**teachers.recipe("mnist"), **TINY, **kw})


def test_trains_once_then_loads_the_same_weights(tiny_zoo):
    steps = []
    options = TrainOptions(progress=False, on_step=lambda done, total: steps.append((done, total)))
    first, first_info = _get(options=options)
    assert steps == [(i, 5) for i in range(1, 6)]  # options reach the training loop: 300 rows / 64 = 5 steps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second, info = _get()
    assert len(tiny_zoo) == 1
    assert not second.training and isinstance(second, TeacherCNN)
    for key, value in first.state_dict().items():
        torch.testing.assert_close(second.state_dict()[key].cpu(), value.cpu())
    assert info["test_errors"] == first_info["test_errors"]
    assert 0.0 <= info["test_accuracy"] <= 1.0
    assert info["precision"] in {"bfloat16", "float32"}   # how it was trained is on record
    assert info["recipe"] == {**teachers.recipe("mnist"), **TINY} and info["n_train"] == 300
    assert not hasattr(second, "info")                    # the info travels beside the model, not on it
    assert teachers.teacher_info("mnist", recipe_override=TINY)["n_test"] == 100
    path = _path()
    assert path.parent.name == "teachers" and path.name.startswith(f"mnist-{config.mode()}-")
    assert path.name == f"mnist-{config.mode()}-{teachers.recipe_key({**teachers.recipe('mnist'), **TINY})}.pt"


def test_corrupt_checkpoint_is_reported_and_retrained(tiny_zoo):
    _get()
    path = _path()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte in the middle
    path.write_bytes(bytes(data))
    with pytest.warns(cache.CacheWarning, match="unusable and will be retrained: CorruptFileError.*sha256"):
        teacher, _ = _get()
    assert len(tiny_zoo) == 2 and not teacher.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _get()  # the retrained checkpoint is valid again
    assert len(tiny_zoo) == 2


def test_checkpoint_of_another_recipe_is_rejected(tiny_zoo):
    _get(width=3)
    other, mine = _path(width=3), _path()
    shutil.copy(other, mine)  # someone copied a checkpoint (and its checksum) to the wrong name
    shutil.copy(cache.sidecar(other), cache.sidecar(mine))
    with pytest.warns(cache.CacheWarning, match="recipe_hash=.*expected .*another configuration"):
        _get()
    assert len(tiny_zoo) == 2


def test_state_dict_that_does_not_fit_is_rejected(tiny_zoo):
    rec = {**teachers.recipe("mnist"), **TINY}
    wrong = teachers.build_teacher({**rec, "width": 3}).state_dict()
    save_verified({"state_dict": wrong, "info": {}}, teachers.checkpoint_path("mnist", rec),
                  {"recipe_hash": teachers.recipe_key(rec), "dataset": "mnist"})
    with pytest.warns(cache.CacheWarning, match="(?s)unusable and will be retrained: RuntimeError.*size mismatch"):
        _get()
    assert len(tiny_zoo) == 1


def test_retrain_flag_forces_training(tiny_zoo):
    _get()
    _get()
    teachers.get_teacher("mnist", device="cpu", options=QUIET, recipe_override=TINY, retrain=True)
    assert len(tiny_zoo) == 2


def test_recipe_key_names_the_recipe_content():
    rec = teachers.recipe("mnist")
    assert teachers.recipe_key(rec) == cache.key(rec) == teachers.recipe_key(dict(reversed(list(rec.items()))))
    assert teachers.recipe_key({**rec, "seed": 1}) != teachers.recipe_key(rec)
    assert teachers.build_teacher(rec).stages[0][0][0].out_channels == rec["width"]
    with pytest.raises(ValueError, match="recipe arch='ViT' is not known; use 'TeacherCNN' or 'CifarResNet'"):
        teachers.build_teacher({**rec, "arch": "ViT"})


def test_unknown_dataset_raises():
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'; use one of \['cifar10', 'fashion_mnist'"):
        teachers.get_teacher("imagenet")


def test_cifar10_without_data_raises_the_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))  # no cached CIFAR teacher here
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "data"))    # ... and no CIFAR-10 files
    monkeypatch.setenv("KD_OFFLINE", "1")
    with pytest.raises(DataUnavailableError, match="(?s)Could not load dataset .cifar10.*Fix: run `python -m kd_"):
        teachers.get_teacher("cifar10", device="cpu", options=QUIET)
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_cached_logits_are_computed_once_per_weights_and_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # writes test-only (and corrupt) logits
    monkeypatch.setenv("KD_DEVICE", "cpu")
    torch.manual_seed(0)
    teacher = TeacherCNN(width=2).eval()
    x = torch.randn(20, 1, 28, 28)
    logits = teachers.cached_logits(teacher, x)
    torch.testing.assert_close(logits, predict_logits(teacher, x, device="cpu"), rtol=0, atol=0)
    file = cache.path("logits", f"{cache.state_digest(teacher)}_{cache.tensor_digest(x)}.pt")
    assert file.is_file() and cache.sidecar(file).is_file()
    computed = []
    monkeypatch.setattr(teachers, "predict_logits", lambda *a, **k: computed.append(1) or predict_logits(*a, **k))
    assert torch.equal(teachers.cached_logits(teacher, x.clone()), logits) and computed == []  # same content: cached
    other_x = x.clone()
    other_x[0, 0, 0, 0] += 1.0
    teachers.cached_logits(teacher, other_x)
    assert computed == [1]                      # other inputs: computed again
    retrained = copy.deepcopy(teacher)
    with torch.no_grad():
        retrained.head[-1].bias[0] += 1.0
    assert not torch.equal(teachers.cached_logits(retrained, x), logits)  # other weights: never the stale logits
    assert computed == [1, 1]
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    file.write_bytes(bytes(raw))
    with pytest.warns(cache.CacheWarning, match="cached teacher logits .* was unusable.*rebuilt"):
        again = teachers.cached_logits(teacher, x)
    assert computed == [1, 1, 1] and torch.equal(again, logits) and file.is_file()


@pytest.mark.slow
def test_quick_mnist_teacher_reaches_98_percent(monkeypatch):
    """Uses the real cache: the first run trains the quick teacher (about a minute), later runs load it."""
    monkeypatch.setenv("KD_QUICK", "1")
    try:
        x_test, y_test = load_tensors("mnist", train=False)
    except DataUnavailableError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    teacher, info = teachers.get_teacher("mnist", options=QUIET)
    result = evaluate(teacher, x_test, y_test)
    assert result["accuracy"] >= 0.98
    assert result["errors"] == info["test_errors"]
