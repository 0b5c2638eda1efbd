"""Data-free distillation measured: students distilled on DeepInversion images, noise, and real images.

Introduced in notebook 12_data_free_kd. The teacher (the course's MNIST CNN, which has BatchNorm) is
the only source of data: `synthetic_set` runs DeepInversion (kd_lessons.methods.deep_inversion) once per
recipe and caches the images, verified, under a lock. `compare` then trains the same CNN student with
the same number of steps on each transfer set (`runs.students.train_students`); the teacher labels
every (augmented) batch live, so no set's own labels are used except where a method says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from kd_lessons import cache, config
from kd_lessons.cache import CorruptFileError
from kd_lessons.data import random_shift, stratified_subset
from kd_lessons.datasets import DATASETS
from kd_lessons.methods.deep_inversion import SynthesisOptions, gaussian_noise_like, synthesize
from kd_lessons.models import CNNStudent
from kd_lessons.objectives import UNLABELED, HintonKD
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs.students import Arm, StudentRuns, load_split, train_students
from kd_lessons.train import TrainOptions

__all__ = ["SyntheticSetsRecipe", "recipe", "make_student", "synthetic_set", "mix_and_shift", "transfer_sets",
           "compare", "curve_over_student_steps", "curve_over_steps", "grid_order", "SETS"]

SETS = ("synthetic (DeepInversion)", "Gaussian noise", "real, same number", "real, small unlabeled",
        "synthetic + small real")


@dataclass(frozen=True)
class SyntheticSetsRecipe(Recipe):
    """The lesson's budget in the current mode (mode: a field). Notebook 12_data_free_kd."""

    dataset: str = "mnist"
    n_images: int = pick(512, 64)
    seed: int = 0
    synthesis: SynthesisOptions = field(default_factory=lambda: SynthesisOptions(
        steps=config.pick(400, 8), lr=0.25, batch_size=config.pick(256, 64)))
    snapshots: list[int] = pick([200], [4])  # synthesis steps whose images are kept (curve_over_steps)
    student_width: int = 8
    student_steps: int = pick(2000, 30)
    batch_size: int = 128
    lr: float = 3e-3
    T: float = 4.0
    n_small_real: int = pick(128, 32)
    mode: str = field(default_factory=config.mode)

    def _check(self) -> None:
        # DeepInversion needs the BatchNorm statistics of the CNN teacher: the datasets that have one
        self._one_of("dataset", tuple(n for n, d in DATASETS.items() if "cnn" in d.teacher_archs))
        self._positive("n_images", "student_width", "student_steps", "batch_size", "lr", "T", "n_small_real")
        self._one_of("mode", ("quick", "full"))
        if not all(0 < n <= self.synthesis.steps for n in self.snapshots):
            self._fail("snapshots", f"each must be in [1, synthesis.steps={self.synthesis.steps}]")


def recipe(**overrides) -> SyntheticSetsRecipe:
    """The lesson's budget in the current mode; overrides replace fields. Notebook 12_data_free_kd."""
    return SyntheticSetsRecipe(**check_recipe(SyntheticSetsRecipe, overrides))


def make_student(rec: SyntheticSetsRecipe) -> CNNStudent:
    """The student: the small CNN of lesson 05 (BatchNorm too, so it must live with the images' statistics)."""
    return CNNStudent(width=rec.student_width)


def _key(teacher: torch.nn.Module, rec: SyntheticSetsRecipe) -> str:
    parts = {k: v for k, v in rec.asdict().items() if k in ("dataset", "n_images", "seed", "synthesis", "snapshots")}
    return f"deepinversion-{rec.dataset}-{rec.mode}-{cache.state_digest(teacher)}-{cache.key(parts)}.pt"


def synthetic_set(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, progress: bool = True) -> dict:
    """DeepInversion images for rec.n_images balanced wanted classes, cached and verified. Notebook 12.

    Returns synthesize()'s dict plus "seconds" (the time the synthesis took when it ran, even if loaded
    from the cache now) and "cached" (True when this call loaded it).
    """
    path = cache.path("tensors", _key(teacher, rec))
    meta = {"kind": "kd_lessons.deepinversion", "n_images": rec.n_images}

    built = []

    def load(file) -> dict:
        blob = cache.load_verified(file, meta)
        if not (isinstance(blob, dict) and torch.is_tensor(blob.get("x")) and len(blob["x"]) == rec.n_images):
            raise CorruptFileError(f"{file} does not hold {rec.n_images} images")
        return blob

    def build() -> dict:
        start = time.perf_counter()
        blob = synthesize(teacher, torch.arange(rec.n_images) % 10, options=rec.synthesis, seed=rec.seed,
                          progress=progress, snapshots=rec.snapshots)
        built.append(True)
        return {**blob, "seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}

    blob = cache.build_once(path, meta, build, f"{rec.n_images} cached DeepInversion images", load=load)
    return {**blob, "cached": not built}


def mix_and_shift(xb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment a transfer batch: mix each image with another one (random weight), then shift by +-2 pixels.

    Introduced in notebook 12_data_free_kd. The teacher labels every mixed image live, so each epoch
    brings new inputs between the classes, where its soft labels carry the most information.
    """
    perm = torch.randperm(len(xb), generator=generator).to(xb.device)
    lam = torch.rand(len(xb), 1, 1, 1, generator=generator).to(xb.device)
    return random_shift(lam * xb + (1 - lam) * xb[perm], generator=generator)


def transfer_sets(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, data: dict, progress: bool = True) -> dict:
    """name -> (x, y) for each transfer set (SETS); y is UNLABELED except for the labelled real set. Notebook 12."""
    n = rec.n_images
    synthetic = synthetic_set(teacher, rec, progress)
    real_x, real_y = stratified_subset(data["x"], data["y"], n, seed=rec.seed)
    small_x, _ = stratified_subset(data["x"], data["y"], rec.n_small_real, seed=rec.seed + 1)
    unlabeled = torch.full((n,), UNLABELED, dtype=torch.long)
    return {SETS[0]: (synthetic["x"], unlabeled), SETS[1]: (gaussian_noise_like(n, seed=rec.seed), unlabeled),
            SETS[2]: (real_x, real_y), SETS[3]: (small_x, torch.full((len(small_x),), UNLABELED, dtype=torch.long)),
            SETS[4]: (torch.cat([synthetic["x"], small_x]),
                      torch.full((n + len(small_x),), UNLABELED, dtype=torch.long))}


def _train(teacher, rec: SyntheticSetsRecipe, data: dict, sets: dict, seeds, augment=mix_and_shift,
           alpha: float = 0.9) -> StudentRuns:
    """One student per (set, seed), all with rec.student_steps steps; HintonKD (labels only where y >= 0)."""
    arms = {name: Arm(HintonKD(rec.T, alpha), x, y) for name, (x, y) in sets.items()}
    return train_students(lambda: make_student(rec), data, arms, seeds, teacher=teacher, lr=rec.lr,
                          options=TrainOptions(batch_size=rec.batch_size, augment=augment, max_steps=rec.student_steps,
                                               progress=False))


def compare(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, seeds=(0, 1, 2), names=SETS[:4],
            augment=mix_and_shift) -> StudentRuns:
    """Students on each transfer set (default: the first four of SETS), per seed, same steps and augmentation.

    Introduced in notebook 12_data_free_kd. The labelled real set (the upper bound) adds the cross-entropy
    with its true labels (alpha = 0.9); the others learn from the teacher alone.
    """
    unknown = set(names) - set(SETS)
    if unknown:
        raise ValueError(f"unknown transfer sets {sorted(unknown)}; use some of {list(SETS)}")
    data = load_split(rec.dataset)
    sets = transfer_sets(teacher, rec, data)
    return _train(teacher, rec, data, {k: sets[k] for k in names}, seeds, augment)


def curve_over_student_steps(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, steps, seed: int = 0,
                             augment=mix_and_shift) -> pd.DataFrame:
    """Student test errors against the student's own training steps on the synthetic set. Notebook 12.

    The other lever: the same images, seen (mixed and shifted, labelled live by the teacher) for longer.
    """
    bad = [n for n in steps if isinstance(n, bool) or not isinstance(n, int) or n < 1]
    if bad or not steps:
        raise ValueError(f"student steps {list(steps)}: pass positive integers, e.g. [250, 500, 1000]")
    data = load_split(rec.dataset)
    synthetic = synthetic_set(teacher, rec)
    unlabeled = torch.full((rec.n_images,), UNLABELED, dtype=torch.long)
    rows = []
    for n in steps:
        table = _train(teacher, rec.replace(student_steps=n), data, {f"{n} steps": (synthetic["x"], unlabeled)},
                       [seed], augment).table
        rows += [{"student_steps": n, **row} for row in table.to_dict("records")]
    return pd.DataFrame(rows)


def curve_over_steps(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, seed: int = 0,
                     augment=mix_and_shift) -> pd.DataFrame:
    """Student test errors on DeepInversion's intermediate images (the cached snapshots). Notebook 12_data_free_kd.

    Step 0 (Gaussian noise) and the final images are the comparison's own runs (`compare`, same seed).
    """
    data = load_split(rec.dataset)
    synthetic = synthetic_set(teacher, rec)
    unlabeled = torch.full((rec.n_images,), UNLABELED, dtype=torch.long)
    rows = []
    for steps, x in sorted(synthetic["snapshots"].items()):
        table = _train(teacher, rec, data, {f"after {steps} steps": (x, unlabeled)}, [seed], augment).table
        rows += [{"synthesis_steps": steps, **row} for row in table.to_dict("records")]
    return pd.DataFrame(rows)



def grid_order(y: torch.Tensor, per_class: int = 6) -> torch.Tensor:
    """Indices that lay images out one class per column, `per_class` rows (for plots.image_grid, ncols=10).

    Introduced in notebook 12_data_free_kd.
    """
    classes = sorted(int(c) for c in torch.unique(y))
    columns = [(y == c).nonzero().flatten()[:per_class] for c in classes]
    if not classes or per_class < 1 or min(len(c) for c in columns) < per_class:
        raise ValueError(f"need at least per_class={per_class} images of every class; got counts "
                         f"{[len(c) for c in columns]}")
    return torch.stack(columns, dim=1).flatten()
