"""The figures of lesson 17: sample clouds against steps, and distance to the data against steps.

Introduced in lesson 17. Both take the dict of kd_lessons.runs.step_distillation.run / summary and return a
matplotlib Figure drawn without pyplot (kd_lessons.figures.new_figure).
"""
from __future__ import annotations

from matplotlib.figure import Figure

from kd_lessons.figures import _np, new_figure

__all__ = ["plot_clouds", "plot_quality"]

_ROWS = (("teacher", "teacher, no distillation"), ("distilled", "distilled student"),
         ("consistency", "consistency model"))
_COLOURS = {"teacher": "tab:blue", "distilled": "tab:orange", "consistency": "tab:green"}


def plot_clouds(result: dict, steps=None, seed=None) -> Figure:
    """One seed's samples: a column per step count, rows teacher / PD student / consistency. Lesson 17."""
    clouds = result["clouds"][seed if seed is not None else min(result["clouds"])]
    have = sorted({int(name.split("@")[1]) for name in clouds if name.startswith("teacher@")})
    steps = list(steps) if steps is not None else have
    missing = [k for k in steps if k not in have]
    if missing or not steps:
        raise ValueError(f"steps={steps}: the run scored {have}; pick some of those")
    data = _np(clouds["data"])
    arms = [(a, lab) for a, lab in _ROWS if any(name.startswith(a + "@") for name in clouds)]
    fig = new_figure(2.1 * (len(steps) + 1), 2.2 * len(arms))
    axes = fig.subplots(len(arms), len(steps) + 1, sharex=True, sharey=True, squeeze=False)
    axes[0][0].scatter(data[:, 0], data[:, 1], s=2, color="black")
    axes[0][0].set_title("data")
    for row in axes[1:]:
        row[0].axis("off")
    for j, k in enumerate(steps, start=1):
        for i, (arm, label) in enumerate(arms):
            ax = axes[i][j]
            if f"{arm}@{k}" not in clouds:
                ax.text(0.5, 0.5, "the teacher\nitself" if arm == "distilled" and k == max(have) else "not run",
                        ha="center", va="center", transform=ax.transAxes)
                continue
            pts = _np(clouds[f"{arm}@{k}"])
            ax.scatter(pts[:, 0], pts[:, 1], s=2, color=_COLOURS[arm])
            ax.set_title(f"{label}\n{k} step{'s' if k > 1 else ''}", fontsize=8)
    for ax in axes.flat:
        ax.set(xlim=(-2.5, 2.5), ylim=(-2.5, 2.5), xticks=[], yticks=[], aspect="equal")
    return fig


def plot_quality(lines: list[dict], ylabel: str = "sliced Wasserstein-2 to the data") -> Figure:
    """Distance against steps with 95% intervals: undistilled teacher, PD, consistency, the floor. Lesson 17."""
    fig = new_figure(6.5, 3.6)
    ax = fig.subplots()
    labels = {"teacher": "teacher (undistilled)", "distilled": "progressive distillation",
              "consistency": "consistency distillation"}
    for arm, label in labels.items():
        pts = [(ln["steps"], ln[arm]) for ln in lines if ln.get(arm) is not None]
        if pts:
            ks, iv = zip(*pts)
            ax.errorbar(ks, [i.mean for i in iv], yerr=[[i.mean - i.low for i in iv], [i.high - i.mean for i in iv]],
                        marker="o", capsize=3, color=_COLOURS[arm], label=label)
    floor = lines[0]["floor"]
    ax.axhline(floor.mean, color="grey", linestyle="--", label="floor: a second true sample")
    ax.set(xscale="log", xlabel="sampling steps", ylabel=ylabel)
    ax.set_xticks([ln["steps"] for ln in lines], [str(ln["steps"]) for ln in lines])
    ax.set_xticks([], minor=True)
    ax.legend(fontsize=8)
    return fig
