"""Results over seeds, summarised one way: mean and std per method, and paired per-seed differences with a t-interval.

Introduced in notebook 04_distill_mnist. Every study (image students, generative students, reasoning
students, the tour, the synthetic sets) keeps one row per (method, seed); `summarize` and
`paired_differences` are the only code that turns those rows into a claim.
"""
from __future__ import annotations

import pandas as pd

from kd_lessons.stats import mean_interval, t_quantile_975  # re-exported: one t-table

__all__ = ["summarize", "paired_differences", "t_quantile_975"]

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
    difference (NaN for one seed), "interval" (a kd_lessons.stats.Interval), "all_below_zero",
    "all_above_zero"}. Seeds where either is missing are dropped.
    """
    wide = _frame(table).pivot_table(index="seed", columns="method", values=value, aggfunc="first")
    if method not in wide or baseline not in wide:
        raise ValueError(f"need {method!r} and {baseline!r} rows, got methods {list(wide.columns)}")
    diffs = (wide[method] - wide[baseline]).dropna()
    if diffs.empty:
        raise ValueError(f"{method!r} and {baseline!r} share no seed; train both with the same seeds")
    d = mean_interval([float(x) for x in diffs], f"{method} - {baseline}")
    return {"per_seed": {int(s): float(x) for s, x in diffs.items()}, "mean": d.mean,
            "std": float(pd.Series(d.values).std()) if d.n > 1 else float("nan"), "n": d.n,
            "ci95": (d.low, d.high) if d.n > 1 else (float("nan"), float("nan")), "interval": d,
            "all_below_zero": all(x < 0 for x in d.values), "all_above_zero": all(x > 0 for x in d.values)}
