"""Train students over methods and seeds with one budget: the one loop behind every comparison.

Introduced in notebook 04_distill_mnist and used by 05 (feature methods), 06 (CIFAR-10), 07 (the
Hinton et al. reproduction) and the T x alpha grid. Every student of a comparison gets the same
data, epochs, lr, batch size and optimiser, so the only difference is its objective. A fixed
teacher's logits are computed once and cached on disk (`teachers.cached_logits`).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kd_lessons.config import get_device, seed_everything
from kd_lessons.data import load_tensors, stratified_subset
from kd_lessons.objectives import CrossEntropy, HintonKD, Objective
from kd_lessons.teachers import cached_logits
from kd_lessons.train import TrainOptions, distill, evaluate

__all__ = ["StudentRuns", "Method", "load_split", "train_students", "scratch_vs_distilled", "summarize", "error_ratio",
           "paired_differences"]


@dataclass
class StudentRuns:
    """One row per (method, seed) in `table`; the trained students and histories keyed the same way."""

    table: pd.DataFrame
    students: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A method trained on other inputs (or targets) than the study's: e.g. scratch on the labelled images only.

    `teacher` (optional) replaces the study's teacher for this method: a model, or logits on `x`.
    """

    objective: object
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    teacher: object = None


def load_split(dataset: str, n_train: int | None = None, seed: int = 0) -> dict:
    """Train (optionally a class-balanced subset) and test tensors in one dict. Notebook 04_distill_mnist."""
    x, y = load_tensors(dataset, train=True)
    if n_train is not None:
        x, y = stratified_subset(x, y, n_train, seed=seed)
    x_test, y_test = load_tensors(dataset, train=False)
    return {"dataset": dataset, "x": x, "y": y, "x_test": x_test, "y_test": y_test}


def _objective(spec, student: nn.Module) -> Objective:
    """A method is an Objective, or a function student -> Objective (for objectives sized from the student)."""
    objective = spec if isinstance(spec, Objective) else spec(student) if callable(spec) else spec
    if not isinstance(objective, Objective):
        raise ValueError(f"a method must be an Objective (e.g. HintonKD(T=4, alpha=0.9)) or a function student -> "
                         f"Objective, got {spec!r}")
    return objective


def train_students(make_student: Callable[[], nn.Module], data: Mapping, methods: Mapping[str, object],
                   seeds: Sequence[int] = (0,), teacher=None, num_epochs: int = 3, lr: float = 3e-3,
                   batch_size: int = 128, augment=None, val: bool = False, device=None,
                   options: TrainOptions | None = None, steps: int | None = None) -> StudentRuns:
    """Train make_student() once per (method, seed) on data["x"], test on data["x_test"]. Notebook 04_distill_mnist.

    `methods` maps a name to an Objective (CrossEntropy() is the from-scratch baseline), a function
    student -> Objective, or a Method(objective, x, y, teacher) that trains on other inputs or targets. `teacher` is a
    model or its logits on data["x"]; a model's logits are cached once per input set when no
    augmentation or feature objective needs it live. steps=N gives every method exactly N optimizer
    steps (a fair budget when methods see different amounts of data); otherwise num_epochs each.
    val=True records test accuracy per epoch in the histories. Weight decay defaults to 0.
    """
    if not seeds or not methods:
        raise ValueError(f"seeds={list(seeds)} and methods={list(methods)}: pass at least one of each, "
                         f"e.g. seeds=[0, 1, 2]")
    device = torch.device(device) if device is not None else get_device()
    options = options or TrainOptions(progress=False)
    rows, runs = [], StudentRuns(pd.DataFrame())
    plan = [(name, seed) for seed in seeds for name in methods]
    inner = options if len(plan) == 1 else replace(options, progress=False)  # one bar for many runs
    for name, seed in tqdm(plan, desc="students", disable=not options.progress or len(plan) < 2):
        spec = methods[name]
        x, y = (spec.x, spec.y) if isinstance(spec, Method) and spec.x is not None else (data["x"], data["y"])
        seed_everything(seed)
        student = make_student()
        objective = _objective(spec.objective if isinstance(spec, Method) else spec, student)
        own = spec.teacher if isinstance(spec, Method) and spec.teacher is not None else teacher
        cacheable = objective.uses_teacher and not objective.uses_features and augment is None
        source = cached_logits(own, x) if cacheable and isinstance(own, nn.Module) else own
        if isinstance(source, torch.Tensor) and len(source) != len(x):
            raise ValueError(f"method {name!r} trains on {len(x)} images but the teacher logits have {len(source)} "
                             "rows; pass the teacher model so its logits are computed on each method's inputs")
        epochs, run_options = num_epochs, inner
        if steps is not None:
            epochs = max(1, math.ceil(steps / math.ceil(len(x) / batch_size)))
            run_options = replace(inner, max_steps=steps)
        start = time.perf_counter()
        history = distill(student, x, y, source if objective.uses_teacher else None, objective,
                          num_epochs=epochs, lr=lr, batch_size=batch_size, augment=augment,
                          val=(data["x_test"], data["y_test"]) if val else None, seed=seed, device=device,
                          options=run_options)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        result = evaluate(student, data["x_test"], data["y_test"], device=device)
        rows.append({"method": name, "seed": seed, "accuracy": result["accuracy"], "errors": result["errors"],
                     "seconds": seconds, "device": str(device)})
        runs.students[(name, seed)] = student
        runs.histories[(name, seed)] = history
    runs.table = pd.DataFrame(rows)
    return runs


def scratch_vs_distilled(make_student: Callable[[], nn.Module], data: Mapping, teacher, seeds: Sequence[int] = (0,),
                         T: float = 4.0, alpha: float = 0.9, **kwargs) -> StudentRuns:
    """The same student from scratch (cross-entropy) and distilled (HintonKD), per seed. Notebook 04_distill_mnist."""
    methods = {"scratch": CrossEntropy(), "distilled": HintonKD(T, alpha)}
    return train_students(make_student, data, methods, seeds, teacher=teacher, **kwargs)


def summarize(table: pd.DataFrame, by: str = "method") -> pd.DataFrame:
    """Mean and sample std of errors and accuracy per method (std is NaN for one seed). Notebook 04_distill_mnist."""
    missing = {by, "errors", "accuracy"} - set(table.columns)
    if missing:
        raise ValueError(f"the table lacks columns {sorted(missing)}; pass train_students(...).table")
    g = table.groupby(by, sort=False)
    return pd.DataFrame({"seeds": g.size(), "errors_mean": g["errors"].mean(), "errors_std": g["errors"].std(),
                         "accuracy_mean": g["accuracy"].mean(), "accuracy_std": g["accuracy"].std()})


def error_ratio(table: pd.DataFrame, method: str = "distilled", baseline: str = "scratch") -> float:
    """Mean errors of `method` / mean errors of `baseline`: below 1 means it helped. Notebook 04_distill_mnist."""
    means = table.groupby("method")["errors"].mean()
    if not {method, baseline} <= set(means.index) or means[baseline] == 0:
        raise ValueError(f"need {baseline!r} (with errors > 0) and {method!r} rows, got {means.to_dict()}")
    return float(means[method] / means[baseline])


def paired_differences(table: pd.DataFrame, method: str, baseline: str = "scratch", value: str = "errors") -> dict:
    """Per-seed `method - baseline` differences with their mean and std: what 'A beats B' rests on. Notebook 04.

    Returns {"per_seed": {seed: diff}, "mean", "std", "n", "all_below_zero", "all_above_zero"}.
    """
    wide = table.pivot_table(index="seed", columns="method", values=value, aggfunc="first")
    if method not in wide or baseline not in wide:
        raise ValueError(f"need {method!r} and {baseline!r} rows, got methods {list(wide.columns)}")
    diffs = (wide[method] - wide[baseline]).dropna()
    if diffs.empty:
        raise ValueError(f"{method!r} and {baseline!r} share no seed; train both with the same seeds")
    values = [float(d) for d in diffs]
    return {"per_seed": {int(s): float(d) for s, d in diffs.items()}, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else float("nan"), "n": len(values),
            "all_below_zero": all(v < 0 for v in values), "all_above_zero": all(v > 0 for v in values)}
