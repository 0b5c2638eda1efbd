"""get_teacher: trains once, caches a verified checkpoint, and retrains (with a warning) when it is bad;
the course's teacher is the ensemble of the "cnn" and "mlp" members; cached_logits: a teacher's logits
cached once per (weights, inputs).

Everything that trains here uses a private KD_CACHE_DIR, tiny MNIST splits and tiny recipes.
"""
import copy
import shutil
import threading
import warnings

import pytest
import torch

from kd_lessons import cache, config, teachers
from kd_lessons.cache import save_verified
from kd_lessons.data import DataUnavailableError, load_tensors
from kd_lessons.models import CifarResNet, Ensemble, MLPTeacher, TeacherCNN, count_params
from kd_lessons.train import TrainOptions, evaluate, predict_logits

TINY = {"width": 2, "num_epochs": 1, "batch_size": 64, "augment": "none"}
# What the tiny_zoo fixture makes of each member's recipe, so that an ensemble trains in a second.
TINY_MEMBERS = {"cnn": {"width": 2, "num_epochs": 1, "batch_size": 64, "augment": "none"},
                "mlp": {"hidden": [8, 8], "num_epochs": 1, "batch_size": 64, "augment": "none", "n_train": None}}
QUIET = TrainOptions(progress=False)


@pytest.fixture(scope="module")
def mnist_tiny(mnist_subset):
    return mnist_subset(300, 100)


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch, mnist_tiny):
    """A private cache folder, tiny MNIST splits, tiny member recipes and the recipes of every training run."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    x, y, x_test, y_test = mnist_tiny
    monkeypatch.setattr(teachers, "load_tensors", lambda name, train=True: (x, y) if train else (x_test, y_test))
    real_recipe = teachers.recipe
    monkeypatch.setattr(teachers, "recipe", lambda dataset, arch=None, **kw: real_recipe(
        dataset, arch, **{**TINY_MEMBERS.get(arch, {}), **kw}))
    calls = []
    real_train = teachers._train
    monkeypatch.setattr(teachers, "_train", lambda rec, *a, **k: calls.append(rec.arch) or real_train(rec, *a, **k))
    return calls


def _get(options=QUIET, **kw):
    return teachers.get_teacher("mnist", "cnn", device="cpu", options=options, recipe_override={**TINY, **kw})


def _path(**kw):
    return teachers.checkpoint_path("mnist", teachers.recipe("mnist", "cnn", **{**TINY, **kw}))


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
    assert info["recipe"] == teachers.recipe("mnist", "cnn", **TINY).asdict() and info["n_train"] == 300
    assert info["params"] == count_params(second)
    assert not hasattr(second, "info")                    # the info travels beside the model, not on it
    assert teachers.teacher_info("mnist", "cnn", recipe_override=TINY)["n_test"] == 100
    path = _path()
    assert path.parent.name == "teachers" and path.name.startswith(f"mnist-TeacherCNN-{config.mode()}-")
    key = teachers.recipe_key(teachers.recipe("mnist", "cnn", **TINY))
    assert path.name == f"mnist-TeacherCNN-{config.mode()}-{key}.pt"


def test_corrupt_checkpoint_is_reported_and_retrained(tiny_zoo):
    _get()
    path = _path()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte in the middle
    path.write_bytes(bytes(data))
    with pytest.warns(cache.CacheWarning, match=r"cnn teacher .*\.pt was unusable \(.*sha256.*deleted and will"):
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
    rec = teachers.recipe("mnist", "cnn", **TINY)
    wrong = teachers.build_teacher(rec.replace(width=3)).state_dict()
    save_verified({"state_dict": wrong, "info": {}}, teachers.checkpoint_path("mnist", rec),
                  {"recipe_hash": teachers.recipe_key(rec), "dataset": "mnist"})
    with pytest.warns(cache.CacheWarning, match=r"(?s)was unusable \(RuntimeError: .*size mismatch.*deleted and will"):
        _get()
    assert len(tiny_zoo) == 1


def test_retrain_flag_forces_training(tiny_zoo):
    _get()
    _get()
    teachers.get_teacher("mnist", "cnn", device="cpu", options=QUIET, recipe_override=TINY, retrain=True)
    assert len(tiny_zoo) == 2


def test_two_threads_asking_at_once_train_once(tiny_zoo):
    """The app's background jobs are threads: the second waits on cache.lock and loads the first's teacher."""
    start, results = threading.Barrier(2), []

    def ask():
        start.wait(10)
        results.append(_get())

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and tiny_zoo == ["TeacherCNN"]
    (a, a_info), (b, b_info) = results
    assert cache.state_digest(a) == cache.state_digest(b) and a_info == b_info


def test_the_course_teacher_is_the_mean_of_its_cnn_and_mlp_members(tiny_zoo, mnist_tiny):
    ensemble, info = teachers.get_teacher("mnist", device="cpu", options=QUIET)
    assert tiny_zoo == ["TeacherCNN", "MLPTeacher"]          # each member trained once
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnn, cnn_info = teachers.get_teacher("mnist", "cnn", device="cpu", options=QUIET)
        mlp, mlp_info = teachers.get_teacher("mnist", "mlp", device="cpu", options=QUIET)
        again, again_info = teachers.get_teacher("mnist", "ensemble", device="cpu", options=QUIET)
    assert len(tiny_zoo) == 2                                 # ... and then loaded from the cache
    assert isinstance(ensemble, Ensemble) and not ensemble.training
    assert isinstance(cnn, TeacherCNN) and isinstance(mlp, MLPTeacher) and mlp.hidden == (8, 8)
    assert [type(m) for m in ensemble.members] == [TeacherCNN, MLPTeacher]
    _, _, x_test, y_test = mnist_tiny
    x = x_test[:32]
    cnn_logits, mlp_logits = predict_logits(cnn, x, device="cpu"), predict_logits(mlp, x, device="cpu")
    assert not torch.allclose(cnn_logits, mlp_logits, atol=1e-2)  # so the mean is neither member alone
    expected = (cnn_logits + mlp_logits) / 2
    torch.testing.assert_close(predict_logits(ensemble, x, device="cpu"), expected)
    torch.testing.assert_close(predict_logits(again, x, device="cpu"), expected)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), (cnn(x) + mlp(x)) / 2)
    assert info["members"] == [cnn_info, mlp_info]
    assert info["params"] == count_params(ensemble) == count_params(cnn) + count_params(mlp) == cnn_info["params"] + \
        mlp_info["params"]
    result = evaluate(ensemble, x_test, y_test, device="cpu")
    assert (info["test_accuracy"], info["test_errors"], info["n_test"]) == (result["accuracy"], result["errors"], 100)
    assert info["train_seconds"] == pytest.approx(cnn_info["train_seconds"] + mlp_info["train_seconds"], abs=0.11)
    assert info["recipe"] == teachers.recipe("mnist").asdict() == {"dataset": "mnist", "arch": "ensemble", "members": [
        cnn_info["recipe"], mlp_info["recipe"]]}
    assert again_info["test_errors"] == info["test_errors"]
    with pytest.raises(ValueError, match="an Ensemble has no single set of feature maps; use one member"):
        ensemble(x, return_features=True)


def test_ensemble_info_is_none_until_both_members_are_cached(tiny_zoo):
    assert teachers.teacher_info("mnist") is None
    cnn_info = teachers.get_teacher("mnist", "cnn", device="cpu", options=QUIET)[1]
    assert teachers.teacher_info("mnist", "cnn")["test_errors"] == cnn_info["test_errors"]
    assert teachers.teacher_info("mnist", "mlp") is None
    assert teachers.teacher_info("mnist") is None and teachers.teacher_info("mnist", "ensemble") is None
    mlp_info = teachers.get_teacher("mnist", "mlp", device="cpu", options=QUIET)[1]
    info = teachers.teacher_info("mnist")
    assert info == {"members": [cnn_info, mlp_info], "recipe": teachers.recipe("mnist").asdict()}
    assert teachers.teacher_info("fashion_mnist") is None     # another dataset has its own members
    assert tiny_zoo == ["TeacherCNN", "MLPTeacher"]            # teacher_info never trains


def test_recipe_override_is_refused_for_the_ensemble(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    for arch in (None, "ensemble"):
        with pytest.raises(ValueError, match="recipe_override applies to one model; pass arch='cnn' or arch='mlp'"):
            teachers.get_teacher("mnist", arch, device="cpu", options=QUIET, recipe_override={"width": 2})
    assert not list(tmp_path.rglob("*.pt"))  # refused before anything trained


def test_archs_and_recipes():
    assert teachers.ARCHS == {"mnist": ("ensemble", "cnn", "mlp"), "fashion_mnist": ("ensemble", "cnn", "mlp"),
                              "cifar10": ("resnet",)}
    assert teachers.recipe("Fashion-MNIST").arch == "ensemble"
    assert [m.arch for m in teachers.recipe("mnist").members] == ["TeacherCNN", "MLPTeacher"]
    assert teachers.recipe("cifar10") == teachers.recipe("cifar10", "resnet")
    mlp = teachers.recipe("mnist", "mlp")
    assert (mlp.hidden, mlp.dropout, mlp.input_dropout) == ([1200, 1200], 0.5, 0.2)
    built = teachers.build_teacher(mlp)
    assert isinstance(built, MLPTeacher) and built.hidden == (1200, 1200)
    assert (built.dropout.p, built.input_dropout.p) == (0.5, 0.2)
    assert isinstance(teachers.build_teacher(teachers.recipe("fashion_mnist", "cnn")), TeacherCNN)
    assert isinstance(teachers.build_teacher(teachers.recipe("cifar10")), CifarResNet)


@pytest.mark.parametrize("call", [
    lambda: teachers.recipe("mnist", "resnet"),
    lambda: teachers.get_teacher("mnist", arch="resnet", device="cpu"),
    lambda: teachers.teacher_info("mnist", "resnet"),
], ids=["recipe", "get_teacher", "teacher_info"])
def test_unknown_arch_names_the_choices(call, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"arch='resnet' is not a mnist teacher; use one of \['ensemble', 'cnn', "
                                         r"'mlp'\]"):
        call()
    assert not list(tmp_path.rglob("*.pt"))


def test_unknown_arch_for_cifar10_names_the_choices():
    with pytest.raises(ValueError, match=r"arch='cnn' is not a cifar10 teacher; use one of \['resnet'\]"):
        teachers.recipe("cifar10", "cnn")


def test_checkpoint_names_differ_per_arch(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    paths = {arch: teachers.checkpoint_path("mnist", teachers.recipe("mnist", arch)) for arch in ("cnn", "mlp")}
    assert paths["cnn"].name.startswith(f"mnist-TeacherCNN-{config.mode()}-")
    assert paths["mlp"].name.startswith(f"mnist-MLPTeacher-{config.mode()}-")
    assert paths["cnn"] != paths["mlp"] and paths["cnn"].parent == paths["mlp"].parent == tmp_path / "teachers"
    assert teachers.checkpoint_path("mnist") == paths["cnn"]  # the default single model
    cifar = teachers.checkpoint_path("cifar10", teachers.recipe("cifar10"))
    assert cifar.name.startswith(f"cifar10-CifarResNet-{config.mode()}-")
    fashion = teachers.checkpoint_path("fashion_mnist", teachers.recipe("fashion_mnist", "cnn"))
    assert fashion.name.startswith("fashion_mnist-TeacherCNN-") and fashion != paths["cnn"]


def test_recipe_key_names_the_recipe_content():
    rec = teachers.recipe("mnist", "cnn")
    assert (teachers.recipe_key(rec) == cache.key(rec)
            == teachers.recipe_key(dict(reversed(list(rec.asdict().items())))) == rec.key)
    assert teachers.recipe_key(rec.replace(seed=1)) != teachers.recipe_key(rec)
    assert teachers.build_teacher(rec).stages[0][0][0].out_channels == rec.width
    with pytest.raises(ValueError, match="recipe arch='ViT' is not a single model; use 'TeacherCNN', 'MLPTeacher' "
                                         "or 'CifarResNet'"):
        teachers.build_teacher(rec.replace(arch="ViT"))
    with pytest.raises(ValueError, match=r"recipe arch='ensemble' is not a single model.*get_teacher\(dataset, "
                                         r"arch='ensemble'\)"):
        teachers.build_teacher(teachers.recipe("mnist"))


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
