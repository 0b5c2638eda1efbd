"""Figures of the generative half of the course (matplotlib, pyplot-free, each returns a Figure).

Introduced in notebook 10_generative_kd; the app's "Generative KD: KL direction" tab shows the same ones.
"""
from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from kd_lessons.plots import new_figure as _figure

__all__ = ["fit_label", "kl_direction", "beta_sweep", "generated_text", "topk_mass", "topk_sweep", "seq_kd_sizes",
           "loss_curves", "speedups"]

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


def generated_text(table, references, methods: Sequence[str], x: str = "teacher_bpc_of_samples",
                   y: str = "word_share") -> Figure:
    """What each student writes, one dot per seed, with the teacher's and the real text's as stars. Notebook 10."""
    missing = {"method", x, y} - set(table.columns)
    if missing:
        raise ValueError(f"the table lacks columns {sorted(missing)}; pass pd.DataFrame(run(...)['table'])")
    fig = _figure(7.0, 3.4)
    ax = fig.add_subplot()
    for m in methods:
        rows = table[table["method"] == m]
        ax.plot(rows[x], rows[y], "o", label=m)
    for name, row in references.iterrows():
        ax.plot(row[x], row[y], "k*", markersize=10)
        ax.annotate(name, (row[x], row[y]), fontsize=8)
    ax.set(xlabel="teacher's bits/char of the samples (lower = the teacher finds them likely)",
           ylabel="share of words found in the training text", title="what the students write (dots = seeds)")
    ax.legend(fontsize=7)
    return fig


def topk_mass(mass: dict) -> Figure:
    """The teacher's probability mass inside its top k, against k (log axis). Notebook 10_generative_kd."""
    if not mass:
        raise ValueError("pass {k: mean top-k mass}, e.g. from divergences.topk_mass")
    fig = _figure(5.5, 3.0)
    ax = fig.add_subplot()
    ax.semilogx(list(mass), list(mass.values()), "o-")
    ax.set(xlabel="k", ylabel="teacher mass in its top k (held out)", title="what an API's top-k shows")
    return fig


def topk_sweep(sweep, baseline: float | None = None, value: str = "val_bpc", title: str = "top-k KD, one seed",
               baseline_label: str = "scratch (same seed)") -> Figure:
    """Held-out bits/char against k, renormalised vs with a rest bucket (one seed). Notebook 10_generative_kd."""
    if not {"k", "renormalize", value} <= set(sweep.columns):
        raise ValueError(f"pass the sweep rows (columns k, renormalize, {value}), got {list(sweep.columns)}")
    fig = _figure(5.5, 3.0)
    ax = fig.add_subplot()
    for renormalize, rows in sweep.sort_values("k").groupby("renormalize"):
        ax.semilogx(rows["k"], rows[value], "o-", label="renormalised" if renormalize else "rest bucket")
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls="--", label=baseline_label)
    ax.set(xlabel="k", ylabel="held-out bits/char", title=title)
    ax.legend(fontsize=8)
    return fig


def seq_kd_sizes(points, token=None, scratch_positions: int | None = None) -> Figure:
    """Seq-KD minus scratch (paired, 95% interval) against its transfer-set size: where is the break-even? Notebook 10.

    points: columns distinct_written, mean, low, high (one row per size); token: token KD - scratch's Interval.
    """
    if not {"distinct_written", "mean", "low", "high"} <= set(points.columns):
        raise ValueError(f"pass columns distinct_written, mean, low, high; got {list(points.columns)}")
    fig = _figure(6.5, 3.2)
    ax = fig.add_subplot()
    x, mean = points["distinct_written"], points["mean"]
    ax.errorbar(x, mean, yerr=[mean - points["low"], points["high"] - mean], fmt="o-", capsize=4,
                label="seq-level KD - scratch (95% interval)")
    ax.set_xscale("log")
    ax.axhline(0.0, color="grey", ls="--", label="scratch (break-even)")
    if token is not None:
        ax.axhspan(token.low, token.high, color="#2ca02c", alpha=0.2, label="token KD - scratch (95% interval)")
    if scratch_positions:
        ax.axvline(scratch_positions, color="#888888", ls=":", label="positions scratch trains on")
    ax.set(xlabel="distinct characters the teacher wrote (log)", ylabel="held-out bits/char, minus scratch",
           title="sequence-level KD with more teacher text (paired per seed)")
    ax.legend(fontsize=7)
    return fig


def loss_curves(curves: dict, title: str, ylabel: str = "loss (nats)") -> Figure:
    """One line per seed of a loss against the step: does it fall? Notebook 16 (index-matched KL trains)."""
    if not curves:
        raise ValueError("pass {seed: [loss per step]}, e.g. from a cross_tokenizer_students run's logs")
    fig = _figure(6.0, 3.0)
    ax = fig.add_subplot()
    for seed, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, lw=1, label=f"seed {seed}")
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return fig


def speedups(speed, drafts: Sequence[str]) -> Figure:
    """Measured (CPU time) and theoretical speedup of speculative decoding against gamma, per draft. Notebook 16."""
    if not {"draft", "gamma", "cpu_speedup", "theoretical_speedup"} <= set(speed.columns):
        raise ValueError("pass speculative_drafts.speed_table(result): columns draft, gamma, cpu_speedup, "
                         "theoretical_speedup")
    fig = _figure(6.5, 3.2)
    ax = fig.add_subplot()
    for i, name in enumerate(drafts):
        rows = speed[speed["draft"] == name].sort_values("gamma")
        line, = ax.plot(rows["gamma"], rows["cpu_speedup"], "o-", label=f"{name}: measured")
        ax.plot(rows["gamma"], rows["theoretical_speedup"], "--", color=line.get_color(), lw=1,
                label="theory (alpha, c)" if i == 0 else None)
    ax.axhline(1.0, color="grey", lw=1, ls=":", label="target alone")
    ax.set(xlabel="gamma (tokens drafted per target call)", ylabel="speedup (CPU time)",
           title="speculative decoding on this CPU: measured vs theory")
    ax.legend(fontsize=7)
    return fig
