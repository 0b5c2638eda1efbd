"""The lessons' own figures: soft labels, temperature, attention maps, the Hinton et al. sweeps.

Introduced in notebook 01_soft_vs_hard_labels. Every function returns a `matplotlib.figure.Figure`
built without pyplot (no global state, no plt.show()), so Jupyter displays it as a cell's value,
Streamlit takes it with `st.pyplot(fig)`, and tests run headless. The chart types that know nothing
about distillation (new_figure, heatmap, line_plot, training_curves, method_bars) are kd_lessons.figures',
re-exported here, so lessons and the app import one module.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from kd_lessons.figures import HeatmapStyle, _figure, _np, heatmap, line_plot, method_bars, new_figure, training_curves
from kd_lessons.losses import entropy

__all__ = ["soft_label_bars", "image_grid", "temperature_bars", "temperature_curves", "heatmap", "HeatmapStyle",
           "similarity_heatmap", "entropy_histograms", "line_plot", "training_curves", "attention_maps",
           "errors_vs_T", "bias_sweep", "method_bars", "new_figure"]


def _entropy(p: np.ndarray) -> float:
    """losses.entropy (nats, 0 log 0 = 0) of a numpy probability vector, as a float for titles."""
    return max(0.0, float(entropy(torch.as_tensor(p, dtype=torch.float64))))  # max: no "-0.00" for one-hot


def _softmax(z: np.ndarray, T: float) -> np.ndarray:
    """Stable softmax(z / T) in float64 for plotting."""
    s = z / T
    e = np.exp(s - s.max())
    return e / e.sum()


def _check_vector(name: str, v: np.ndarray) -> np.ndarray:
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"{name} must be one vector of >= 2 class scores, got shape {list(v.shape)}; "
                         "pass a single row, e.g. probs[0].")
    return v


def _names(class_names, k: int) -> list[str]:
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"got {len(names)} class_names for {k} classes; pass one name per class.")
    return names


def soft_label_bars(probs, label: int, class_names: Sequence[str] | None = None, T: float | None = None,
                    title: str | None = None) -> Figure:
    """A one-hot label beside a soft label, entropy in each title. Introduced in notebook 01_soft_vs_hard_labels.

    Two axes: the hard target (all mass on `label`) and `probs` (e.g. soften(teacher_logits, T)[0]).
    """
    p = _check_vector("probs", _np(probs))
    k = p.size
    if not 0 <= int(label) < k:
        raise ValueError(f"label={label} is not a class index in [0, {k}); pass the true class of this image.")
    names = _names(class_names, k)
    one_hot = np.eye(k)[int(label)]
    fig = _figure(9, 3)
    ax_hard, ax_soft = fig.subplots(1, 2, sharey=True)
    colours = ["tab:red" if i == int(label) else "tab:blue" for i in range(k)]
    ax_hard.bar(names, one_hot, color=colours)
    ax_hard.set_title(f"hard label (one-hot), entropy = {_entropy(one_hot):.2f} nats")
    ax_soft.bar(names, p, color=colours)
    t_text = f" at T = {T:g}" if T is not None else ""
    ax_soft.set_title(f"soft label{t_text}, entropy = {_entropy(p):.2f} nats")
    ax_hard.set_ylabel("probability")
    ax_hard.set_ylim(0, 1.05)
    for ax in (ax_hard, ax_soft):
        ax.tick_params(axis="x", labelrotation=45 if max(map(len, names)) > 2 else 0)
    if title:
        fig.suptitle(title)
    return fig


def image_grid(x, dataset: str, labels: Sequence | None = None, ncols: int = 8, size: float = 1.3) -> Figure:
    """Show normalised images as pixels again (denormalised), one axes each. Notebook 01_soft_vs_hard_labels."""
    from kd_lessons.data import denormalize  # local import: plots stays importable on its own

    if not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) == 0:
        raise ValueError(f"x must be a non-empty [N, C, H, W] tensor, got "
                         f"{list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}; pass x[:16].")
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"got {len(labels)} labels for {len(x)} images; pass one label per image.")
    pixels = denormalize(x.detach().cpu(), dataset).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    n, ncols = len(x), max(1, min(ncols, len(x)))
    nrows = math.ceil(n / ncols)
    fig = _figure(size * ncols, size * nrows + (0.3 * nrows if labels is not None else 0))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            ax.remove()
            continue
        img = pixels[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=9)
    return fig


def temperature_bars(logits, temperatures: Sequence[float], class_names: Sequence[str] | None = None) -> Figure:
    """softmax(logits / T) as bars, one panel per T, entropy in each title. Introduced in notebook 02_temperature."""
    z = _check_vector("logits", _np(logits))
    if len(temperatures) == 0 or min(temperatures) <= 0:
        raise ValueError(f"temperatures must be a non-empty list of T > 0, got {list(temperatures)}.")
    names = _names(class_names, z.size)
    fig = _figure(2.6 * len(temperatures), 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(temperatures), sharey=True))
    for ax, T in zip(axes, temperatures):
        p = _softmax(z, float(T))
        ax.bar(names, p, color="tab:blue")
        ax.set_title(f"T = {T:g}\nH = {_entropy(p):.2f} nats", fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_ylabel("probability")
    return fig


def temperature_curves(logits, temperatures: Sequence[float] | None = None,
                       class_names: Sequence[str] | None = None, mark_T: float | None = None) -> Figure:
    """Each class's probability and the entropy as T varies (log axis). Introduced in notebook 02_temperature.

    Two axes: p_i(T) per class, and H(T) with log(K) (uniform) dashed; mark_T draws a vertical line.
    """
    z = _check_vector("logits", _np(logits))
    temps = np.geomspace(0.1, 100, 200) if temperatures is None else _np(temperatures)
    if temps.size < 2 or temps.min() <= 0:
        raise ValueError(f"temperatures must hold >= 2 values T > 0, got {temps.tolist()}.")
    names = _names(class_names, z.size)
    probs = np.stack([_softmax(z, float(T)) for T in temps])
    fig = _figure(10, 3.5)
    ax_p, ax_h = fig.subplots(1, 2)
    for i, name in enumerate(names):
        ax_p.plot(temps, probs[:, i], label=name)
    ax_p.set(xscale="log", xlabel="temperature T", ylabel="softmax(z / T)_i", title="probability of each class")
    ax_p.legend(fontsize=7, ncols=2)
    ax_h.plot(temps, [_entropy(p) for p in probs], color="black", label="entropy H(T)")
    ax_h.axhline(math.log(z.size), color="grey", linestyle="--", label=f"log K = {math.log(z.size):.2f} (uniform)")
    ax_h.set(xscale="log", xlabel="temperature T", ylabel="nats", title="entropy of softmax(z / T)")
    ax_h.legend(fontsize=8)
    if mark_T is not None:
        for ax in (ax_p, ax_h):
            ax.axvline(mark_T, color="tab:red", linewidth=1)
    return fig


def similarity_heatmap(matrix, class_names: Sequence[str], title: str = "") -> Figure:
    """Row c = the teacher's average soft output on images of class c. Introduced in notebook 01_soft_vs_hard_labels."""
    return heatmap(matrix, class_names, class_names, xlabel="predicted class (soft output)", ylabel="true class",
                   title=title, style=HeatmapStyle(cmap="magma", colorbar_label="mean probability"))


def entropy_histograms(entropies: Mapping[str, object], bins: int = 40, max_entropy: float | None = None) -> Figure:
    """Overlaid histograms of per-sample entropies, one per setting. Introduced in notebook 01_soft_vs_hard_labels."""
    if not entropies:
        raise ValueError("entropies is empty; pass e.g. {'T = 1': h1, 'T = 4': h4}.")
    fig = _figure(7, 3.2)
    ax = fig.subplots()
    top = max_entropy or max(float(_np(h).max()) for h in entropies.values())
    edges = np.linspace(0, top, bins + 1)
    for name, h in entropies.items():
        ax.hist(_np(h), bins=edges, alpha=0.6, label=str(name))
    if max_entropy is not None:
        ax.axvline(max_entropy, color="grey", linestyle="--", label=f"log K = {max_entropy:.2f}")
    ax.set(xlabel="entropy (nats)", ylabel="number of images", yscale="log")
    ax.legend()
    return fig


def attention_maps(maps: Sequence, titles: Sequence[str] | None = None, image=None,
                   dataset: str | None = None) -> Figure:
    """Attention maps side by side (optionally after the input image). Notebook 05_feature_distillation.

    Each map is [H, W] or flattened [H*W] (square); one axes per map, plus one for `image`.
    """
    if len(maps) == 0:
        raise ValueError("maps is empty; pass e.g. [attention_map(f_t)[0], attention_map(f_s)[0]].")
    if titles is not None and len(titles) != len(maps):
        raise ValueError(f"got {len(titles)} titles for {len(maps)} maps; pass one title per map.")
    panels = []
    for m in maps:
        a = _np(m)
        if a.ndim == 1:
            side = math.isqrt(a.size)
            if side * side != a.size:
                raise ValueError(f"a flattened map of {a.size} values is not square; pass it as [H, W].")
            a = a.reshape(side, side)
        if a.ndim != 2:
            raise ValueError(f"each map must be [H, W] or [H*W], got shape {list(a.shape)}.")
        panels.append(a)
    n = len(panels) + (image is not None)
    fig = _figure(2.6 * n, 2.8)
    axes = list(np.atleast_1d(fig.subplots(1, n)))
    if image is not None:
        from kd_lessons.data import denormalize

        img = denormalize(image.detach().cpu(), dataset).clamp(0, 1).permute(1, 2, 0).numpy() if dataset \
            else _np(image)
        ax = axes.pop(0)
        ax.imshow(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img, cmap="gray")
        ax.set_title("input")
        ax.set_axis_off()
    for i, (ax, a) in enumerate(zip(axes, panels)):
        ax.imshow(a, cmap="inferno")
        ax.set_title(titles[i] if titles is not None else f"map {i}")
        ax.set_axis_off()
    return fig


def errors_vs_T(t_sweep) -> Figure:
    """Test errors of the distilled 800-800 net against T. Notebook 07_hinton_2015_reproduction."""
    return line_plot(t_sweep["T"], {"distilled 800-800 (seed 0)": t_sweep["errors"]}, xlabel="T",
                     ylabel="test errors (of 10,000)", title="Errors vs temperature", logx=True)


def bias_sweep(sweep, chosen: float, label: str = "3s", window: tuple = (-2.0, 10.0)) -> Figure:
    """Held-out errors (total and on the shifted classes) vs the bias shift, chosen shift marked. Notebook 07."""
    part = sweep[(sweep["shift"] >= window[0]) & (sweep["shift"] <= window[1])]
    fig = line_plot(part["shift"], {"all held-out errors": part["errors"],
                                    f"errors on held-out {label}": part["errors_on_classes"]},
                    xlabel="bias shift", ylabel="held-out errors", title=f"Bias sweep ({label})")
    fig.axes[0].axvline(chosen, color="k", linestyle="--", label=f"chosen shift {chosen:+.1f}")
    fig.axes[0].legend()
    return fig
