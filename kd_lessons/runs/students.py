"""Train students over methods and seeds with one budget: the one loop behind every comparison.

Introduced in notebook 04_distill_mnist and used by 05 (feature methods), 06 (CIFAR-10), 07 (the
Hinton et al. reproduction) and the T x alpha grid. Every student of a comparison gets the same
data, epochs, lr, batch size and optimiser, so the only difference is its objective. A fixed
teacher's logits are computed once and cached on disk (`teachers.cached_logits`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kd_lessons.config import resolve_device, seed_everything
from kd_lessons.data import load_tensors, stratified_subset
from kd_lessons.objectives import CrossEntropy, HintonKD, Objective
from kd_lessons.runs.seeds import paired_differences, summarize  # re-exported: the one summary of seeds
from kd_lessons.teachers import cached_logits
from kd_lessons.train import TrainOptions, distill, evaluate, teacher_precomputable

__all__ = ["StudentRuns", "Arm", "load_split", "train_students", "each_seed", "scratch_vs_distilled", "summarize",
           "error_ratio", "paired_differences"]


@dataclass
class StudentRuns:
    """One row per (method, seed) in `table`; the trained students and histories keyed the same way."""

    table: pd.DataFrame
    students: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison with its own x, y, teacher: e.g. scratch on the labelled images only. Notebook 04.

    `objective` is what the arm's student learns; `x`, `y` (optional) replace the study's training set and
    `teacher` (optional) the study's teacher for this arm: a model, or logits on `x`.
    """

    objective: object
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    teacher: object = None


def load_split(dataset: str, n_train: int | None = None, seed: int = 0) -> dict:
    """Train (optionally a class-balanced subset) and test tensors in one dict. Notebook 05_feature_distillation."""
    x, y = load_tensors(dataset, train=True)
    if n_train is not None:
        x, y = stratified_subset(x, y, n_train, seed=seed)
    x_test, y_test = load_tensors(dataset, train=False)
    return {"dataset": dataset, "x": x, "y": y, "x_test": x_test, "y_test": y_test}


def _objective(spec, student: nn.Module) -> Objective:
    """An arm is an Objective, or a function student -> Objective (for objectives sized from the student)."""
    objective = spec if isinstance(spec, Objective) else spec(student) if callable(spec) else spec
    if not isinstance(objective, Objective):
        raise ValueError(f"a method must be an Objective (e.g. HintonKD(T=4, alpha=0.9)) or a function student -> "
                         f"Objective, got {spec!r}")
    return objective


def train_students(make_student: Callable[[], nn.Module], data: Mapping, arms: Mapping[str, object],
                   seeds: Sequence[int] = (0,), teacher=None, num_epochs: int = 3, lr: float = 3e-3,
                   options: TrainOptions | None = None) -> StudentRuns:
    """Train make_student() once per (arm, seed) on data["x"], test on data["x_test"]. Notebook 04_distill_mnist.

    `arms` maps a name to an Objective (CrossEntropy() is the from-scratch baseline), a function
    student -> Objective, or an Arm(objective, x, y, teacher) that trains on other inputs or targets. `teacher` is a
    model or its logits on data["x"]; a model's logits are cached once per input set when
    `train.teacher_precomputable` says so. options=TrainOptions(batch_size=..., augment=..., device=...) is shared
    by every arm (weight decay defaults to 0, progress to off); options.max_steps=N gives every arm exactly N
    optimizer steps (a fair budget when arms see different amounts of data), otherwise num_epochs each.
    options.val=True records test accuracy per epoch in the histories.
    """
    if not seeds or not arms:
        raise ValueError(f"seeds={list(seeds)} and arms={list(arms)}: pass at least one of each, "
                         f"e.g. seeds=[0, 1, 2]")
    options = options or TrainOptions(progress=False)
    device = resolve_device(options.device)
    val = (data["x_test"], data["y_test"]) if options.val is True else options.val or None
    rows, runs = [], StudentRuns(pd.DataFrame())
    plan = [(name, seed) for seed in seeds for name in arms]
    inner = replace(options, device=device, val=val, progress=options.progress and len(plan) == 1)  # one bar
    for name, seed in tqdm(plan, desc="students", disable=not options.progress or len(plan) < 2):
        spec = arms[name]
        x, y = (spec.x, spec.y) if isinstance(spec, Arm) and spec.x is not None else (data["x"], data["y"])
        seed_everything(seed)
        student = make_student()
        objective = _objective(spec.objective if isinstance(spec, Arm) else spec, student)
        own = spec.teacher if isinstance(spec, Arm) and spec.teacher is not None else teacher
        cacheable = teacher_precomputable(objective, options.augment)
        source = cached_logits(own, x) if cacheable and isinstance(own, nn.Module) else own
        if isinstance(source, torch.Tensor) and len(source) != len(x):
            raise ValueError(f"arm {name!r} trains on {len(x)} images but the teacher logits have {len(source)} "
                             "rows; pass the teacher model so its logits are computed on each arm's inputs")
        epochs = num_epochs
        if options.max_steps is not None:
            epochs = max(1, math.ceil(options.max_steps / math.ceil(len(x) / options.batch_size)))
        start = time.perf_counter()
        history = distill(student, x, y, source if objective.uses_teacher else None, objective,
                          num_epochs=epochs, lr=lr, options=replace(inner, seed=seed))
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


def each_seed(run: Callable[[int], StudentRuns], seeds: Sequence[int]) -> StudentRuns:
    """`run(seed)` once per seed, stacked: so that each seed draws its own data too. Notebook 04_distill_mnist.

    `run(seed)` builds that seed's data (labelled subset, transfer set, pool, control targets) and trains
    its students with `train_students(..., seeds=[seed])`; the tables are concatenated in seed order.
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds}: pass at least one seed, each once, e.g. [0, 1, 2]")
    out = StudentRuns(pd.DataFrame())
    tables = []
    for seed in seeds:
        runs = run(seed)
        if not isinstance(runs, StudentRuns) or set(runs.table.get("seed", [])) != {seed}:
            raise ValueError(f"run({seed}) must return the StudentRuns of train_students(..., seeds=[{seed}])")
        tables.append(runs.table)
        out.students.update(runs.students)
        out.histories.update(runs.histories)
    out.table = pd.concat(tables, ignore_index=True)
    return out


def scratch_vs_distilled(make_student: Callable[[], nn.Module], data: Mapping, teacher, seeds: Sequence[int] = (0,),
                         T: float = 4.0, alpha: float = 0.9, **kwargs) -> StudentRuns:
    """The same student from scratch (cross-entropy) and distilled (HintonKD), per seed. Notebook 06_cifar10_gpu."""
    arms = {"scratch": CrossEntropy(), "distilled": HintonKD(T, alpha)}
    return train_students(make_student, data, arms, seeds, teacher=teacher, **kwargs)


def error_ratio(table: pd.DataFrame, method: str = "distilled", baseline: str = "scratch") -> float:
    """Mean errors of `method` / mean errors of `baseline`: below 1 means it helped."""
    means = table.groupby("method")["errors"].mean()
    if not {method, baseline} <= set(means.index) or means[baseline] == 0:
        raise ValueError(f"need {baseline!r} (with errors > 0) and {method!r} rows, got {means.to_dict()}")
    return float(means[method] / means[baseline])
