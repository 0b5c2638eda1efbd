"""The Hinton, Vinyals & Dean (2015) MNIST experiments (section 3), rerun with kd_lessons.

Introduced in notebook 07_hinton_2015_reproduction. Every run trains the paper's 784-800-800-10
net on a transfer set drawn from the first 55k training images; the last 5k training images are a
held-out split used only to choose logit-bias shifts; errors are counted on the 10k test set.
Command line: `python -m kd_lessons hinton [--seeds 0 1 2]` prints the same table (KD_QUICK=1 for
smoke-test sizes). Its figures are in `kd_lessons.plots`.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from kd_lessons.data import load_tensors, stratified_subset
from kd_lessons.models import MLPStudent
from kd_lessons.objectives import CrossEntropy, HintonKD
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs.students import train_students
from kd_lessons.teachers import cached_logits, get_teacher
from kd_lessons.train import TrainOptions, evaluate, predict_logits

__all__ = ["PAPER", "HintonRecipe", "recipe", "load_data", "transfer_mask", "shift_logits", "bias_sweep",
           "choose_shift", "train_on", "run_baseline", "run_transfer", "temperature_sweep", "paper_vs_ours", "assemble",
           "known_errors", "run_all", "to_markdown"]

# Hinton et al. 2015, section 3 (test errors out of 10,000 unless a percentage).
PAPER = {"teacher_errors": 67, "scratch_errors": 146, "distilled_errors": 74, "T": 20.0,
         "no3_errors": 206, "no3_errors_on_3s": 133, "no3_shift": 3.5, "no3_shifted_errors": 109,
         "no3_shifted_errors_on_3s": 14, "only78_error_pct": 47.3, "only78_shift": -7.6,
         "only78_shifted_error_pct": 13.2}
N_TEST_3S = 1010  # the test set's 3s


@dataclass(frozen=True)
class HintonRecipe(Recipe):
    """Run sizes for the current mode (full: the whole transfer set, 3 seeds). Notebook 07_hinton_2015_reproduction.

    The transfer-set runs use `extra_transfer_seeds` more seeds than the baseline (`transfer_seeds`): they are
    cheaper, and their within-1.5x targets need the narrower interval of 5 seeds.
    """

    n_val: int = 5000  # the last training images: the held-out split for choosing logit-bias shifts
    n_train: int | None = pick(None, 5000)
    n_val_used: int = pick(5000, 1000)
    seeds: tuple[int, ...] = pick((0, 1, 2), (0,))
    extra_transfer_seeds: int = pick(2, 0)
    num_epochs: int = pick(10, 4)
    lr: float = 3e-3
    batch_size: int = pick(256, 128)
    T: float = 20.0
    alpha: float = 0.9
    temperatures: tuple[float, ...] = pick((1.0, 3.0, 8.0, 20.0), (1.0, 20.0))
    baseline_teacher: str = "ensemble"
    transfer_teacher: str = "mlp"
    shifts: tuple[float, ...] = field(default_factory=lambda: tuple(np.round(np.arange(-20, 20.001, 0.1), 2).tolist()))

    def _check(self) -> None:
        self._positive("n_val", "n_train", "n_val_used", "num_epochs", "lr", "batch_size", "T")
        self._between("alpha", 0.0, 1.0)
        self._between("extra_transfer_seeds", 0, 100)
        self._one_of("baseline_teacher", ("ensemble", "cnn", "mlp"))
        self._one_of("transfer_teacher", ("ensemble", "cnn", "mlp"))
        if self.n_val_used > self.n_val:
            self._fail("n_val_used", f"must be <= n_val={self.n_val}")
        for name in ("seeds", "temperatures", "shifts"):
            if not getattr(self, name):
                self._fail(name, "pass at least one value")

    @property
    def transfer_seeds(self) -> tuple[int, ...]:
        """The seeds of the transfer-set runs: `seeds`, then `extra_transfer_seeds` more after the largest."""
        return self.seeds + tuple(range(max(self.seeds) + 1, max(self.seeds) + 1 + self.extra_transfer_seeds))


def recipe(**overrides) -> HintonRecipe:
    """Run sizes for the current mode; overrides replace fields. Notebook 07_hinton_2015_reproduction."""
    return HintonRecipe(**check_recipe(HintonRecipe, overrides))


def load_data(s: HintonRecipe | None = None, arch: str = "mlp", teacher: nn.Module | None = None) -> dict:
    """Transfer pool (first 55k), held-out split (last 5k), test set and cached teacher logits. Notebook 07.

    The teacher is `get_teacher("mnist", arch)` ("mlp": the paper's big net) unless one is passed.
    """
    s = s or recipe()
    if teacher is None:
        teacher, info = get_teacher("mnist", arch, options=TrainOptions(progress=False))
    else:
        info = {}
    x_all, y_all = load_tensors("mnist", train=True)
    cut = len(x_all) - s.n_val
    x, y = x_all[:cut], y_all[:cut]
    x_val, y_val = x_all[cut:cut + s.n_val_used], y_all[cut:cut + s.n_val_used]
    if s.n_train is not None:
        x, y = stratified_subset(x, y, s.n_train, seed=0)
    x_test, y_test = load_tensors("mnist", train=False)
    logits = cached_logits(teacher, x)
    return {"x": x, "y": y, "teacher_logits": logits, "x_val": x_val, "y_val": y_val, "x_test": x_test,
            "y_test": y_test, "teacher": teacher, "teacher_test": evaluate(teacher, x_test, y_test),
            "teacher_train_seconds": info.get("train_seconds"),
            "teacher_recipe": info.get("recipe", {}).get("arch", type(teacher).__name__)}


def transfer_mask(y: torch.Tensor, drop: Sequence[int] = (), keep: Sequence[int] | None = None) -> torch.Tensor:
    """Boolean mask of the transfer set: without the `drop` classes, or only the `keep` classes. Notebook 07."""
    if keep is not None and len(drop):
        raise ValueError(f"pass drop={list(drop)} or keep={list(keep)}, not both")
    classes = torch.as_tensor(list(keep if keep is not None else drop), dtype=y.dtype)
    mask = torch.isin(y, classes) if keep is not None else ~torch.isin(y, classes)
    if not bool(mask.any()):
        raise ValueError(f"the transfer set is empty with drop={list(drop)}, keep={keep}; check the class ids (0-9)")
    return mask


def shift_logits(logits: torch.Tensor, classes: Sequence[int], shift: float) -> torch.Tensor:
    """Add `shift` to the logits (i.e. the output biases) of `classes`. Notebook 07_hinton_2015_reproduction."""
    out = logits.clone()
    out[:, list(classes)] += shift
    return out


def bias_sweep(logits: torch.Tensor, y: torch.Tensor, classes: Sequence[int], shifts: Sequence[float]) -> pd.DataFrame:
    """Errors (total and on `classes`) for each bias shift of `classes`. Notebook 07_hinton_2015_reproduction."""
    if len(logits) != len(y) or len(shifts) == 0:
        raise ValueError(f"logits has {len(logits)} rows and y {len(y)}; pass one row per label and >= 1 shift")
    in_cls = torch.isin(y, torch.as_tensor(list(classes), dtype=y.dtype))
    rows = []
    for shift in shifts:
        wrong = shift_logits(logits, classes, float(shift)).argmax(1) != y
        rows.append({"shift": float(shift), "errors": int(wrong.sum()), "accuracy": 1 - float(wrong.float().mean()),
                     "errors_on_classes": int(wrong[in_cls].sum()), "n_classes": int(in_cls.sum())})
    return pd.DataFrame(rows)


def choose_shift(sweep: pd.DataFrame) -> float:
    """The shift with the fewest held-out errors (ties: the smallest |shift|). Notebook 07_hinton_2015_reproduction."""
    best = sweep[sweep["errors"] == sweep["errors"].min()]
    return float(best.loc[best["shift"].abs().idxmin(), "shift"])


def train_on(data: dict, s: HintonRecipe, methods: dict, seeds, mask: torch.Tensor | None = None,
             progress: bool = True):
    """800-800 students per (method, seed) on the (masked) transfer set, the paper's budget. Notebook 07."""
    x, y, logits = data["x"], data["y"], data["teacher_logits"]
    if mask is not None:
        x, y, logits = x[mask], y[mask], logits[mask]
    split = {"x": x, "y": y, "x_test": data["x_test"], "y_test": data["y_test"]}
    return train_students(lambda: MLPStudent(hidden=(800, 800)), split, methods, seeds, teacher=logits,
                          num_epochs=s.num_epochs, lr=s.lr,
                          options=TrainOptions(batch_size=s.batch_size, progress=progress))


def run_baseline(data: dict, s: HintonRecipe, progress: bool = True,
                 names: Sequence[str] = ("scratch", "distilled")) -> pd.DataFrame:
    """800-800 from scratch vs distilled at T, one row per (method, seed). Notebook 07_hinton_2015_reproduction.

    `names` picks the methods: scratch never sees the teacher, so a teacher ablation can train "distilled" only
    and reuse the baseline's scratch rows (the same seeds give the same run).
    """
    methods = {"scratch": CrossEntropy(), "distilled": HintonKD(s.T, s.alpha)}
    unknown = set(names) - set(methods)
    if unknown or not names:
        raise ValueError(f"names={list(names)}: use 'scratch' and/or 'distilled'")
    table = train_on(data, s, {n: methods[n] for n in names}, s.seeds, progress=progress).table
    table["T"] = [s.T if m == "distilled" else None for m in table["method"]]
    return table[["method", "seed", "T", "errors", "seconds"]]


def run_transfer(data: dict, s: HintonRecipe, drop: Sequence[int] = (), keep: Sequence[int] | None = None,
                 progress: bool = True, predictions: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Distil on a transfer set missing classes, then fix the biases chosen on held-out data. Notebook 07.

    One row per seed of `s.transfer_seeds` (each seed: the student's initialisation and batch order; the transfer
    set, the held-out split and the teacher are fixed). A dict passed as `predictions` is filled with
    {seed: (test predictions, test predictions after the shift)}, for per-image comparisons (bootstrap_paired).
    """
    mask = transfer_mask(data["y"], drop, keep)
    classes = list(drop) if keep is None else list(keep)
    runs = train_on(data, s, {"distilled": HintonKD(s.T, s.alpha)}, s.transfer_seeds, mask, progress)
    in_classes = torch.isin(data["y_test"], torch.as_tensor(classes, dtype=torch.int64))
    rows, sweeps = [], {}
    for seed in s.transfer_seeds:
        student = runs.students[("distilled", seed)]
        sweeps[seed] = bias_sweep(predict_logits(student, data["x_val"]), data["y_val"], classes, s.shifts)
        shift = choose_shift(sweeps[seed])
        test_logits = predict_logits(student, data["x_test"])
        seconds = float(runs.table.loc[runs.table.seed == seed, "seconds"].iloc[0])
        row = {"seed": seed, "n_transfer": int(mask.sum()), "shift": shift, "seconds": seconds}
        found = []
        for tag, z in (("", test_logits), ("shifted_", shift_logits(test_logits, classes, shift))):
            found.append(z.argmax(1))
            wrong = found[-1] != data["y_test"]
            row[f"{tag}errors"] = int(wrong.sum())
            row[f"{tag}errors_on_classes"] = int(wrong[in_classes].sum())
        rows.append(row)
        if predictions is not None:
            predictions[seed] = tuple(found)
    return pd.DataFrame(rows), sweeps


def temperature_sweep(data: dict, s: HintonRecipe, known: dict | None = None, progress: bool = True) -> pd.DataFrame:
    """Test errors of the distilled 800-800 net for each T (seed 0); `known` {T: errors} skips reruns. Notebook 07."""
    known = dict(known or {})
    todo = {f"T={T:g}": HintonKD(T, s.alpha) for T in s.temperatures if T not in known}
    if todo:
        table = train_on(data, s, todo, [s.seeds[0]], progress=progress).table
        known.update({m.T: int(e) for m, e in zip(todo.values(), table["errors"])})
    return pd.DataFrame({"T": list(s.temperatures), "errors": [known[T] for T in s.temperatures]})


def _stat(values) -> tuple[float, float]:
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paper_vs_ours(results: HintonRecipe) -> pd.DataFrame:
    """One table: paper number, ours (mean +- std over seeds), seeds and wall time per run. Notebook 07."""
    base, no3, only78 = results["baseline"], results["no3"], results["only78"]
    scratch, dist = base[base.method == "scratch"], base[base.method == "distilled"]
    pct = lambda e: 100.0 * np.asarray(e, dtype=float) / results["n_test"]  # noqa: E731
    spec = [("teacher (big net, 1200-1200 MLP) test errors", PAPER["teacher_errors"], [results["teacher_errors"]],
             [results["teacher_seconds"]]),
            ("teacher of our baseline rows (ensemble) test errors", float("nan"),
             [results.get("base_teacher_errors", results["teacher_errors"])],
             [results.get("base_teacher_seconds", results["teacher_seconds"])]),
            ("800-800 from scratch, test errors", PAPER["scratch_errors"], scratch.errors, scratch.seconds),
            (f"800-800 distilled at T={results['T']:g}, test errors", PAPER["distilled_errors"], dist.errors,
             dist.seconds),
            ("no 3s in transfer set: test errors", PAPER["no3_errors"], no3.errors, no3.seconds),
            ("no 3s: errors on the 1010 test 3s", PAPER["no3_errors_on_3s"], no3.errors_on_classes, no3.seconds),
            ("no 3s: bias shift of class 3 (held-out)", PAPER["no3_shift"], no3["shift"], no3.seconds),
            ("no 3s, shifted: test errors", PAPER["no3_shifted_errors"], no3.shifted_errors, no3.seconds),
            ("no 3s, shifted: errors on test 3s", PAPER["no3_shifted_errors_on_3s"], no3.shifted_errors_on_classes,
             no3.seconds),
            ("only 7s and 8s: test error %", PAPER["only78_error_pct"], pct(only78.errors), only78.seconds),
            ("only 7s and 8s: bias shift of 7 and 8 (held-out)", PAPER["only78_shift"], only78["shift"],
             only78.seconds),
            ("only 7s and 8s, shifted: test error %", PAPER["only78_shifted_error_pct"], pct(only78.shifted_errors),
             only78.seconds)]
    rows = []
    for name, paper, values, seconds in spec:
        values = [v for v in values if v is not None]
        mean, std = _stat(values) if values else (float("nan"), float("nan"))
        secs = [t for t in seconds if t is not None]
        rows.append({"experiment": name, "paper": paper, "ours": f"{mean:.1f} ± {std:.1f}" if len(values) > 1
                     else f"{mean:.1f}", "ours_mean": mean, "ours_std": std, "seeds": len(values),
                     "wall_s_per_run": round(statistics.fmean(secs), 1) if secs else float("nan")})
    return pd.DataFrame(rows)


def assemble(s: HintonRecipe, data: dict, baseline: pd.DataFrame, no3: tuple, only78: tuple, t_sweep: pd.DataFrame,
             base_data: dict | None = None) -> dict:
    """Collect the runs in one dict and build the paper-vs-ours table. Notebook 07_hinton_2015_reproduction.

    `data` holds the transfer experiments' teacher, `base_data` the baseline's (default: the same).
    """
    base_data = base_data or data
    results = {"settings": s, "baseline": baseline, "no3": no3[0], "no3_sweeps": no3[1], "only78": only78[0],
               "only78_sweeps": only78[1], "t_sweep": t_sweep, "T": s.T, "n_test": len(data["y_test"]),
               "teacher_errors": data["teacher_test"]["errors"], "teacher_seconds": data["teacher_train_seconds"],
               "base_teacher_errors": base_data["teacher_test"]["errors"],
               "base_teacher_seconds": base_data["teacher_train_seconds"]}
    results["table"] = paper_vs_ours(results)
    return results


def known_errors(baseline: pd.DataFrame, s: HintonRecipe) -> dict:
    """{T: test errors} of the first seed's distilled run, so the T sweep does not train it again. Notebook 07."""
    d0 = baseline[(baseline.method == "distilled") & (baseline.seed == s.seeds[0])]
    return {s.T: int(d0.errors.iloc[0])} if len(d0) else {}


def run_all(s: HintonRecipe | None = None, progress: bool = True) -> dict:
    """Every experiment of section 3 plus the T sweep and the table: `python -m kd_lessons hinton`."""
    s = s or recipe()
    start = time.perf_counter()
    base_data, data = load_data(s, s.baseline_teacher), load_data(s, s.transfer_teacher)
    baseline = run_baseline(base_data, s, progress)
    no3 = run_transfer(data, s, drop=(3,), progress=progress)
    only78 = run_transfer(data, s, keep=(7, 8), progress=progress)
    t_sweep = temperature_sweep(base_data, s, known=known_errors(baseline, s), progress=progress)
    results = assemble(s, data, baseline, no3, only78, t_sweep, base_data)
    results["wall_seconds"] = time.perf_counter() - start
    return results


def to_markdown(table: pd.DataFrame) -> str:
    """A pipe table for reports and READMEs (pandas needs the optional tabulate for this). Notebook 07."""
    cells = [[str(c) for c in table.columns]] + [[str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join([lines[0], "|" + "---|" * len(table.columns), *lines[1:]])
