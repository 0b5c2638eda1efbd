"""Teachers trained once and cached as verified checkpoints, and their logits cached once per input set.

Introduced in notebook 04_distill_mnist. A checkpoint is cache kind "teachers", named
`<dataset>-<quick|full>-<recipe key>.pt`, with a sha256 sidecar (`kd_lessons.cache`). It is trained
under `cache.lock`, so a second process asking for it meanwhile waits and then loads it. A corrupt
file, a checkpoint of another recipe or one whose weights do not fit the model is reported with a
warning and retrained, never silently used. `get_teacher` returns `(teacher, info)`: the model and
its measured test accuracy, errors, size and training time.

Architectures (`arch`): MNIST and Fashion-MNIST have "cnn" (TeacherCNN), "mlp" (Hinton et al.'s
1200-1200 dropout net, notebook 07) and "ensemble" (the mean of both: the course's teacher, bigger
than every student in parameters, bytes and multiply-adds); CIFAR-10 has "resnet" (ResNet-20).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kd_lessons import cache, config
from kd_lessons.cache import CorruptFileError
from kd_lessons.data import DATASETS, check_name, load_tensors, random_crop_flip, random_shift, stratified_subset
from kd_lessons.models import CifarResNet, Ensemble, MLPTeacher, TeacherCNN, count_params
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.train import TrainOptions, evaluate, fit, predict_logits

__all__ = ["ARCHS", "TeacherRecipe", "CNNTeacherRecipe", "MLPTeacherRecipe", "ResNetTeacherRecipe",
           "EnsembleRecipe", "recipe", "get_teacher", "teacher_info", "checkpoint_path", "build_teacher", "recipe_key",
           "cached_logits"]

_AUGMENT = {"none": None, "shift": random_shift, "crop_flip": random_crop_flip}
ARCHS = {name: info.teacher_archs for name, info in DATASETS.items()}  # a view of the records' teacher_archs


def _arch(dataset: str, arch: str | None) -> tuple[str, str]:
    dataset = check_name(dataset)
    archs = DATASETS[dataset].teacher_archs
    arch = archs[0] if arch is None else arch
    if arch not in archs:
        raise ValueError(f"arch={arch!r} is not a {dataset} teacher; use one of {list(archs)}")
    return dataset, arch


@dataclass(frozen=True)
class TeacherRecipe(Recipe):
    """What every single teacher is trained with; a subclass per architecture adds its shape. Notebook 04."""

    dataset: str = "mnist"
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    seed: int = 0
    num_epochs: int = 1
    lr: float = 4e-3
    batch_size: int = 128
    augment: str = "none"
    n_train: int | None = None  # a class-balanced subset; None: every training image

    def _check(self) -> None:
        self._one_of("dataset", tuple(DATASETS))
        self._one_of("optimizer", ("adamw", "sgd"))
        self._one_of("augment", tuple(_AUGMENT))
        self._positive("num_epochs", "lr", "batch_size", "n_train")
        self._between("weight_decay", 0.0, 1.0)


@dataclass(frozen=True)
class CNNTeacherRecipe(TeacherRecipe):
    """TeacherCNN: two conv blocks, dropout."""

    arch: str = "TeacherCNN"
    width: int = pick(24, 16)
    dropout: float = 0.2
    num_epochs: int = pick(5, 1)
    augment: str = pick("shift", "none")


@dataclass(frozen=True)
class MLPTeacherRecipe(TeacherRecipe):
    """Hinton et al. 2015: 1200-1200, dropout, +-2 px jitter."""

    arch: str = "MLPTeacher"
    hidden: list[int] = field(default_factory=lambda: [1200, 1200])
    dropout: float = 0.5
    input_dropout: float = 0.2
    num_epochs: int = pick(30, 2)
    lr: float = 2e-3
    batch_size: int = 256
    augment: str = "shift"
    n_train: int | None = pick(None, 10000)


@dataclass(frozen=True)
class ResNetTeacherRecipe(TeacherRecipe):
    """ResNet-20 for CIFAR-10, SGD."""

    dataset: str = "cifar10"
    optimizer: str = "sgd"
    arch: str = "CifarResNet"
    depth: int = 20
    width: int = 16
    num_epochs: int = pick(30, 2)
    lr: float = 0.1
    batch_size: int = 256
    augment: str = "crop_flip"
    n_train: int | None = pick(None, 5000)


@dataclass(frozen=True)
class EnsembleRecipe(Recipe):
    """The mean of its members' outputs; its recipe lists theirs."""

    dataset: str = "mnist"
    arch: str = "ensemble"
    members: list[TeacherRecipe] = field(default_factory=list)


_RECIPES = {"cnn": CNNTeacherRecipe, "mlp": MLPTeacherRecipe, "resnet": ResNetTeacherRecipe}


def recipe(dataset: str, arch: str | None = None, **overrides) -> TeacherRecipe | EnsembleRecipe:
    """The teacher recipe (architecture + training) in the current mode; arch=None: the course's teacher.

    Introduced in notebook 04_distill_mnist. An ensemble's recipe lists its members' recipes; overrides replace
    fields of a single model's recipe.
    """
    dataset, arch = _arch(dataset, arch)
    if arch == "ensemble":
        return EnsembleRecipe(dataset=dataset, members=[recipe(dataset, "cnn"), recipe(dataset, "mlp")], **overrides)
    return _RECIPES[arch](dataset=dataset, **check_recipe(_RECIPES[arch], overrides))


def build_teacher(rec: TeacherRecipe) -> nn.Module:
    """An untrained model as a (single-model) recipe describes it."""
    info = DATASETS[check_name(rec.dataset)]
    channels, classes = info.shape[0], info.num_classes
    if rec.arch == "TeacherCNN":
        return TeacherCNN(in_channels=channels, num_classes=classes, width=rec.width, dropout=rec.dropout)
    if rec.arch == "MLPTeacher":
        return MLPTeacher(hidden=rec.hidden, in_features=info.in_features, num_classes=classes, dropout=rec.dropout,
                          input_dropout=rec.input_dropout)
    if rec.arch == "CifarResNet":
        return CifarResNet(depth=rec.depth, width=rec.width, num_classes=classes, in_channels=channels)
    raise ValueError(f"recipe arch={rec.arch!r} is not a single model; use 'TeacherCNN', 'MLPTeacher' or "
                     f"'CifarResNet' (ensembles come from get_teacher(dataset, arch='ensemble'))")


def recipe_key(rec: TeacherRecipe) -> str:
    """The short hash that names a recipe's checkpoint (and the sweeps made with its teacher): rec.key."""
    return cache.key(rec)  # a recipe hashes as its dict (cache.key), so a plain dict of the same content matches


def checkpoint_path(dataset: str, rec: TeacherRecipe | None = None) -> Path:
    """Where the teacher for `dataset` (and this single-model recipe) is cached."""
    rec = rec if rec is not None else recipe(dataset, "cnn")
    return cache.path("teachers", f"{dataset}-{rec.arch}-{config.mode()}-{recipe_key(rec)}.pt")


def _meta(rec: TeacherRecipe) -> dict:
    return {"recipe_hash": recipe_key(rec), "dataset": rec.dataset}


def _load(path: Path, rec: dict) -> tuple[nn.Module, dict]:
    """The cached teacher and its info; raises FileNotFoundError or one of cache.UNUSABLE when it cannot be used."""
    return cache.load_checkpoint(path, _meta(rec), lambda info: build_teacher(rec))


def _train(rec: TeacherRecipe, device, options: TrainOptions) -> tuple[nn.Module, dict]:
    """Train a teacher from its recipe and measure it on the test set."""
    x, y = load_tensors(rec.dataset, train=True)  # raises DataUnavailableError when missing
    x_test, y_test = load_tensors(rec.dataset, train=False)
    if rec.n_train:
        x, y = stratified_subset(x, y, rec.n_train, seed=rec.seed)
    torch.manual_seed(rec.seed)
    teacher = build_teacher(rec)
    start, cpu_start = time.perf_counter(), time.process_time()
    options = TrainOptions(batch_size=rec.batch_size, augment=_AUGMENT[rec.augment], seed=rec.seed, device=device,
                           optimizer=rec.optimizer, weight_decay=rec.weight_decay, progress=options.progress,
                           on_step=options.on_step, precision=options.precision)
    history = fit(teacher, x, y, num_epochs=rec.num_epochs, lr=rec.lr, options=options)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    result = evaluate(teacher, x_test, y_test, device=device)
    info = {"dataset": rec.dataset, "test_accuracy": result["accuracy"], "test_errors": result["errors"],
            "n_test": result["n"], "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1), "n_train": len(x),
            "params": count_params(teacher), "device": str(device), "threads": torch.get_num_threads(),
            "precision": str(config.amp_dtype(device, options.precision) or torch.float32).replace("torch.", ""),
            "train_loss": history["train_loss"], "recipe": rec.asdict()}
    return teacher, info


def get_teacher(dataset: str, arch: str | None = None, device=None, retrain: bool = False,
                recipe_override: dict | None = None, options: TrainOptions | None = None) -> tuple[nn.Module, dict]:
    """(teacher in eval mode, info), from the verified cache or trained now. Notebook 04_distill_mnist.

    arch=None is the course's teacher (MNIST, Fashion-MNIST: the ensemble of "cnn" and "mlp").
    `info` holds the measured test accuracy/errors, parameters, training seconds, device and the
    recipe. `recipe_override` replaces keys of a single model's recipe (tests and the app's starter
    teacher use small ones); `options` (progress bar, on_step hook) apply if it trains.
    """
    dataset, arch = _arch(dataset, arch)
    device = config.resolve_device(device)
    if arch == "ensemble":
        if recipe_override:
            raise ValueError("recipe_override applies to one model; pass arch='cnn' or arch='mlp' with it")
        return _ensemble(dataset, device, retrain, options)
    rec = recipe(dataset, arch, **(recipe_override or {}))
    path = checkpoint_path(dataset, rec)

    def save(built, file):
        teacher, info = built
        cache.save_checkpoint(teacher, info, file, {**_meta(rec), "test_accuracy": info["test_accuracy"],
                                                    "test_errors": info["test_errors"],
                                                    "train_seconds": info["train_seconds"]})

    teacher, info = cache.build_once(path, _meta(rec), lambda: _train(rec, device, options or TrainOptions()),
                                     f"the {DATASETS[dataset].label} {arch} teacher", save=save,
                                     load=lambda file: _load(file, rec), refresh=retrain)
    return teacher.to(device).eval(), info


def _ensemble(dataset: str, device, retrain: bool, options) -> tuple[nn.Module, dict]:
    """Both members from the cache (or trained now), averaged; measured on the test set here (a few s)."""
    parts = [get_teacher(dataset, arch, device, retrain, options=options) for arch in ("cnn", "mlp")]
    teacher = Ensemble([m for m, _ in parts]).eval()
    x_test, y_test = load_tensors(dataset, train=False)
    result = evaluate(teacher, x_test, y_test, device=device)
    info = {"dataset": dataset, "test_accuracy": result["accuracy"], "test_errors": result["errors"],
            "n_test": result["n"], "params": count_params(teacher), "device": str(device),
            "train_seconds": round(sum(i["train_seconds"] for _, i in parts), 1),
            "members": [i for _, i in parts], "recipe": recipe(dataset, "ensemble").asdict()}
    return teacher, info


def teacher_info(dataset: str, arch: str | None = None, recipe_override: dict | None = None) -> dict | None:
    """The cached teacher's recorded info (None if it, or an ensemble member, is not trained yet)."""
    dataset, arch = _arch(dataset, arch)
    if arch == "ensemble":
        members = [teacher_info(dataset, a) for a in ("cnn", "mlp")]
        return None if None in members else {"members": members, "recipe": recipe(dataset, "ensemble").asdict()}
    rec = recipe(dataset, arch, **(recipe_override or {}))
    path = checkpoint_path(rec.dataset, rec)
    try:
        return _load(path, rec)[1]
    except FileNotFoundError:
        return None
    except cache.UNUSABLE as exc:  # reported, left for get_teacher to rebuild
        warnings.warn(f"teacher checkpoint {path} is unusable and will be retrained: {type(exc).__name__}: {exc}",
                      cache.CacheWarning, stacklevel=2)
        return None


def cached_logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The teacher's logits for x (on the CPU), computed once and cached on disk. Notebook 04_distill_mnist.

    The cache file is named by the teacher's weights and by x's content, so a retrained teacher or
    other inputs never reuse stale logits; a corrupt file is recomputed.
    """
    name = f"{cache.state_digest(teacher)}_{cache.tensor_digest(x)}.pt"
    path = cache.path("logits", name)
    meta = {"kind": "kd_lessons.teacher_logits", "rows": len(x)}

    def load(file):
        logits = cache.load_verified(file, meta)
        if not (isinstance(logits, torch.Tensor) and logits.dim() == 2 and len(logits) == len(x)):
            raise CorruptFileError(f"{file} holds {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}, "
                                   f"not [{len(x)}, classes] logits")
        return logits

    return cache.build_once(path, meta, lambda: predict_logits(teacher, x), "cached teacher logits", load=load)
