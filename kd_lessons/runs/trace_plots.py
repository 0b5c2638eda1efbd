"""The figures of notebook 13_reasoning_distillation: exact match per method, and against the number of traces.

Introduced in notebook 13_reasoning_distillation; the numbers come from runs.trace_students (compare, traces_curve).
"""
from __future__ import annotations

import pandas as pd
from matplotlib.ticker import NullLocator

from kd_lessons.plots import new_figure
from kd_lessons.runs.trace_students import METHODS, summarize

__all__ = ["plot_methods", "plot_curve"]


def plot_methods(table: pd.DataFrame, teacher_accuracy: float | None = None):
    """Bars per method (mean +- std, every seed as a dot), held-out and longer operands. Notebook 13."""
    stats = summarize(table)
    fig = new_figure(8, 3.6)
    ax = fig.subplots()
    x = range(len(stats))
    for shift, col, colour, label in ((-0.2, "held_out", "tab:blue", "held-out, trained length"),
                                      (0.2, "longer", "tab:orange", "longer operands")):
        ax.bar([i + shift for i in x], stats[f"{col}_mean"], 0.4, yerr=stats[f"{col}_std"].fillna(0), color=colour,
               alpha=0.7, capsize=3, label=label)
        for i, method in enumerate(stats.index):
            values = table.loc[table["method"] == method, col]
            ax.plot([i + shift] * len(values), values, "k.", ms=4)
    if teacher_accuracy is not None:
        ax.axhline(teacher_accuracy, color="grey", ls="--", lw=1, label="teacher (greedy), held-out")
    ax.set_xticks(list(x), [METHODS[m].split(":")[0] + ": " + m for m in stats.index], rotation=15)
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_curve(curve: pd.DataFrame, label: str = "teacher traces"):
    """Held-out exact match against the number of teacher traces (mean +- std, seeds as dots). Notebook 13."""
    stats = summarize(curve, by="traces")
    fig = new_figure(5, 3.4)
    ax = fig.subplots()
    ax.errorbar(stats.index, stats["held_out_mean"], yerr=stats["held_out_std"].fillna(0), marker="o", capsize=3,
                label=label)
    ax.plot(curve["traces"], curve["held_out"], "k.", ms=4)
    ax.set_xscale("log")
    ax.set_xticks(list(stats.index), [f"{n:,}" for n in stats.index])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("teacher traces sampled")
    ax.set_ylabel("held-out exact match")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    return fig
