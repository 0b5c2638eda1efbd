"""The methods tour: one teacher, one student, one budget, every method family, paired over seeds.

Introduced in notebook 11_methods_tour. The setting: a class-balanced subset of MNIST training images
(all labelled), the course's CNN teacher (it has feature maps, which relation and contrastive
methods need) and a 784-100-100-10 MLP student whose last hidden layer is its embedding. Every
method trains the same student for the same number of optimizer steps with the same seeds, so the
only difference is the objective. A seed draws the student's initialisation, the batch order, the
augmentation's shifts and (recipe.subset_per_seed) the training subset; the teacher is trained once.
`summary` turns the runs into a table in the style of the published method tables (mean +- std
accuracy, paired gains over scratch and Hinton KD with 95% t half-widths); `difference` is the paired
interval a sentence of the lesson rests on.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from kd_lessons import cache, config, stats
from kd_lessons.config import get_device
from kd_lessons.data import check_name, random_shift
from kd_lessons.methods import registry
from kd_lessons.models import MLPStudent
from kd_lessons.objectives import CrossEntropy, HintonKD
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs.students import StudentRuns, load_split, paired_differences, train_students
from kd_lessons.train import TrainOptions, evaluate

__all__ = ["TOUR_FAMILIES", "FAMILIES", "SCHEMES", "SHIFT_CONTROLS", "COSTLY", "run_schemes", "run_shift_controls",
           "TourRecipe", "recipe", "make_student", "methods", "run", "summary", "difference", "ledger_name", "load",
           "load_or_run"]

TOUR_FAMILIES = ("none", "logits", "relations", "contrastive")  # objectives on an MLP student's logits / embedding
# views of the method registry (kd_lessons.methods.registry), in its order: the app's list, notebook 11's tables
FAMILIES = {spec.name: spec.family for spec in registry.methods(families=TOUR_FAMILIES)}
SCHEMES = tuple(spec.name for spec in registry.methods("scheme"))
# the controls of function matching (same shifts; the second with the teacher live on every shifted batch)
SHIFT_CONTROLS = ("CE + shifts", "Hinton KD + shifts")
# what runs the teacher on every batch or trains an assistant first (tens of seconds a run on a CPU): a lesson may
# train these on fewer seeds (`costly_seeds`); their paired differences then use the seeds both arms have
COSTLY = (*(n for n, f in FAMILIES.items() if f in ("relations", "contrastive")), "teacher assistant",
          "function matching", "Hinton KD + shifts")


@dataclass(frozen=True)
class TourRecipe(Recipe):
    """The tour's budget in the current mode (mode: a field). Notebook 11_methods_tour."""

    dataset: str = "mnist"
    n_train: int = pick(10_000, 2_000)
    steps: int = pick(1500, 150)
    lr: float = 3e-3
    batch_size: int = 128
    weight_decay: float = 5e-4
    T: float = 4.0
    alpha: float = 0.9
    subset_per_seed: bool = True  # each seed draws its own class-balanced subset (False: seed 0's for every seed)
    mode: str = field(default_factory=config.mode)

    def _check(self) -> None:
        check_name(self.dataset)
        self._positive("n_train", "steps", "lr", "batch_size", "T")
        self._between("alpha", 0.0, 1.0)
        self._between("weight_decay", 0.0, 1.0)
        self._one_of("mode", ("quick", "full"))


def recipe(**overrides) -> TourRecipe:
    """The tour's budget in the current mode; overrides replace fields. Notebook 11_methods_tour."""
    return TourRecipe(**check_recipe(TourRecipe, overrides))


def make_student() -> MLPStudent:
    """The tour's student: 784-100-100-10; its last hidden layer is the embedding for RKD and CRD."""
    return MLPStudent(hidden=(100, 100))


def methods(teacher: torch.nn.Module, rec: TourRecipe) -> dict:
    """name -> objective of every registered method of TOUR_FAMILIES, its paper's weights with the recipe's T and
    alpha where the method takes them (CRD: a student -> objective function, fresh heads per run). Notebook 11."""
    return {spec.name: spec.build(teacher, rec) for spec in registry.methods(families=TOUR_FAMILIES)}


def _split(rec: TourRecipe, seed: int) -> dict:
    """The training subset of one seed (and the test set): resampled per seed unless the recipe fixes it."""
    return load_split(rec.dataset, n_train=rec.n_train, seed=seed if rec.subset_per_seed else 0)


def _seeds_of(name: str, seeds, costly_seeds) -> list:
    """The seeds `name` trains on: all of them, or only `costly_seeds` for a COSTLY method when those are given."""
    if costly_seeds is None or name not in COSTLY:
        return list(seeds)
    return [s for s in seeds if s in set(costly_seeds)]


def _options(rec: TourRecipe, augment=None) -> TrainOptions:
    return TrainOptions(progress=False, weight_decay=rec.weight_decay, batch_size=rec.batch_size,
                        max_steps=rec.steps, augment=augment)


def _train(rec: TourRecipe, teacher: torch.nn.Module, arms: dict, seeds, costly_seeds=None,
           augment=None) -> StudentRuns:
    """train_students seed by seed, each on its own subset; one StudentRuns for all of them."""
    out = StudentRuns(pd.DataFrame())
    tables = []
    for seed in seeds:
        chosen = {name: arm for name, arm in arms.items() if seed in _seeds_of(name, seeds, costly_seeds)}
        if not chosen:
            continue
        part = train_students(make_student, _split(rec, seed), chosen, [seed], teacher=teacher, lr=rec.lr,
                              options=_options(rec, augment))
        tables.append(part.table)
        out.students.update(part.students)
        out.histories.update(part.histories)
    out.table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return out


def run(rec: TourRecipe, teacher: torch.nn.Module, seeds=(0, 1, 2), names=None, costly_seeds=None) -> StudentRuns:
    """Train every method (or `names`) per seed with the recipe's budget. Notebook 11_methods_tour.

    costly_seeds: the seeds the COSTLY methods (a live teacher on every batch) train on; None: all `seeds`.
    """
    table = methods(teacher, rec)
    chosen = {name: table[name] for name in (names or table)}
    return _train(rec, teacher, chosen, seeds, costly_seeds)


def run_shift_controls(rec: TourRecipe, teacher: torch.nn.Module, seeds=(0, 1, 2), costly_seeds=None) -> pd.DataFrame:
    """Function matching's controls: the labels alone, and Hinton KD (the tour's T, alpha) with the teacher run on
    every shifted batch, both on the same random shifts. Rows like `run(...).table`. Notebook 11_methods_tour."""
    arms = {"CE + shifts": CrossEntropy(), "Hinton KD + shifts": HintonKD(rec.T, rec.alpha)}
    return _train(rec, teacher, arms, seeds, costly_seeds, augment=random_shift).table


def run_schemes(rec: TourRecipe, teacher: torch.nn.Module, seeds=(0, 1, 2), names=SCHEMES,
                costly_seeds=None) -> pd.DataFrame:
    """The training schemes with the tour's budget, as rows like `run(...).table`. Notebook 11_methods_tour.

    teacher assistant: teacher -> 400-400 MLP -> student; born-again: a student trained with labels,
    then the same architecture distilled from it; mutual learning: two students from scratch teaching
    each other (T = 1, alpha = 0.5); function matching: alpha = 1, T = 1, the teacher on every shifted batch.
    costly_seeds: as in `run` (teacher assistant and function matching are COSTLY).
    """
    rows = []
    for seed in seeds:
        data = _split(rec, seed)
        x, y = data["x"], data["y"]
        kw = {"num_epochs": math.ceil(rec.steps / math.ceil(len(x) / rec.batch_size)), "lr": rec.lr,
              "options": _options(rec)}
        for name in names:
            if seed not in _seeds_of(name, seeds, costly_seeds):
                continue
            start = time.perf_counter()
            student = registry.get(name, "scheme").build(teacher, rec)(make_student, x, y, seed, **kw)
            result = evaluate(student, data["x_test"], data["y_test"])
            rows.append({"method": name, "seed": seed, "accuracy": result["accuracy"], "errors": result["errors"],
                         "seconds": time.perf_counter() - start, "device": str(get_device())})
    return pd.DataFrame(rows, columns=["method", "seed", "accuracy", "errors", "seconds", "device"])


def difference(table: pd.DataFrame, method: str, baseline: str) -> tuple[stats.Interval, list]:
    """(method - baseline in accuracy points per shared seed, paired, with its 95% t-interval; those seeds).

    Introduced in notebook 11_methods_tour: every sentence that compares two arms rests on one of these.
    """
    d = paired_differences(table, method, baseline, "accuracy")
    seeds = sorted(d["per_seed"])
    return stats.mean_interval([100 * d["per_seed"][s] for s in seeds], f"{method} - {baseline}"), seeds


def ledger_name(method: str, baseline: str) -> str:
    """'KD + RKD', 'Hinton KD' -> 'kd_rkd_minus_hinton_kd_points': a results.record name. Notebook 11."""
    slug = [re.sub(r"[^a-z0-9]+", "_", n.lower()).strip("_") for n in (method, baseline)]
    return f"{slug[0]}_minus_{slug[1]}_points"


def _paired(table: pd.DataFrame, method: str, baseline: str) -> dict | None:
    """Paired accuracy differences, or None when the baseline is the method itself or shares no seed."""
    if method == baseline or baseline not in set(table["method"]):
        return None
    try:
        return paired_differences(table, method, baseline, "accuracy")
    except ValueError:  # no shared seed yet (the app fills the table one run at a time)
        return None


def _half(d: dict | None) -> float:
    """100 x the 95% t half-width of a paired difference (NaN without one: a single shared seed)."""
    if not d or d["n"] < 2:
        return float("nan")
    return 100 * d["interval"].half_width


def summary(runs: StudentRuns, extra_params: dict | None = None) -> pd.DataFrame:
    """Mean +- std test accuracy per method, paired gains over scratch and Hinton KD (mean, 95% t half-width over
    the shared seeds, how many), seconds per run. Notebook 11_methods_tour."""
    t = runs.table
    families = {spec.name: spec.family for spec in registry.methods() if spec.task == "images"}
    g = t.groupby("method", sort=False)
    rows = {}
    for name, part in g:
        gain = _paired(t, name, "scratch")
        vs_kd = _paired(t, name, "Hinton KD") if name != "scratch" else None
        family = families.get(name, "control" if name in SHIFT_CONTROLS else "?")
        rows[name] = {"family": family, "accuracy_mean": 100 * part["accuracy"].mean(),
                      "accuracy_std": 100 * part["accuracy"].std(), "seeds": len(part),
                      "gain_vs_scratch": 100 * gain["mean"] if gain else float("nan"),
                      "gain_vs_scratch_ci95": _half(gain), "paired_seeds": gain["n"] if gain else 0,
                      "gain_vs_hinton": 100 * vs_kd["mean"] if vs_kd else float("nan"),
                      "gain_vs_hinton_ci95": _half(vs_kd),
                      "seconds_per_run": part["seconds"].mean(),
                      "extra_params": (extra_params or {}).get(name, 0)}
    return pd.DataFrame.from_dict(rows, orient="index")


def _path(rec: TourRecipe, teacher: torch.nn.Module):
    return cache.path("sweeps", f"tour_{rec.mode}_{rec.key}_{cache.state_digest(teacher)}.pt")


def load(rec: TourRecipe, teacher: torch.nn.Module) -> pd.DataFrame:
    """The cached (method, seed) rows of this recipe and teacher (empty when none): the app's methods tab."""
    rows = cache.load_or_none(_path(rec, teacher), {"kind": "kd_lessons.tour"}, "methods-tour cache")
    return pd.DataFrame(rows if isinstance(rows, list) else [],
                        columns=["method", "seed", "accuracy", "errors", "seconds", "device"])


def load_or_run(rec: TourRecipe, teacher: torch.nn.Module, seeds=(0,), names=None) -> pd.DataFrame:
    """Every requested (method, seed) row, training (and caching) only the missing ones; the app's tab."""
    path = _path(rec, teacher)
    with cache.lock(path, "the methods-tour table"):
        table = load(rec, teacher)
        have = set(zip(table["method"], table["seed"]))
        for name in names or list(FAMILIES):
            for seed in seeds:
                if (name, seed) not in have:
                    new = run(rec, teacher, seeds=[seed], names=[name]).table
                    table = pd.concat([table, new], ignore_index=True)
                    rows = json.loads(table.to_json(orient="records"))  # plain Python types: loads with weights_only
                    cache.save_verified(rows, path, {"kind": "kd_lessons.tour"})
    return table
