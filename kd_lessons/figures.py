"""The figure every kd_lessons plot draws on, and the chart types that know nothing about distillation.

Introduced in notebook 01_soft_vs_hard_labels. `new_figure` is a `matplotlib.figure.Figure` built without pyplot
(no global state, no plt.show()) that Jupyter shows as a PNG; `line_plot`, `heatmap`, `training_curves` and
`method_bars` draw any numbers on it. kd_lessons.plots builds the lessons' own figures on these and
re-exports them, so `plots.heatmap` and `figures.heatmap` are one function.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["new_figure", "HeatmapStyle", "heatmap", "line_plot", "training_curves", "method_bars"]


class _NotebookFigure(Figure):
    """A Figure that Jupyter shows as a PNG even when pyplot (and its inline backend) was never imported."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def _figure(width: float, height: float) -> Figure:
    """A new pyplot-free figure with constrained layout."""
    return _NotebookFigure(figsize=(width, height), layout="constrained")


def new_figure(width: float, height: float) -> Figure:
    """The figure every kd_lessons plot draws on: shown by Jupyter as a PNG, no pyplot. Notebook 10_generative_kd."""
    return _figure(width, height)


def _np(a) -> np.ndarray:
    """Tensors (any device, with or without grad), lists and arrays -> float numpy array."""
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=float)


@dataclasses.dataclass(frozen=True)
class HeatmapStyle:
    """How a heatmap's cells and colour bar look, apart from what it shows. Notebook 01_soft_vs_hard_labels.

    fmt: the number format written in each cell (annotate=False writes none); cmap: a matplotlib colour map;
    colorbar_label: the colour bar's title.
    """

    fmt: str = ".2f"
    cmap: str = "viridis"
    annotate: bool = True
    colorbar_label: str = ""


def heatmap(values, row_labels: Sequence, col_labels: Sequence, mark: tuple[int, int] | None = None,
            xlabel: str = "", ylabel: str = "", title: str = "", style: HeatmapStyle | None = None) -> Figure:
    """A labelled heatmap with an optional marked cell (e.g. the current T, alpha). Notebook 01_soft_vs_hard_labels.

    Two axes: the map and its colour bar. `mark=(row, col)` outlines that cell in red; `style` (a HeatmapStyle) sets the
    cells' number format, the colour map and the colour bar's label.
    """
    style = HeatmapStyle() if style is None else style
    if not isinstance(style, HeatmapStyle):
        raise ValueError(f"style={style!r}: pass a HeatmapStyle, e.g. "
                         "HeatmapStyle(fmt='.3f', colorbar_label='accuracy')")
    v = _np(values)
    if v.ndim != 2 or v.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values has shape {list(v.shape)} but there are {len(row_labels)} row labels and "
                         f"{len(col_labels)} column labels; pass a [rows, cols] matrix matching both.")
    fig = _figure(1.0 + 0.6 * v.shape[1] + 1.5, 1.0 + 0.5 * v.shape[0])
    ax = fig.subplots()
    im = ax.imshow(v, cmap=style.cmap, aspect="auto")
    fig.colorbar(im, ax=ax, label=style.colorbar_label)
    ax.set_xticks(range(v.shape[1]), [str(c) for c in col_labels])
    ax.set_yticks(range(v.shape[0]), [str(r) for r in row_labels])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if style.annotate:
        finite = v[np.isfinite(v)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for (i, j), value in np.ndenumerate(v):
            ax.text(j, i, format(value, style.fmt), ha="center", va="center", fontsize=7,
                    color="black" if np.isfinite(value) and value > middle else "white")
    if mark is not None:
        i, j = mark
        if not (0 <= i < v.shape[0] and 0 <= j < v.shape[1]):
            raise ValueError(f"mark={mark} is outside the {v.shape[0]}x{v.shape[1]} map; pass (row, col) indices.")
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=3))
    return fig


def line_plot(x, ys: Mapping[str, object], xlabel: str = "", ylabel: str = "", title: str = "",
              logx: bool = False, logy: bool = False) -> Figure:
    """Several named curves over one x (e.g. gradient norm vs T). Introduced in notebook 02_temperature."""
    xs = _np(x)
    fig = _figure(6.5, 3.5)
    ax = fig.subplots()
    for name, y in ys.items():
        yv = _np(y)
        if yv.shape != xs.shape:
            raise ValueError(f"curve {name!r} has {yv.size} points but x has {xs.size}; pass one y per x.")
        ax.plot(xs, yv, marker="o", markersize=3, label=str(name))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xscale="log" if logx else "linear",
           yscale="log" if logy else "linear")
    ax.legend()
    return fig


def training_curves(histories, keys: Sequence[str] = ("train_loss", "val_accuracy")) -> Figure:
    """Loss and accuracy against training steps for one history or {name: history}: the app's training curves."""
    if isinstance(histories, Mapping) and "epoch" in histories:
        histories = {"": histories}
    if not histories:
        raise ValueError("histories is empty; pass fit(...)'s history or {'name': history, ...}.")
    shown = [k for k in keys if any(len(h.get(k, [])) for h in histories.values())]
    if not shown:
        raise ValueError(f"none of {list(keys)} has values in these histories; keys present: "
                         f"{sorted(next(iter(histories.values())))}.")
    fig = _figure(4.5 * len(shown), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(shown)))
    for ax, key in zip(axes, shown):
        for name, h in histories.items():
            values = h.get(key, [])
            if len(values):
                x = h.get("val_step" if key.startswith("val_") else "step") or h.get("epoch") or \
                    list(range(1, len(values) + 1))
                ax.plot(x[:len(values)], values, marker="o", markersize=3, label=name or None)
        steps = all(h.get("step") for h in histories.values())
        ax.set(xlabel="optimizer step" if steps else "epoch", title=key.replace("_", " "))
        if any(name for name in histories):
            ax.legend(fontsize=8)
    return fig


def method_bars(table, value: str = "errors", title: str = "") -> Figure:
    """Mean +- std over seeds per method, each seed a dot: what a comparison rests on. Notebook 04_distill_mnist."""
    if not {"method", "seed", value} <= set(table.columns) or table.empty:
        raise ValueError(f"pass train_students(...).table (columns method, seed, {value}), got {list(table.columns)}")
    names = list(dict.fromkeys(table["method"]))
    groups = [table.loc[table["method"] == m, value].to_numpy(dtype=float) for m in names]
    fig = _figure(1.3 * len(names) + 2.5, 3.4)
    ax = fig.subplots()
    ax.bar(range(len(names)), [g.mean() for g in groups], yerr=[g.std(ddof=1) if len(g) > 1 else 0 for g in groups],
           capsize=4, color="#9ecae1")
    for i, g in enumerate(groups):
        ax.plot(np.full(len(g), i), g, "k.", markersize=5)
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set(ylabel=f"test {value} (mean +- std, dots = seeds)", title=title)
    return fig
