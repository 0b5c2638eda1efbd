"""When does distillation beat supervised training? A map over student size and labels on MNIST-1D. Lesson 18.

Introduced for Lesson 18, in the spirit of Busbridge et al. (2025, "Distillation Scaling Laws"). For each student
width (an MLP 40-w-w-10) and each number of labelled training signals n, two students get the same optimizer steps:
"supervised" learns from its n labels alone; "distilled" learns from the same n labels plus a CNN teacher's soft
labels on all 4000 training signals (HintonKD; the teacher, trained on every label, is the given, already paid
for, model of the paper's "teacher exists" case). At n = 4000 both see every label, so the teacher adds only its
soft targets. Per seed the teacher, the labelled subset and both students' init and order are redrawn; a cell says
"better" only where the paired 95% interval of distilled - supervised excludes 0 (`kd_lessons.stats.verdict`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kd_lessons import cache, config, mnist1d
from kd_lessons.figures import HeatmapStyle, heatmap
from kd_lessons.objectives import CrossEntropy, HintonKD
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs.capacity_gap import check_grid, load_data, make_student, train_teacher
from kd_lessons.runs.students import Arm, train_students
from kd_lessons.stats import paired, verdict
from kd_lessons.train import TrainOptions, evaluate, predict_logits

__all__ = ["KDMapRecipe", "recipe", "run", "cached_run", "cells", "plot"]


@dataclass(frozen=True)
class KDMapRecipe(Recipe):
    """Student widths x labelled examples, the teacher, the budget and seeds (mode: a field). Lesson 18."""

    student_widths: tuple[int, ...] = pick((16, 64, 256), (8, 16))
    n_labeled: tuple[int, ...] = pick((100, 400, 1600, 4000), (50, 400))
    teacher_width: int = 32
    teacher_epochs: int = pick(40, 2)
    steps: int = pick(1000, 20)
    teacher_lr: float = 1e-2
    lr: float = 3e-3
    batch_size: int = 128
    T: float = 4.0
    alpha: float = 0.9
    num_samples: int = pick(mnist1d.STANDARD["num_samples"], 500)
    seeds: tuple[int, ...] = (0, 1, 2)
    mode: str = field(default_factory=config.mode)

    def _check(self) -> None:
        check_grid(self, "student_widths")
        check_grid(self, "n_labeled")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            self._fail("seeds", "pass at least one seed, each once, e.g. (0, 1, 2)")
        self._positive("teacher_width", "teacher_epochs", "steps", "teacher_lr", "lr", "batch_size", "T",
                       "num_samples")
        self._between("alpha", 0.0, 1.0)
        self._one_of("mode", ("quick", "full"))
        n_train = int(self.num_samples * mnist1d.STANDARD["train_split"])
        if self.n_labeled[-1] > n_train:
            self._fail("n_labeled", f"each must be <= the {n_train} training signals of num_samples="
                                    f"{self.num_samples}")


def recipe(**overrides) -> KDMapRecipe:
    """The KD-map recipe of the current mode; overrides replace fields. Lesson 18."""
    return KDMapRecipe(**check_recipe(KDMapRecipe, overrides))


def _seed_rows(rec: KDMapRecipe, seed: int) -> list[dict]:
    data = load_data(rec.num_samples, rec.n_labeled[0], seed)
    teacher = train_teacher(rec.teacher_width, data, rec.teacher_epochs, (rec.teacher_epochs,), rec.teacher_lr,
                            rec.batch_size, seed)[rec.teacher_epochs]
    logits = predict_logits(teacher, data["x"])
    teacher_accuracy = evaluate(teacher, data["x_test"], data["y_test"])["accuracy"]
    options = TrainOptions(batch_size=rec.batch_size, progress=False, max_steps=rec.steps, weight_decay=5e-4)
    rows = []
    for n in rec.n_labeled:
        d = load_data(rec.num_samples, n, seed)
        arms = {"supervised": Arm(CrossEntropy(), d["x_labeled"], d["y_labeled"]),
                "distilled": Arm(HintonKD(rec.T, rec.alpha), d["x"], d["y_few"], logits)}
        for width in rec.student_widths:
            runs = train_students(lambda w=width: make_student(w), d, arms, [seed], lr=rec.lr, options=options)
            rows += [{**r, "student_width": width, "n_labeled": n, "teacher_accuracy": teacher_accuracy}
                     for r in runs.table[["method", "seed", "accuracy"]].to_dict("records")]
    return rows


def run(rec: KDMapRecipe) -> list[dict]:
    """One row per (seed, n_labeled, student width, method): its test accuracy and the seed's teacher accuracy."""
    return [row for seed in rec.seeds for row in _seed_rows(rec, seed)]


def cached_run(rec: KDMapRecipe | None = None, refresh: bool = False) -> list[dict]:
    """`run`, cached (cache.build_once, kind "sweeps") by recipe and mnist1d version. Lesson 18."""
    rec = rec or recipe()
    key = cache.key({"recipe": rec.asdict(), "mnist1d": mnist1d.package_version(), "version": 1})
    return cache.build_once(cache.path("sweeps", f"kd-map-{rec.mode}-{key}.pt"),
                            {"key": key, "kind": "kd_lessons.kd_map"}, lambda: run(rec), "the KD map",
                            refresh=refresh)


def cells(rows: list[dict]) -> list[dict]:
    """Per (student width, n_labeled): both accuracies, distilled - supervised (paired 95% interval), verdict."""
    if not rows:
        raise ValueError("rows is empty: pass the rows of run() or cached_run()")
    acc = {(r["student_width"], r["n_labeled"], r["method"], r["seed"]): r["accuracy"] for r in rows}
    out = []
    for width in sorted({r["student_width"] for r in rows}):
        for n in sorted({r["n_labeled"] for r in rows}):
            seeds = sorted(seed for (w, k, method, seed) in acc if (w, k, method) == (width, n, "supervised"))
            if not seeds or any((width, n, "distilled", s) not in acc for s in seeds):
                raise ValueError(f"cell width={width}, n_labeled={n} lacks paired supervised/distilled rows")
            sup = [acc[(width, n, "supervised", s)] for s in seeds]
            dis = [acc[(width, n, "distilled", s)] for s in seeds]
            d = paired(dis, sup)
            out.append({"student_width": width, "n_labeled": n, "seeds": len(seeds), "supervised": float(np.mean(sup)),
                        "distilled": float(np.mean(dis)), "diff": d.mean, "low": d.low, "high": d.high,
                        "verdict": verdict(d)})
    return out


def plot(rows: list[dict]):
    """Heatmap of distilled - supervised accuracy (points) per student width and labels, verdict in each cell."""
    table = cells(rows)
    widths = sorted({c["student_width"] for c in table})
    ns = sorted({c["n_labeled"] for c in table})
    values = np.array([[next(c["diff"] for c in table if (c["student_width"], c["n_labeled"]) == (w, n)) * 100
                        for n in ns] for w in widths])
    fig = heatmap(values, [f"MLP 40-{w}-{w}-10" for w in widths], ns, xlabel="labelled training signals",
                  ylabel="student", title="distilled - supervised (accuracy points, paired 95% CI)",
                  style=HeatmapStyle(annotate=False, cmap="RdBu", colorbar_label="accuracy points"))
    ax = fig.axes[0]
    limit = max(float(np.abs(values).max()), 1e-9)
    ax.images[0].set_clim(-limit, limit)  # 0 in the middle of the colour map: blue helps, red hurts
    for c in table:
        i, j = widths.index(c["student_width"]), ns.index(c["n_labeled"])
        ax.text(j, i, f"{100 * c['diff']:+.1f}\n[{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]\n{c['verdict']}",
                ha="center", va="center", fontsize=7, color="white" if abs(values[i, j]) > 0.6 * limit else "black")
    fig.set_size_inches(2.5 + 1.6 * len(ns), 1.2 + 0.9 * len(widths))
    return fig
