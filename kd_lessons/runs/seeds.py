"""Results over seeds, summarised one way: mean and std per method, and paired per-seed differences with a t-interval.

Introduced in notebook 04_distill_mnist. Every study (image students, generative students, reasoning
students, the tour, the synthetic sets) keeps one row per (method, seed); `summarize` and
`paired_differences` are the only code that turns those rows into a claim.
"""
from __future__ import annotations

import math
import statistics

import pandas as pd

__all__ = ["summarize", "paired_differences", "t_quantile_975"]

# Two-sided 95% Student-t quantiles (the 0.975 quantile) for 1..30 degrees of freedom (torch's StudentT has no icdf).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom: a table to 30, Cornish-Fisher above."""
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"df={df!r}: degrees of freedom are a positive integer (seeds - 1)")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def _frame(table) -> pd.DataFrame:
    return table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))


def summarize(table, values=("errors", "accuracy"), by: str = "method") -> pd.DataFrame:
    """Per `by` group: seeds, then mean and sample std of each of `values` (std NaN for one seed). Notebook 04.

    `table`: a DataFrame or a list of row dicts (one per method and seed), in the order methods appear.
    """
    table = _frame(table)
    missing = {by, *values} - set(table.columns)
    if missing:
        raise ValueError(f"the table lacks columns {sorted(missing)}; pass train_students(...).table or another "
                         f"study's per-seed table (this one has {list(table.columns)})")
    g = table.groupby(by, sort=False)
    out = {"seeds": g.size()}
    for v in values:
        out[f"{v}_mean"], out[f"{v}_std"] = g[v].mean(), g[v].std()
    return pd.DataFrame(out)


def paired_differences(table, method: str, baseline: str = "scratch", value: str = "errors") -> dict:
    """Per-seed `method - baseline` differences of `value`: what 'A beats B' rests on. Notebook 04_distill_mnist.

    Returns {"per_seed": {seed: diff}, "mean", "std", "n", "ci95": (low, high) the 95% t-interval of the mean
    difference (NaN for one seed), "all_below_zero", "all_above_zero"}. Seeds where either is missing are dropped.
    """
    wide = _frame(table).pivot_table(index="seed", columns="method", values=value, aggfunc="first")
    if method not in wide or baseline not in wide:
        raise ValueError(f"need {method!r} and {baseline!r} rows, got methods {list(wide.columns)}")
    diffs = (wide[method] - wide[baseline]).dropna()
    if diffs.empty:
        raise ValueError(f"{method!r} and {baseline!r} share no seed; train both with the same seeds")
    d = [float(x) for x in diffs]
    mean = statistics.fmean(d)
    std = statistics.stdev(d) if len(d) > 1 else float("nan")
    half = t_quantile_975(len(d) - 1) * std / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"per_seed": {int(s): float(x) for s, x in diffs.items()}, "mean": mean, "std": std, "n": len(d),
            "ci95": (mean - half, mean + half), "all_below_zero": all(x < 0 for x in d),
            "all_above_zero": all(x > 0 for x in d)}
