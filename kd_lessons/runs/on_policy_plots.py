"""The compute-ledger figure of notebook 15_on_policy_distillation: exact match against each compute measure, per arm.

Introduced in notebook 15_on_policy_distillation; the rows come from runs.on_policy.compare (its curves).
"""
from __future__ import annotations

import pandas as pd

from kd_lessons.plots import new_figure

__all__ = ["MEASURES", "ledger_table", "plot_ledger"]

MEASURES = {"grad_steps": "gradient steps", "student_tokens": "student tokens sampled",
            "teacher_tokens": "teacher tokens (sampled + scored)", "seconds": "wall seconds (no evaluation)"}


def ledger_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of validation exact match and of every compute measure, per arm and round. Notebook 15."""
    need = {"arm", "seed", "round", "val", "grad_steps", "student_tokens", "teacher_sampled", "teacher_scored",
            "seconds"}
    if not need <= set(curves.columns):
        raise ValueError(f"pass on_policy.compare(...)'s curves; missing columns {sorted(need - set(curves.columns))}")
    table = curves.assign(teacher_tokens=curves["teacher_sampled"] + curves["teacher_scored"])
    return table.groupby(["arm", "round"], sort=False)[["val", *MEASURES]].mean().reset_index()


def plot_ledger(curves: pd.DataFrame, teacher_accuracy: float | None = None):
    """One panel per compute measure, one line per arm (mean over seeds): the compute ledger. Notebook 15."""
    table = ledger_table(curves)
    fig = new_figure(12, 3.2)
    axes = fig.subplots(1, len(MEASURES), sharey=True)
    for ax, (column, label) in zip(axes, MEASURES.items()):
        for arm, rows in table.groupby("arm", sort=False):
            ax.plot(rows[column], rows["val"], marker="o", ms=3, label=arm)
        if teacher_accuracy is not None:
            ax.axhline(teacher_accuracy, color="grey", ls="--", lw=1, label="teacher")
        ax.set_xlabel(label, fontsize=8)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    axes[0].set_ylabel("validation exact match")
    axes[0].set_ylim(0, 1.05)
    axes[-1].legend(fontsize=7, loc="lower right")
    return fig
