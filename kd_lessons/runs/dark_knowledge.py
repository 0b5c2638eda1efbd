"""Is it the dark knowledge? Soft labels against controls with the same entropy or the same numbers.

Introduced in notebook 04_distill_mnist (after Yuan et al., CVPR 2020, and Mueller, Kornblith &
Hinton, NeurIPS 2019). Every arm trains the same student on the same labelled images with the same
loss (HintonKD at T, alpha); only the soft targets differ:
- "teacher": the teacher's soft labels at T;
- "label smoothing": the true class with the rest spread evenly, at the teacher's mean entropy;
- "shuffled": the teacher's soft labels with the non-top probabilities permuted per image (same
  numbers, same entropy, same top class, but no class similarities);
- "scratch": hard labels only.
If "teacher" beats both controls, the similarity structure (which wrong classes are likely) helps,
not just softer targets.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from kd_lessons.losses import check_T, entropy
from kd_lessons.objectives import CrossEntropy, HintonKD
from kd_lessons.runs import few_labels
from kd_lessons.runs.few_labels import FewLabelsRecipe
from kd_lessons.runs.students import Arm, StudentRuns, each_seed, train_students
from kd_lessons.teachers import cached_logits
from kd_lessons.train import TrainOptions

__all__ = ["ARMS", "smoothing_for_entropy", "control_logits", "study"]

ARMS = ("scratch", "teacher", "label smoothing", "shuffled")


def smoothing_for_entropy(entropy: float, num_classes: int = 10) -> float:
    """The label-smoothing epsilon whose target (1 - eps + eps/K on the class) has this entropy (nats)."""
    if not 0.0 <= entropy < math.log(num_classes):
        raise ValueError(f"entropy={entropy!r}: must lie in [0, log {num_classes}) nats")

    def h(eps: float) -> float:
        on, off = 1 - eps + eps / num_classes, eps / num_classes
        return -(on * math.log(on) + (num_classes - 1) * off * math.log(off)) if eps > 0 else 0.0

    lo, hi = 0.0, (num_classes - 1) / num_classes  # h rises on [0, (K-1)/K]: bisection
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if h(mid) < entropy else (lo, mid)
    return (lo + hi) / 2


def control_logits(teacher_logits: torch.Tensor, y: torch.Tensor, T: float, kind: str, seed: int = 0) -> torch.Tensor:
    """Logits whose softmax at T is the arm's soft target (T * log q), so HintonKD(T) trains on q exactly."""
    T = check_T(T)
    p = F.softmax(teacher_logits.float() / T, dim=1)
    if kind == "teacher":
        q = p
    elif kind == "label smoothing":
        eps = smoothing_for_entropy(float(entropy(p).mean()), p.shape[1])
        q = torch.full_like(p, eps / p.shape[1])
        q[torch.arange(len(y)), y] = 1 - eps + eps / p.shape[1]
    elif kind == "shuffled":
        g = torch.Generator().manual_seed(seed)
        order = p.argsort(dim=1, descending=True)
        rest = order[:, 1:]  # every class but the top one, per image
        shuffled = rest.gather(1, torch.rand(rest.shape, generator=g).argsort(dim=1))
        q = p.clone()
        q.scatter_(1, shuffled, p.gather(1, rest))  # the same numbers on other wrong classes
    else:
        raise ValueError(f"kind={kind!r}: use 'teacher', 'label smoothing' or 'shuffled'")
    return T * q.clamp_min(1e-12).log()


def study(rec: FewLabelsRecipe, teacher: torch.nn.Module, seeds=(0, 1, 2), T: float = 4.0, alpha: float = 0.9,
          options: TrainOptions | None = None, names=ARMS) -> tuple[StudentRuns, dict]:
    """Train every arm (or those in `names`) per seed on the labelled images only. Notebook 04_distill_mnist.

    Each seed s draws its own labelled images (`rec.replace(seed=s)`) and its own shuffle of the wrong classes;
    the teacher is fixed. Returns (runs, info): info holds the teacher's mean soft-label entropy at T and the
    matched epsilon, averaged over the seeds' labelled sets (each seed's label smoothing matches its own).
    """
    unknown = set(names) - set(ARMS)
    if unknown or not names:
        raise ValueError(f"names={list(names)}: use some of {list(ARMS)}")
    options = options or TrainOptions(progress=False, weight_decay=rec.weight_decay)
    options = replace(options, batch_size=rec.batch_size, max_steps=rec.steps)
    entropies = []

    def one(seed: int) -> StudentRuns:
        data = few_labels.split(rec.replace(seed=seed))
        x, y = data["x_labeled"], data["y_labeled"]
        logits = cached_logits(teacher, x)
        h = float(entropy(F.softmax(logits.float() / T, dim=1)).mean())
        entropies.append((h, smoothing_for_entropy(h, logits.shape[1])))
        arms = {kind: Arm(CrossEntropy(), x, y) if kind == "scratch"
                else Arm(HintonKD(T, alpha), x, y, control_logits(logits, y, T, kind, seed=seed)) for kind in names}
        return train_students(lambda: few_labels.make_student(rec), data, arms, [seed], lr=rec.lr, options=options)

    runs = each_seed(one, seeds)
    n = len(entropies)
    return runs, {"entropy": sum(h for h, _ in entropies) / n, "epsilon": sum(e for _, e in entropies) / n, "T": T}
