"""Capacity gap and teacher choice on MNIST-1D: is a bigger or longer-trained teacher a better one? Lesson 18.

Introduced for Lesson 18 (Cho and Hariharan, 2019; Mirzadeh et al., 2020). One fixed small MLP student learns from
1-D CNN teachers of several widths (the MNIST-1D paper's three-conv net), each taken at several epochs of one
training run (early-stopped teachers are that run's earlier weights). The setting is lesson 04's few labels: the
student keeps `n_labeled` labels of the 4000 training signals, the teacher (trained on all of them) labels every
one; "scratch" is the student on its labelled signals alone, with the same optimizer steps. Per seed everything is
redrawn: the teachers' init and order, the labelled subset, the student's init and order; each distilled arm is
paired with that seed's scratch (95% t-interval of the per-seed differences, `kd_lessons.stats`). The TAKD row
distils the widest full teacher into a mid-size CNN assistant, then the assistant into the student.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons import cache, config, mnist1d
from kd_lessons.data import hide_labels
from kd_lessons.figures import new_figure
from kd_lessons.models import MLPStudent, count_params
from kd_lessons.objectives import UNLABELED, CrossEntropy, HintonKD
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs.students import Arm, train_students
from kd_lessons.stats import paired, verdict
from kd_lessons.train import TrainOptions, distill, evaluate, fit, predict_logits

__all__ = ["CNN1D", "CapacityGapRecipe", "recipe", "check_grid", "load_data", "train_teacher", "make_student", "run",
           "cached_run", "summary", "plot"]


class CNN1D(nn.Module):
    """The MNIST-1D paper's CNN (three stride-2 convs, ReLU, a linear head) at any width: Lesson 18's teachers."""

    def __init__(self, width: int = 25, num_classes: int = 10, length: int = mnist1d.LENGTH):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width={width!r}: pass a positive int (channels of each conv layer)")
        self.convs = nn.ModuleList([nn.Conv1d(1, width, 5, stride=2, padding=1),
                                    nn.Conv1d(width, width, 3, stride=2, padding=1),
                                    nn.Conv1d(width, width, 3, stride=2, padding=1)])
        out_len = length
        for conv in self.convs:
            out_len = (out_len + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
        self.out = nn.Linear(width * out_len, num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        x, features = x.reshape(len(x), 1, -1), []
        for conv in self.convs:
            x = F.relu(conv(x))
            features.append(x)
        logits = self.out(x.flatten(1))
        return (logits, features) if return_features else logits


def check_grid(rec: Recipe, name: str) -> None:
    """A grid field (widths, stops, label counts): not empty, positive ints, each once, increasing."""
    values = getattr(rec, name)
    if not values:
        rec._fail(name, "is empty: pass at least one value")
    if any(v < 1 for v in values) or list(values) != sorted(set(values)):
        rec._fail(name, "must be positive ints, each once, in increasing order")


@dataclass(frozen=True)
class CapacityGapRecipe(Recipe):
    """Teacher widths and stops, the fixed student, its labels and budget, seeds (mode: a field). Lesson 18."""

    teacher_widths: tuple[int, ...] = pick((4, 16, 64), (4, 8))
    teacher_epochs: int = pick(40, 2)
    stops: tuple[int, ...] = pick((3, 10, 40), (1, 2))  # teacher snapshots (epochs); the last is the full run
    assistant_width: int = pick(16, 4)  # TAKD: widest full teacher -> CNN of this width -> student
    student_width: int = 64  # the student: an MLP 40-w-w-10
    n_labeled: int = pick(500, 100)
    steps: int = pick(1000, 20)
    teacher_lr: float = 1e-2
    lr: float = 3e-3
    batch_size: int = 128
    T: float = 4.0
    alpha: float = 0.9
    num_samples: int = pick(mnist1d.STANDARD["num_samples"], 500)  # quick: a small generation, same recipe
    seeds: tuple[int, ...] = (0, 1, 2)
    mode: str = field(default_factory=config.mode)

    def _check(self) -> None:
        check_grid(self, "teacher_widths")
        check_grid(self, "stops")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            self._fail("seeds", "pass at least one seed, each once, e.g. (0, 1, 2)")
        self._positive("teacher_epochs", "assistant_width", "student_width", "n_labeled", "steps", "teacher_lr",
                       "lr", "batch_size", "T", "num_samples")
        self._between("alpha", 0.0, 1.0)
        self._one_of("mode", ("quick", "full"))
        if self.stops[-1] != self.teacher_epochs:
            self._fail("stops", f"must end at teacher_epochs={self.teacher_epochs} (the full run)")
        if self.n_labeled > self.num_samples * mnist1d.STANDARD["train_split"]:
            self._fail("n_labeled", f"must be <= the {int(self.num_samples * 0.8)} training signals")


def recipe(**overrides) -> CapacityGapRecipe:
    """The capacity-gap recipe of the current mode; overrides replace fields. Lesson 18."""
    return CapacityGapRecipe(**check_recipe(CapacityGapRecipe, overrides))


def load_data(num_samples: int, n_labeled: int, seed: int) -> dict:
    """MNIST-1D with all but a class-balanced n_labeled training labels hidden (the seed draws which)."""
    d = mnist1d.load(num_samples)
    y_few = hide_labels(d["y"], n_labeled, seed=seed)
    keep = y_few != UNLABELED
    return {**d, "y_few": y_few, "x_labeled": d["x"][keep], "y_labeled": d["y"][keep]}


def make_student(width: int) -> MLPStudent:
    """The fixed small student: an MLP with two hidden layers of `width` units over the 40-point signal."""
    return MLPStudent((width, width), in_features=mnist1d.LENGTH)


def train_teacher(width: int, data: dict, epochs: int, stops, lr: float, batch_size: int, seed: int) -> dict:
    """One CNN1D on every training label; {epoch: teacher} at each of `stops` (early-stopped = that run's weights)."""
    config.seed_everything(seed)
    model, snaps = CNN1D(width), {}

    def keep(epoch, history):
        if epoch in stops:
            snaps[epoch] = copy.deepcopy(model).eval()

    fit(model, data["x"], data["y"], epochs, lr, options=TrainOptions(batch_size=batch_size, seed=seed,
                                                                      progress=False, callback=keep))
    return snaps


def _seed_rows(rec: CapacityGapRecipe, seed: int) -> list[dict]:
    data = load_data(rec.num_samples, rec.n_labeled, seed)
    options = TrainOptions(batch_size=rec.batch_size, progress=False, max_steps=rec.steps, weight_decay=5e-4)
    arms, info = {"scratch": Arm(CrossEntropy(), data["x_labeled"], data["y_labeled"])}, {"scratch": {}}
    for width in rec.teacher_widths:
        for epoch, teacher in train_teacher(width, data, rec.teacher_epochs, rec.stops, rec.teacher_lr,
                                            rec.batch_size, seed).items():
            name = f"CNN-{width} @{epoch}"
            arms[name] = Arm(HintonKD(rec.T, rec.alpha), data["x"], data["y_few"], predict_logits(teacher, data["x"]))
            info[name] = {"teacher_width": width, "teacher_epochs": epoch, "teacher_params": count_params(teacher),
                          "teacher_accuracy": evaluate(teacher, data["x_test"], data["y_test"])["accuracy"]}
            if width == rec.teacher_widths[-1] and epoch == rec.teacher_epochs:
                big = teacher
    config.seed_everything(seed)
    assistant = CNN1D(rec.assistant_width)
    epochs = math.ceil(rec.steps / math.ceil(len(data["x"]) / rec.batch_size))  # as train_students does
    distill(assistant, data["x"], data["y_few"], big, HintonKD(rec.T, rec.alpha), epochs, rec.teacher_lr,
            options=replace(options, seed=seed, weight_decay=0.0))
    arms["TAKD"] = Arm(HintonKD(rec.T, rec.alpha), data["x"], data["y_few"], predict_logits(assistant, data["x"]))
    info["TAKD"] = {"teacher_width": rec.assistant_width, "teacher_epochs": rec.teacher_epochs,
                    "teacher_params": count_params(assistant),
                    "teacher_accuracy": evaluate(assistant, data["x_test"], data["y_test"])["accuracy"]}
    runs = train_students(lambda: make_student(rec.student_width), data, arms, [seed], lr=rec.lr, options=options)
    return [{**row, **info[row["method"]]} for row in runs.table[["method", "seed", "accuracy"]].to_dict("records")]


def run(rec: CapacityGapRecipe) -> list[dict]:
    """One row per (arm, seed): method, seed, accuracy and the teacher's width, epochs, params and accuracy."""
    return [row for seed in rec.seeds for row in _seed_rows(rec, seed)]


def cached_run(rec: CapacityGapRecipe | None = None, refresh: bool = False) -> list[dict]:
    """`run`, cached (cache.build_once, kind "sweeps") by recipe and mnist1d version. Lesson 18."""
    rec = rec or recipe()
    key = cache.key({"recipe": rec.asdict(), "mnist1d": mnist1d.package_version(), "version": 1})
    return cache.build_once(cache.path("sweeps", f"capacity-gap-{rec.mode}-{key}.pt"),
                            {"key": key, "kind": "kd_lessons.capacity_gap"}, lambda: run(rec),
                            "the capacity-gap sweep", refresh=refresh)


def summary(rows: list[dict]) -> list[dict]:
    """Per arm: mean accuracy, its difference from scratch (paired 95% interval over seeds) and the verdict."""
    if not rows:
        raise ValueError("rows is empty: pass the rows of run() or cached_run()")
    by = {}
    for row in rows:
        by.setdefault(row["method"], {})[row["seed"]] = row
    if "scratch" not in by:
        raise ValueError(f"no scratch rows to pair with (methods: {sorted(by)})")
    seeds = sorted(by["scratch"])
    out = []
    for method, per_seed in by.items():
        accs = [per_seed[s]["accuracy"] for s in seeds]
        first = per_seed[seeds[0]]
        teacher = {k: first[k] for k in ("teacher_width", "teacher_epochs", "teacher_params") if k in first}
        if "teacher_accuracy" in first:
            teacher["teacher_accuracy"] = float(np.mean([per_seed[s]["teacher_accuracy"] for s in seeds]))
        d = paired(accs, [by["scratch"][s]["accuracy"] for s in seeds]) if method != "scratch" else None
        out.append({"method": method, **teacher, "accuracy": float(np.mean(accs)), "seeds": len(seeds),
                    "diff": d.mean if d else 0.0, "low": d.low if d else 0.0, "high": d.high if d else 0.0,
                    "verdict": verdict(d) if d else "baseline"})
    return out


def _yerr(table: list[dict]) -> list[list[float]]:
    """Error bars (points below, points above) of the paired intervals, in accuracy points."""
    return [[100 * (r["diff"] - r["low"]) for r in table], [100 * (r["high"] - r["diff"]) for r in table]]


def plot(rows: list[dict]):
    """Student accuracy minus scratch (95% intervals) against teacher accuracy and teacher width. Lesson 18."""
    table = summary(rows)
    fig = new_figure(10, 3.8)
    ax_acc, ax_size = fig.subplots(1, 2, sharey=True)
    grid = [r for r in table if r["method"] not in ("scratch", "TAKD")]
    for epoch in sorted({r["teacher_epochs"] for r in grid}):
        pts = sorted((r for r in grid if r["teacher_epochs"] == epoch), key=lambda r: r["teacher_width"])
        for ax, key in ((ax_acc, "teacher_accuracy"), (ax_size, "teacher_params")):
            ax.errorbar([r[key] for r in pts], [100 * r["diff"] for r in pts], fmt="o-", capsize=3, yerr=_yerr(pts),
                        label=f"teacher stopped at epoch {epoch}")
    for r in table:
        if r["method"] == "TAKD":
            for ax, key in ((ax_acc, "teacher_accuracy"), (ax_size, "teacher_params")):
                ax.errorbar([r[key]], [100 * r["diff"]], yerr=_yerr([r]), fmt="k*", ms=10, capsize=3,
                            label="TAKD (via assistant)")
    for ax in (ax_acc, ax_size):
        ax.axhline(0, color="grey", lw=0.8)
    ax_size.set_xscale("log")
    ax_acc.set(xlabel="teacher test accuracy", ylabel="student accuracy - scratch (points, 95% CI)",
               title="student gain vs teacher accuracy")
    ax_size.set(xlabel="teacher parameters (log)", title="student gain vs teacher size")
    ax_acc.legend(fontsize=7)
    return fig
