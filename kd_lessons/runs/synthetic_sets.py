"""Data-free distillation measured: students distilled on DeepInversion images, noise, and real images.

Introduced in notebook 12_data_free_kd. The teacher (the course's MNIST CNN, which has BatchNorm) is
the only source of data: `synthetic_set` runs DeepInversion (kd_lessons.methods.deep_inversion) once per
recipe and seed and caches the images, verified, under a lock. `compare` then trains the same CNN student
with the same number of steps on each transfer set, one new synthetic set, noise set and real subset per
seed (`runs.students.train_students`). The teacher labels every (augmented) batch live and no set's own labels
are used, so the arms differ only in their images. Students are scored on a validation split held out from
the training images (`load_data`); the test set is for `score`, once, at the end.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from kd_lessons import cache, config
from kd_lessons.cache import CorruptFileError
from kd_lessons.data import load_tensors, random_shift, stratified_subset
from kd_lessons.datasets import DATASETS
from kd_lessons.methods.deep_inversion import SynthesisOptions, gaussian_noise_like, synthesize
from kd_lessons.models import CNNStudent
from kd_lessons.objectives import UNLABELED, HintonKD
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs.students import Arm, StudentRuns, train_students
from kd_lessons.train import TrainOptions, predict_logits

__all__ = ["SyntheticSetsRecipe", "recipe", "without_bn_term", "make_student", "load_data", "synthetic_set",
           "mix_and_shift", "transfer_sets", "compare", "train_on", "curve_over_student_steps", "curve_over_steps",
           "mistakes", "score", "grid_order", "SETS", "VALIDATION_SEED"]

SETS = ("synthetic (DeepInversion)", "Gaussian noise", "real, same number", "real, small unlabeled",
        "synthetic + small real")
VALIDATION_SEED = 12  # the validation split is drawn once, the same for every seed: it is the measuring stick
_SMALL_SEED = 1000    # the small real subset's seed is 1000 + seed, so it never shares a draw with another seed's set


@dataclass(frozen=True)
class SyntheticSetsRecipe(Recipe):
    """The lesson's budget in the current mode (mode: a field). Notebook 12_data_free_kd."""

    dataset: str = "mnist"
    n_images: int = pick(256, 64)
    seed: int = 0
    synthesis: SynthesisOptions = field(default_factory=lambda: SynthesisOptions(
        steps=config.pick(400, 24), lr=0.25, batch_size=config.pick(256, 64)))
    snapshots: list[int] = pick([200], [12])  # synthesis steps whose images are kept (curve_over_steps)
    student_width: int = 8
    student_steps: int = pick(1500, 60)
    batch_size: int = 128
    lr: float = 3e-3
    T: float = 4.0
    n_small_real: int = pick(128, 32)
    n_validation: int = 5000
    mode: str = field(default_factory=config.mode)

    def _check(self) -> None:
        # DeepInversion needs the BatchNorm statistics of the CNN teacher: the datasets that have one
        self._one_of("dataset", tuple(n for n, d in DATASETS.items() if "cnn" in d.teacher_archs))
        self._positive("n_images", "student_width", "student_steps", "batch_size", "lr", "T", "n_small_real",
                       "n_validation")
        self._one_of("mode", ("quick", "full"))
        if not all(0 < n <= self.synthesis.steps for n in self.snapshots):
            self._fail("snapshots", f"each must be in [1, synthesis.steps={self.synthesis.steps}]")


def recipe(**overrides) -> SyntheticSetsRecipe:
    """The lesson's budget in the current mode; overrides replace fields. Notebook 12_data_free_kd."""
    return SyntheticSetsRecipe(**check_recipe(SyntheticSetsRecipe, overrides))


def without_bn_term(rec: SyntheticSetsRecipe) -> SyntheticSetsRecipe:
    """The same recipe with DeepInversion's BN-statistics weight at 0: classic model inversion. Notebook 12."""
    return rec.replace(synthesis=dataclasses.replace(rec.synthesis, bn_weight=0.0))


def make_student(rec: SyntheticSetsRecipe) -> CNNStudent:
    """The student: the small CNN of lesson 05 (BatchNorm too, so it must live with the images' statistics)."""
    return CNNStudent(width=rec.student_width)


def load_data(rec: SyntheticSetsRecipe) -> dict:
    """Training images minus a validation split, which sits where train_students scores. Notebook 12_data_free_kd.

    Returns {"dataset", "x", "y": the training images the real transfer sets are drawn from, "x_test", "y_test":
    rec.n_validation training images drawn once (VALIDATION_SEED, the same for every seed), "split": "validation"}.
    No transfer set contains a validation image; the teacher did train on them.
    """
    x, y = load_tensors(rec.dataset, train=True)
    if rec.n_validation >= len(x):
        raise ValueError(f"n_validation={rec.n_validation} leaves no training images of {len(x)}; hold out fewer")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    held, rest = order[:rec.n_validation].sort().values, order[rec.n_validation:].sort().values
    return {"dataset": rec.dataset, "x": x[rest], "y": y[rest], "x_test": x[held], "y_test": y[held],
            "split": "validation"}


def _key(teacher: torch.nn.Module, rec: SyntheticSetsRecipe) -> str:
    parts = {k: v for k, v in rec.asdict().items() if k in ("dataset", "n_images", "seed", "synthesis", "snapshots")}
    return f"deepinversion-{rec.dataset}-{rec.mode}-{cache.state_digest(teacher)}-{cache.key(parts)}.pt"


def synthetic_set(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, progress: bool = True) -> dict:
    """DeepInversion images for rec.n_images balanced wanted classes (seed rec.seed), cached and verified. Notebook 12.

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


def _unlabeled(n: int) -> torch.Tensor:
    return torch.full((n,), UNLABELED, dtype=torch.long)


def transfer_sets(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, data: dict, progress: bool = True) -> dict:
    """name -> (x, y) for each transfer set (SETS), all drawn for seed rec.seed; y is UNLABELED. Notebook 12.

    The real sets come from data["x"] (load_data: the training images without the validation split); their own
    labels are not used, so every set is labelled by the teacher alone.
    """
    n = rec.n_images
    synthetic = synthetic_set(teacher, rec, progress)["x"]
    real_x, _ = stratified_subset(data["x"], data["y"], n, seed=rec.seed)
    small_x, _ = stratified_subset(data["x"], data["y"], rec.n_small_real, seed=_SMALL_SEED + rec.seed)
    xs = (synthetic, gaussian_noise_like(n, seed=rec.seed), real_x, small_x, torch.cat([synthetic, small_x]))
    return {name: (x, _unlabeled(len(x))) for name, x in zip(SETS, xs)}


def _train(teacher, rec: SyntheticSetsRecipe, data: dict, sets: dict, seed: int, augment=mix_and_shift) -> StudentRuns:
    """One student per set for one seed, rec.student_steps steps each, the teacher's soft labels only (alpha 1)."""
    arms = {name: Arm(HintonKD(rec.T, 1.0), x, y) for name, (x, y) in sets.items()}
    return train_students(lambda: make_student(rec), data, arms, [seed], teacher=teacher, lr=rec.lr,
                          options=TrainOptions(batch_size=rec.batch_size, augment=augment, max_steps=rec.student_steps,
                                               progress=False))


def _merge(parts: list[StudentRuns], extra: dict | None = None) -> StudentRuns:
    runs = StudentRuns(pd.concat([p.table for p in parts], ignore_index=True))
    for p in parts:
        runs.students.update(p.students)
        runs.histories.update(p.histories)
    for column, values in (extra or {}).items():
        runs.table.insert(1, column, values)
    return runs


def compare(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, seeds=(0, 1, 2), names=SETS[:4],
            augment=mix_and_shift, data: dict | None = None) -> StudentRuns:
    """Students on each transfer set (default: the first four of SETS), per seed, same steps and augmentation.

    Introduced in notebook 12_data_free_kd. Each seed draws its own sets (a new DeepInversion run, noise and real
    subsets) as well as the student's initialisation and batch order; the table's errors are on the validation
    split (`load_data`, or `data` if given); `score` puts the kept students on the test set.
    """
    unknown = set(names) - set(SETS)
    if unknown or not names or not seeds:
        raise ValueError(f"unknown transfer sets {sorted(unknown)} or none (names={list(names)}, seeds={list(seeds)}):"
                         f" pass at least one seed and some of {list(SETS)}")
    data = data or load_data(rec)
    parts = []
    for seed in seeds:
        sets = transfer_sets(teacher, rec.replace(seed=seed), data)
        parts.append(_train(teacher, rec, data, {k: sets[k] for k in names}, seed, augment))
    return _merge(parts)


def train_on(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, images: dict, seed: int = 0,
             data: dict | None = None) -> StudentRuns:
    """One student per named image set (name -> x), the comparison's budget and labels, scored on validation.

    Introduced in notebook 12_data_free_kd (the students on images without the BN term).
    """
    if not images or not all(torch.is_tensor(x) and x.dim() == 4 for x in images.values()):
        raise ValueError(f"images must map a name to a batch [N, C, H, W], got {list(images)}")
    return _train(teacher, rec, data or load_data(rec), {k: (x, _unlabeled(len(x))) for k, x in images.items()},
                  seed)


def curve_over_student_steps(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, steps, seed: int = 0,
                             data: dict | None = None) -> StudentRuns:
    """Students on seed's synthetic set for each number of student steps, scored on validation. Notebook 12.

    The other lever: the same images, seen (mixed and shifted, labelled live by the teacher) for longer.
    """
    bad = [n for n in steps if isinstance(n, bool) or not isinstance(n, int) or n < 1]
    if bad or not steps:
        raise ValueError(f"student steps {list(steps)}: pass positive integers, e.g. [250, 500, 1000]")
    data = data or load_data(rec)
    x = synthetic_set(teacher, rec.replace(seed=seed))["x"]
    parts = [_train(teacher, rec.replace(student_steps=n), data, {f"{n} steps": (x, _unlabeled(len(x)))}, seed)
             for n in steps]
    return _merge(parts, {"student_steps": list(steps)})


def curve_over_steps(teacher: torch.nn.Module, rec: SyntheticSetsRecipe, seed: int = 0,
                     data: dict | None = None) -> StudentRuns:
    """Students on DeepInversion's intermediate images (seed's cached snapshots), scored on validation. Notebook 12.

    Step 0 (Gaussian noise) and the final images are the comparison's own runs (`compare`, same seed).
    """
    data = data or load_data(rec)
    snaps = sorted(synthetic_set(teacher, rec.replace(seed=seed))["snapshots"].items())
    parts = [_train(teacher, rec, data, {f"after {n} steps": (x, _unlabeled(len(x)))}, seed) for n, x in snaps]
    return _merge(parts, {"synthesis_steps": [n for n, _ in snaps]})


def mistakes(runs: StudentRuns, x: torch.Tensor, y: torch.Tensor) -> dict:
    """(method, seed) -> one 0/1 value per image of (x, y), 1 where the kept student is wrong. Notebook 12.

    What `kd_lessons.stats.bootstrap_paired` resamples when a comparison has one seed.
    """
    if not runs.students:
        raise ValueError("these runs kept no students; pass the StudentRuns that compare/train_on returned")
    return {k: (predict_logits(s, x).argmax(1) != y.cpu()).float().tolist() for k, s in runs.students.items()}


def score(runs: StudentRuns, x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """Each kept student's errors and accuracy on (x, y), one row per (method, seed). Notebook 12_data_free_kd.

    The lesson calls it once, at the end, on the test set.
    """
    rows = [{"method": m, "seed": s, "errors": int(sum(v)), "accuracy": 1 - sum(v) / len(v)}
            for (m, s), v in mistakes(runs, x, y).items()]
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
