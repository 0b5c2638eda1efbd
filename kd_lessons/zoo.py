"""Teachers trained once and cached as verified checkpoints, so lessons and the app never wait twice.

Introduced in notebook 04_distill_mnist. A checkpoint lives in
`cache_dir()/teachers/<dataset>-<quick|full>-<recipe hash>.pt` with a sha256 sidecar
(`kd_lessons.storage`). A corrupt file, a checkpoint of another recipe or one whose weights do
not fit the model is reported with `warnings.warn` and retrained, never silently used.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from kd_lessons import config
from kd_lessons.data import load_tensors, random_crop_flip, random_shift, stratified_subset
from kd_lessons.models import CifarResNet, TeacherCNN, count_params
from kd_lessons.storage import CorruptFileError, load_verified, save_verified
from kd_lessons.train import evaluate, fit

__all__ = ["recipe", "get_teacher", "teacher_info", "checkpoint_path", "build_teacher"]

_AUGMENT = {"none": None, "shift": random_shift, "crop_flip": random_crop_flip}


def recipe(dataset: str) -> dict:
    """The teacher recipe (architecture + training) for a dataset in the current mode. Notebook 04_distill_mnist."""
    if dataset in ("mnist", "fashion_mnist"):
        return {"dataset": dataset, "arch": "TeacherCNN", "width": config.pick(24, 16), "dropout": 0.2,
                "num_epochs": config.pick(5, 1), "lr": 4e-3, "batch_size": 128, "optimizer": "adamw",
                "weight_decay": 5e-4, "augment": config.pick("shift", "none"), "n_train": None, "seed": 0}
    if dataset == "cifar10":
        return {"dataset": dataset, "arch": "CifarResNet", "depth": 20, "width": 16,
                "num_epochs": config.pick(30, 2), "lr": 0.1, "batch_size": 256, "optimizer": "sgd",
                "weight_decay": 5e-4, "augment": "crop_flip", "n_train": config.pick(None, 5000), "seed": 0}
    raise ValueError(f"dataset={dataset!r} has no teacher recipe; use 'mnist', 'fashion_mnist' or 'cifar10'")


def build_teacher(rec: dict) -> nn.Module:
    """An untrained model as a recipe describes it."""
    channels = 3 if rec["dataset"] == "cifar10" else 1
    if rec["arch"] == "TeacherCNN":
        return TeacherCNN(in_channels=channels, width=rec["width"], dropout=rec.get("dropout", 0.2))
    if rec["arch"] == "CifarResNet":
        return CifarResNet(depth=rec["depth"], width=rec["width"], in_channels=channels)
    raise ValueError(f"recipe arch={rec['arch']!r} is not known; use 'TeacherCNN' or 'CifarResNet'")


def _recipe_hash(rec: dict) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12]


def checkpoint_path(dataset: str, rec: dict | None = None) -> Path:
    """Where the teacher for `dataset` (and this recipe) is cached."""
    rec = rec if rec is not None else recipe(dataset)
    mode = "quick" if config.is_quick() else "full"
    return config.cache_dir() / "teachers" / f"{dataset}-{mode}-{_recipe_hash(rec)}.pt"


def _load(path: Path, rec: dict) -> tuple[nn.Module, dict] | None:
    """The cached teacher and its info, or None (with a warning saying why) when unusable."""
    if not path.exists():
        return None
    try:
        blob = load_verified(path, {"recipe_hash": _recipe_hash(rec), "dataset": rec["dataset"]})
        teacher = build_teacher(rec)
        teacher.load_state_dict(blob["state_dict"])
        return teacher, dict(blob["info"])
    except (CorruptFileError, FileNotFoundError, RuntimeError, KeyError, TypeError) as exc:
        warnings.warn(f"teacher checkpoint {path} is unusable and will be retrained: "
                      f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)
        return None


def _train(rec: dict, device, progress: bool) -> tuple[nn.Module, dict]:
    """Train a teacher from its recipe and measure it on the test set."""
    x, y = load_tensors(rec["dataset"], train=True)  # raises DataUnavailableError when missing
    x_test, y_test = load_tensors(rec["dataset"], train=False)
    if rec.get("n_train"):
        x, y = stratified_subset(x, y, rec["n_train"], seed=rec["seed"])
    torch.manual_seed(rec["seed"])
    teacher = build_teacher(rec)
    start, cpu_start = time.perf_counter(), time.process_time()
    history = fit(teacher, x, y, num_epochs=rec["num_epochs"], lr=rec["lr"], batch_size=rec["batch_size"],
                  augment=_AUGMENT[rec["augment"]], device=device, seed=rec["seed"], progress=progress,
                  optimizer=rec["optimizer"], weight_decay=rec["weight_decay"])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    result = evaluate(teacher, x_test, y_test, device=device)
    info = {"dataset": rec["dataset"], "test_accuracy": result["accuracy"], "test_errors": result["errors"],
            "n_test": result["n"], "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1), "n_train": len(x),
            "params": count_params(teacher), "device": str(device), "threads": torch.get_num_threads(),
            "precision": str(config.amp_dtype(device) or torch.float32).replace("torch.", ""),
            "train_loss": history["train_loss"], "recipe": rec}
    return teacher, info


def get_teacher(dataset: str, device=None, retrain: bool = False, progress: bool = True,
                recipe_override: dict | None = None) -> nn.Module:
    """A trained teacher in eval mode, from the verified cache or trained now. Notebook 04_distill_mnist.

    `recipe_override` replaces keys of `recipe(dataset)` (tests use a tiny recipe). The teacher's
    measured test accuracy/errors are in `teacher.info` and `teacher_info(dataset)`.
    """
    rec = {**recipe(dataset), **(recipe_override or {})}
    device = torch.device(device) if device is not None else config.get_device()
    path = checkpoint_path(dataset, rec)
    loaded = None if retrain else _load(path, rec)
    if loaded is None:
        teacher, info = _train(rec, device, progress)
        state = {k: v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()}
        save_verified({"state_dict": state, "info": info}, path,
                      {"recipe_hash": _recipe_hash(rec), "dataset": dataset, "test_accuracy": info["test_accuracy"],
                       "test_errors": info["test_errors"], "train_seconds": info["train_seconds"]})
    else:
        teacher, info = loaded
    teacher.info = info
    return teacher.to(device).eval()


def teacher_info(dataset: str, recipe_override: dict | None = None) -> dict | None:
    """The cached teacher's measured test accuracy, errors and training time (None if not trained yet)."""
    rec = {**recipe(dataset), **(recipe_override or {})}
    loaded = _load(checkpoint_path(dataset, rec), rec)
    return None if loaded is None else loaded[1]
