"""Figures of the generative half of the course (matplotlib, pyplot-free, each returns a Figure).

Introduced in notebook 10_generative_kd; the app's "Generative KD: KL direction" tab shows the same ones.
"""
from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from kd_lessons.plots import _figure

__all__ = ["fit_label", "kl_direction", "beta_sweep"]

_COLORS = {"forward": "#1f77b4", "reverse": "#d62728", "jsd": "#2ca02c"}


def fit_label(fit) -> str:
    """'forward KL', 'reverse KL' or 'JSD(beta=0.5)': how a toy fit is named in legends and tables."""
    return {"forward": "forward KL", "reverse": "reverse KL"}.get(fit.method, f"JSD(beta={fit.beta:g})")


def kl_direction(fits, title: str | None = None) -> Figure:
    """The teacher's two modes (grey) and each fitted one-mode student: covering vs seeking at a glance."""
    fits = [fits] if not isinstance(fits, (list, tuple)) else list(fits)
    if not fits:
        raise ValueError("pass at least one ToyFit (from kd_lessons.generative.toy.fit_student).")
    fig = _figure(7.0, 3.2)
    ax = fig.add_subplot()
    first = fits[0]
    ax.fill_between(first.x, first.teacher_probs, color="#bbbbbb", alpha=0.7, label="teacher (two modes)")
    styles = ["-", "--", ":", "-."]
    for i, fit in enumerate(fits):
        ax.plot(fit.x, fit.student_probs, styles[i % len(styles)], color=_COLORS[fit.method], lw=2,
                label=f"student, {fit_label(fit)}: entropy {fit.entropy:.2f}, between {fit.mass_between:.2f}")
    half = first.separation / 4
    ax.axvspan(-half, half, color="#ffdd88", alpha=0.25, lw=0, label="between the modes")
    ax.set_xlabel("position on the grid (the toy's 'vocabulary')")
    ax.set_ylabel("probability")
    ax.set_title(title or "one-mode student fitted to a two-mode teacher")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def beta_sweep(fits: Sequence) -> Figure:
    """Entropy and mass between the modes against GKD's beta (0 = forward KL, 1 = reverse KL)."""
    fits = list(fits)
    if not fits:
        raise ValueError("pass the fits of kd_lessons.generative.toy.beta_sweep(...).")
    betas = [f.beta for f in fits]
    fig = _figure(7.0, 2.8)
    left, right = fig.subplots(1, 2)
    left.plot(betas, [f.entropy for f in fits], "o-", color="#2ca02c", label="student")
    left.axhline(fits[0].teacher_entropy, color="#888888", ls="--", label="teacher")
    left.set(xlabel="beta", ylabel="entropy (nats)", title="student entropy")
    left.legend(fontsize=8)
    right.plot(betas, [f.mass_between for f in fits], "o-", color="#2ca02c", label="student")
    right.axhline(fits[0].teacher_mass_between, color="#888888", ls="--", label="teacher")
    right.set(xlabel="beta", ylabel="probability", title="mass between the modes")
    right.legend(fontsize=8)
    return fig
