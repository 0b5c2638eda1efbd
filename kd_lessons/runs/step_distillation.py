"""Diffusion step distillation on 2-D data: quality against sampling steps, distilled students against the teacher.

Introduced in lesson 17. Per seed (each redraws the training data, the teacher's init, the training noise, the
reference sample and the sampling noise) a v-prediction teacher is trained, progressive distillation halves its
steps teacher_steps -> ... -> final_steps, and every sampler is scored by sliced Wasserstein-2 (and MMD^2) against a
fresh true sample of the same size: the teacher at every step count k (with fewer steps than it was distilled from
it is the undistilled control), the distilled student of k steps, a consistency-distilled model (Song et al., 2023) at
consistency_steps, and a second true sample (the floor: what the
distance reads for a perfect sampler at this sample size). Within a seed every sampler starts from the same noise,
so "distilled - teacher" at each k is a paired difference over seeds (kd_lessons.stats.paired).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from kd_lessons import cache, config, stats
from kd_lessons.diffusion.consistency import consistency_distillation, consistency_sample
from kd_lessons.diffusion.data import DATASETS, sample_data
from kd_lessons.diffusion.distill import check_steps, progressive_distillation
from kd_lessons.diffusion.metrics import mmd2, rbf_bandwidth, sliced_wasserstein
from kd_lessons.diffusion.model import Denoiser, ddim_sample, train_denoiser
from kd_lessons.recipes import Recipe, check_recipe, pick

__all__ = ["StepDistillRecipe", "recipe", "run", "cached_run", "summary", "step_counts"]


@dataclass(frozen=True)
class StepDistillRecipe(Recipe):
    """The settings of lesson 17's run (full mode; quick mode shrinks every budget). Lesson 17."""

    dataset: str = "8gaussians"
    teacher_steps: int = pick(64, 8)        # the teacher's DDIM steps, the start of the halvings
    final_steps: int = 1
    hidden: int = 128
    depth: int = 3
    n_freq: int = 4                         # time-embedding frequencies pi * 2^k, k < n_freq
    n_train: int = pick(20000, 2000)        # training points per seed
    teacher_iters: int = pick(5000, 150)
    distill_iters: int = pick(1200, 40)     # per round
    consistency_iters: int = pick(2000, 40)  # consistency distillation; 0 leaves it out
    consistency_grid: int = pick(16, 8)     # its ODE grid t_n = n / N (Song et al. use N = 18 on CIFAR-10)
    consistency_ema: float = 0.95
    consistency_steps: tuple[int, ...] = (1, 2, 4)
    batch_size: int = pick(256, 128)
    lr: float = 1e-3                        # teacher and every round (Adam, linear decay to 0)
    eval_samples: int = pick(2000, 256)
    n_proj: int = 128
    cloud_points: int = pick(600, 200)      # points kept per sampler for the plots
    seeds: tuple[int, ...] = pick((0, 1, 2), (0, 1))
    threads: int = 1                        # tiny MLPs: one thread is the fastest on a shared CPU

    def _check(self) -> None:
        self._positive("hidden", "depth", "n_freq", "n_train", "teacher_iters", "distill_iters", "batch_size",
                       "lr", "n_proj", "cloud_points", "threads",
                       "consistency_grid")
        self._one_of("dataset", DATASETS)
        self._between("consistency_ema", 0, 0.999999)
        if self.consistency_iters < 0 or any(k < 1 for k in self.consistency_steps):
            self._fail("consistency_iters", "consistency_iters >= 0 (0 leaves it out), consistency_steps >= 1")
        check_steps(self.teacher_steps, self.final_steps)
        if self.eval_samples < 2:
            self._fail("eval_samples", "must be >= 2 (a distance between samples needs points)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            self._fail("seeds", "give one or more distinct seeds, e.g. (0, 1, 2)")


def recipe(**overrides) -> StepDistillRecipe:
    """The current mode's recipe with overrides (an unknown name raises ValueError). Lesson 17."""
    return StepDistillRecipe(**check_recipe(StepDistillRecipe, overrides))


def step_counts(rec: StepDistillRecipe) -> list[int]:
    """The step counts scored: final_steps, 2 final_steps, ..., teacher_steps."""
    out, n = [], rec.final_steps
    while n <= rec.teacher_steps:
        out.append(n)
        n *= 2
    return out


def _one_seed(rec: StepDistillRecipe, seed: int, progress: bool) -> tuple[list[dict], dict]:
    """Train, distil and score one seed: its rows and its clouds (the first cloud_points of each sampler)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    x = sample_data(rec.dataset, rec.n_train, g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = Denoiser(rec.hidden, rec.depth, rec.n_freq)
    train_denoiser(teacher, x, rec.teacher_iters, rec.batch_size, rec.lr, g, progress)
    students, _ = progressive_distillation(teacher, rec.teacher_steps, x, rec.distill_iters, rec.final_steps,
                                           rec.batch_size, rec.lr, g, progress)
    consistency = None
    if rec.consistency_iters:
        consistency, _ = consistency_distillation(teacher, x, rec.consistency_iters, rec.consistency_grid,
                                                  rec.consistency_ema, rec.batch_size, rec.lr, g, progress)
    ref = sample_data(rec.dataset, rec.eval_samples, g)
    floor = sample_data(rec.dataset, rec.eval_samples, g)
    z = torch.randn(rec.eval_samples, 2, generator=g)      # the same noise for every sampler of this seed
    h = rbf_bandwidth(ref)
    rows, clouds = [], {"data": floor[:rec.cloud_points]}

    def score(arm, k, pts):
        rows.append({"seed": seed, "arm": arm, "steps": k, "sw": sliced_wasserstein(pts, ref, rec.n_proj),
                     "mmd2": mmd2(pts, ref, h)})
        if arm != "data":
            clouds[f"{arm}@{k}"] = pts[:rec.cloud_points].clone()

    score("data", 0, floor)
    for k in step_counts(rec):
        score("teacher", k, ddim_sample(teacher, z, k))
        if k in students:
            score("distilled", k, ddim_sample(students[k], z, k))
        if consistency is not None and k in rec.consistency_steps:  # re-noising: the seed's own generator
            score("consistency", k, consistency_sample(consistency, z, k, torch.Generator().manual_seed(seed)))
    return rows, clouds


def run(rec: StepDistillRecipe | None = None, progress: bool = True) -> dict:
    """Every seed's rows (seed, arm, steps, sw, mmd2) and clouds {seed: {"arm@k": points}}. Lesson 17."""
    rec = rec if rec is not None else recipe()
    threads = torch.get_num_threads()
    torch.set_num_threads(rec.threads)
    try:
        rows, clouds = [], {}
        for seed in tqdm(rec.seeds, desc="seeds (teacher + progressive distillation)", disable=not progress):
            seed_rows, clouds[seed] = _one_seed(rec, seed, progress)
            rows += seed_rows
        return {"rows": rows, "clouds": clouds, "recipe": rec.asdict(), "mode": config.mode()}
    finally:
        torch.set_num_threads(threads)


def cached_run(rec: StepDistillRecipe | None = None, progress: bool = True, refresh: bool = False) -> dict:
    """`run`, cached (cache.build_once, kind "sweeps") by recipe and mode; a diverged run writes nothing. Lesson 17."""
    rec = rec if rec is not None else recipe()
    key = cache.key({"recipe": rec.asdict(), "mode": config.mode(), "version": 2})
    return cache.build_once(cache.path("sweeps", f"step-distillation-{config.mode()}-{key}.pt"),
                            {"key": key, "kind": "kd_lessons.step_distillation"}, lambda: run(rec, progress),
                            "the diffusion step-distillation run", refresh=refresh)


def _values(rows, arm, k, metric):
    return [r[metric] for r in sorted(rows, key=lambda r: r["seed"]) if r["arm"] == arm and r["steps"] == k]


def summary(result: dict, metric: str = "sw") -> list[dict]:
    """Per step count: teacher, PD and consistency means with 95% intervals, each paired minus teacher. Lesson 17.

    Lower distance is better, so verdict "better" means the PD student (consistency_verdict: the consistency
    model) is closer to the data than the undistilled teacher with as many steps.
    """
    if metric not in ("sw", "mmd2"):
        raise ValueError(f"metric={metric!r}: use 'sw' (sliced Wasserstein-2) or 'mmd2'")
    rows = result["rows"]
    floor = stats.mean_interval(_values(rows, "data", 0, metric), "the floor")
    out = []
    for k in sorted({r["steps"] for r in rows if r["arm"] == "teacher"}):
        teacher = _values(rows, "teacher", k, metric)
        line = {"steps": k, "teacher": stats.mean_interval(teacher, f"teacher@{k}"), "floor": floor}
        for arm, tag in (("distilled", ""), ("consistency", "consistency_")):
            mine = _values(rows, arm, k, metric)
            line.update({arm: None, f"{arm}_minus_teacher": None, f"{tag}verdict": None})
            if mine:
                d = stats.paired(mine, teacher)
                line.update({arm: stats.mean_interval(mine, f"{arm}@{k}"), f"{arm}_minus_teacher": d,
                             f"{tag}verdict": stats.verdict(d, higher_is_better=False)})
        out.append(line)
    return out
