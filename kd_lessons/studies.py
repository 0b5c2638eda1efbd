"""The measured comparisons behind notebook 04_distill_mnist: scratch vs distilled over seeds, model tables.

Introduced in notebook 04_distill_mnist. Students trained from scratch and by distillation get the
same data, epochs, lr, batch size and optimiser, so the only difference is the loss. The teacher's
logits are computed once per (dataset, teacher) and cached on disk (`sweep.teacher_logits`).
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kd_lessons.config import get_device, seed_everything
from kd_lessons.data import load_tensors, stratified_subset
from kd_lessons.models import MLPStudent, count_params, measure_latency, size_on_disk
from kd_lessons.sweep import teacher_logits as cached_teacher_logits
from kd_lessons.train import distill, evaluate, fit

__all__ = ["load_split", "scratch_vs_distilled", "summarize", "error_ratio", "model_table"]


def load_split(dataset: str, n_train: int | None = None, seed: int = 0) -> dict:
    """Train (optionally a class-balanced subset) and test tensors in one dict. Notebook 04_distill_mnist."""
    x, y = load_tensors(dataset, train=True)
    if n_train is not None:
        x, y = stratified_subset(x, y, n_train, seed=seed)
    x_test, y_test = load_tensors(dataset, train=False)
    return {"dataset": dataset, "x": x, "y": y, "x_test": x_test, "y_test": y_test}


def scratch_vs_distilled(teacher: nn.Module, data: Mapping, hidden: Sequence[int] = (800, 800),
                         seeds: Sequence[int] = (0,), T: float = 4.0, alpha: float = 0.9, num_epochs: int = 3,
                         lr: float = 3e-3, batch_size: int = 128, weight_decay: float = 0.0,
                         optimizer: str = "adamw", augment: Callable | None = None,
                         make_student: Callable[[], nn.Module] | None = None, device=None,
                         progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Train the same student from scratch and by distillation, per seed, with one budget. Notebook 04_distill_mnist.

    `data` comes from load_split. The student is MLPStudent(hidden) unless `make_student()` builds
    another (notebook 06_cifar10_gpu). Without `augment` the teacher's logits are cached on disk;
    with it the teacher labels every augmented batch. Returns (runs, students): one row per
    (method, seed) with test accuracy, errors, seconds and device, and the students by (method, seed).
    """
    if not seeds:
        raise ValueError(f"seeds={list(seeds)}: pass at least one seed, e.g. seeds=[0, 1, 2]")
    x, y = data["x"], data["y"]
    device = torch.device(device) if device is not None else get_device()
    source = dict(teacher=teacher)
    if augment is None:
        tag = f"{data['dataset']}_train_n{len(x)}_{int(y[:64].sum())}"  # size + a label checksum name the rows
        source = dict(teacher_logits=cached_teacher_logits(teacher, x, tag))
    common = dict(num_epochs=num_epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                  optimizer=optimizer, augment=augment, device=device, progress=False)
    in_features = x[0].numel()
    rows, students = [], {}
    for seed, method in tqdm([(s, m) for s in seeds for m in ("scratch", "distilled")], desc="students",
                             disable=not progress):
        seed_everything(seed)
        student = make_student() if make_student is not None else MLPStudent(hidden=hidden, in_features=in_features)
        start = time.perf_counter()
        if method == "scratch":
            fit(student, x, y, seed=seed, **common)
        else:
            distill(student, x, y, T=T, alpha=alpha, seed=seed, **source, **common)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        result = evaluate(student, data["x_test"], data["y_test"], device=device)
        rows.append({"method": method, "seed": seed, "accuracy": result["accuracy"], "errors": result["errors"],
                     "seconds": seconds, "device": str(device)})
        students[(method, seed)] = student
    return pd.DataFrame(rows), students


def summarize(runs: pd.DataFrame, by: str = "method") -> pd.DataFrame:
    """Mean and sample std of errors and accuracy per method (std is NaN for one seed). Notebook 04_distill_mnist."""
    missing = {by, "errors", "accuracy"} - set(runs.columns)
    if missing:
        raise ValueError(f"runs lacks columns {sorted(missing)}; pass the table scratch_vs_distilled returns")
    g = runs.groupby(by, sort=False)
    return pd.DataFrame({"seeds": g.size(), "errors_mean": g["errors"].mean(), "errors_std": g["errors"].std(),
                         "accuracy_mean": g["accuracy"].mean(), "accuracy_std": g["accuracy"].std()})


def error_ratio(runs: pd.DataFrame) -> float:
    """Mean distilled errors / mean scratch errors: below 1 means distillation helped. Notebook 04_distill_mnist."""
    means = runs.groupby("method")["errors"].mean()
    if not {"scratch", "distilled"} <= set(means.index) or means["scratch"] == 0:
        raise ValueError(f"need 'scratch' (with errors > 0) and 'distilled' rows, got {means.to_dict()}")
    return float(means["distilled"] / means["scratch"])


def model_table(models: Mapping[str, nn.Module], data: Mapping, input_shape: Sequence[int],
                device: torch.device | str | None = None, repeats: int = 20, rounds: int = 5,
                batch_sizes: Sequence[int] = (1, 256), reference: str | None = None) -> pd.DataFrame:
    """Parameters, size on disk, test accuracy/errors and measured latency per model. Notebook 04_distill_mnist.

    Latency (ms per batch) is the fastest of `rounds` interleaved medians of `repeats` calls
    (models.measure_latency), so a burst of load from other programs hits every model alike.
    `speedup_b{n}` divides the `reference` model's latency (default: the first model) by each model's.
    """
    if not models:
        raise ValueError("models is empty; pass e.g. {'teacher': teacher, 'student': student}")
    if rounds < 1 or repeats < 1:
        raise ValueError(f"rounds={rounds}, repeats={repeats}: both must be >= 1")
    device = torch.device(device) if device is not None else get_device()
    reference = reference or next(iter(models))
    if reference not in models:
        raise ValueError(f"reference={reference!r} is not one of {list(models)}")
    rows = {}
    for name, model in models.items():
        result = evaluate(model, data["x_test"], data["y_test"], device=device)
        rows[name] = {"params": count_params(model), "size_MB": size_on_disk(model) / 1e6,
                      "test_accuracy": result["accuracy"], "test_errors": result["errors"]}
    for b in batch_sizes:
        times = {name: [] for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                times[name].append(measure_latency(model, input_shape, batch_size=b, device=device,
                                                   repeats=repeats, warmup=2))
        for name in models:
            rows[name][f"latency_ms_b{b}"] = min(times[name])
    table = pd.DataFrame.from_dict(rows, orient="index")
    for b in batch_sizes:
        table[f"speedup_b{b}"] = table.loc[reference, f"latency_ms_b{b}"] / table[f"latency_ms_b{b}"]
    return table
