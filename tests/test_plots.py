"""Every figure builds headless (Agg), returns a Figure with the expected panels and rejects bad input."""
import io

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from kd_lessons import figures, plots  # noqa: E402


def _renders(fig: Figure) -> None:
    """A figure is only useful if it draws: save it to PNG in memory."""
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_soft_label_bars_has_hard_and_soft_panels_with_entropy():
    probs = torch.softmax(torch.tensor([5.0, 1.0, 0.0, 2.0]), dim=0)
    fig = plots.soft_label_bars(probs, label=0, class_names=list("abcd"), T=4)
    hard, soft = fig.axes
    assert len(hard.patches) == 4 and len(soft.patches) == 4
    assert [bar.get_height() for bar in hard.patches] == [1.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose([bar.get_height() for bar in soft.patches], probs.numpy(), rtol=1e-6)
    assert "= 0.00 nats" in hard.get_title()  # not "-0.00"
    expected = float(-(probs * probs.log()).sum())
    assert f"{expected:.2f} nats" in soft.get_title() and "T = 4" in soft.get_title()
    _renders(fig)


@pytest.mark.parametrize("bad, message", [(dict(label=7), "not a class index"), (dict(class_names=["a"]),
                                                                                 "one name per class")])
def test_soft_label_bars_rejects_bad_input(bad, message):
    kwargs = dict(probs=torch.tensor([0.5, 0.5]), label=0) | bad
    with pytest.raises(ValueError, match=message):
        plots.soft_label_bars(**kwargs)


def test_image_grid_has_one_axes_per_image():
    x = torch.randn(5, 1, 28, 28)
    fig = plots.image_grid(x, "mnist", labels=list(range(5)), ncols=3)
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes] == ["0", "1", "2", "3", "4"]
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (28, 28) and image.min() >= 0 and image.max() <= 1
    _renders(fig)


def test_image_grid_shows_colour_images():
    fig = plots.image_grid(torch.randn(2, 3, 32, 32), "cifar10")
    assert len(fig.axes) == 2 and fig.axes[0].images[0].get_array().shape == (32, 32, 3)


def test_image_grid_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        plots.image_grid(torch.randn(28, 28), "mnist")


def test_temperature_bars_one_panel_per_T():
    fig = plots.temperature_bars(torch.tensor([3.0, 1.0, 0.2]), [0.5, 1, 4, 20])
    assert len(fig.axes) == 4
    assert all(len(ax.patches) == 3 for ax in fig.axes)
    assert fig.axes[0].get_title().startswith("T = 0.5")
    # higher T, flatter bars: the largest bar shrinks
    tallest = [max(b.get_height() for b in ax.patches) for ax in fig.axes]
    assert tallest == sorted(tallest, reverse=True)
    _renders(fig)


def test_temperature_curves_one_line_per_class_and_entropy():
    fig = plots.temperature_curves(torch.tensor([2.0, 1.0, 0.0, -1.0]), mark_T=4)
    ax_p, ax_h = fig.axes
    assert len(ax_p.lines) == 4 + 1  # four classes and the marker line
    entropy_line = ax_h.lines[0].get_ydata()
    assert np.all(np.diff(entropy_line) >= -1e-12)  # entropy never falls as T grows (distinct logits)
    _renders(fig)


def test_heatmap_marks_the_chosen_cell():
    values = np.arange(12.0).reshape(3, 4)
    fig = plots.heatmap(values, ["a", "b", "c"], [1, 2, 4, 8], mark=(1, 2), title="sweep")
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the map and its colour bar
    assert len(ax.texts) == 12
    marks = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(marks) == 1 and marks[0].get_xy() == (1.5, 0.5)
    _renders(fig)


def test_heatmap_style_sets_format_colours_and_colour_bar():
    values = np.array([[0.12345, 0.5], [0.75, 0.9]])
    fig = plots.heatmap(values, ["a", "b"], ["x", "y"], style=plots.HeatmapStyle(fmt=".3f", cmap="magma",
                                                                                  colorbar_label="accuracy"))
    ax, bar = fig.axes
    assert [t.get_text() for t in ax.texts] == ["0.123", "0.500", "0.750", "0.900"]
    assert ax.images[0].get_cmap().name == "magma" and bar.get_ylabel() == "accuracy"
    default = plots.heatmap(values, ["a", "b"], ["x", "y"])
    assert default.axes[0].texts[0].get_text() == "0.12" and default.axes[0].images[0].get_cmap().name == "viridis"
    assert default.axes[1].get_ylabel() == ""
    quiet = plots.heatmap(values, ["a", "b"], ["x", "y"], style=plots.HeatmapStyle(annotate=False))
    assert not quiet.axes[0].texts
    assert plots.HeatmapStyle is figures.HeatmapStyle and plots.heatmap is figures.heatmap
    with pytest.raises(ValueError, match="pass a HeatmapStyle"):
        plots.heatmap(values, ["a", "b"], ["x", "y"], style={"fmt": ".3f"})
    _renders(fig)


def test_heatmap_rejects_mismatched_labels_and_marks():
    with pytest.raises(ValueError, match="row labels"):
        plots.heatmap(np.zeros((2, 2)), ["a"], ["x", "y"])
    with pytest.raises(ValueError, match="outside the 2x2 map"):
        plots.heatmap(np.zeros((2, 2)), ["a", "b"], ["x", "y"], mark=(2, 0))


def test_similarity_heatmap_is_square_and_annotated():
    fig = plots.similarity_heatmap(np.eye(3), ["x", "y", "z"])
    assert len(fig.axes) == 2 and len(fig.axes[0].texts) == 9
    assert fig.axes[0].images[0].get_cmap().name == "magma" and fig.axes[1].get_ylabel() == "mean probability"
    _renders(fig)


def test_entropy_histograms_one_histogram_per_setting():
    fig = plots.entropy_histograms({"T = 1": torch.rand(100), "T = 4": torch.rand(100) + 1}, bins=10,
                                   max_entropy=2.3)
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.patches) == 2 * 10
    assert len(ax.get_legend().get_texts()) == 3
    _renders(fig)


def test_line_plot_and_length_check():
    fig = plots.line_plot([1, 2, 4], {"a": [1, 2, 3], "b": [3, 2, 1]}, logx=True)
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].get_xscale() == "log"
    _renders(fig)
    with pytest.raises(ValueError, match="one y per x"):
        plots.line_plot([1, 2], {"a": [1, 2, 3]})


def test_training_curves_single_and_many_histories():
    h = {"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.3], "val_accuracy": [0.8, 0.9, 0.95]}
    fig = plots.training_curves(h)
    assert len(fig.axes) == 2 and all(len(ax.lines) == 1 for ax in fig.axes)
    fig = plots.training_curves({"student": h, "distilled": h}, keys=("train_loss", "val_accuracy", "nope"))
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)
    _renders(fig)
    with pytest.raises(ValueError, match="keys present"):
        plots.training_curves(h, keys=("nope",))


def test_attention_maps_side_by_side_with_image():
    maps = [torch.rand(7, 7), torch.rand(49)]
    fig = plots.attention_maps(maps, titles=["teacher", "student"], image=torch.randn(1, 28, 28), dataset="mnist")
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["input", "teacher", "student"]
    assert fig.axes[2].images[0].get_array().shape == (7, 7)
    _renders(fig)
    with pytest.raises(ValueError, match="not square"):
        plots.attention_maps([torch.rand(10)])


def test_figures_do_not_touch_pyplot_state():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.soft_label_bars(torch.tensor([0.9, 0.1]), 0)
    assert plt.get_fignums() == before


def test_figures_show_in_jupyter_without_pyplot():
    """IPython looks for _repr_png_; without it a pyplot-free Figure shows as '<Figure ...>' text."""
    fig = plots.temperature_bars(torch.tensor([1.0, 0.0]), [1, 4])
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_vs_T_one_curve_on_a_log_T_axis():
    t_sweep = {"T": [1.0, 3.0, 8.0, 20.0], "errors": [120, 95, 80, 74]}
    fig = plots.errors_vs_T(t_sweep)
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.lines) == 1 and ax.get_xscale() == "log"
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), t_sweep["T"])
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), t_sweep["errors"])
    assert ax.get_xlabel() == "T" and "test errors" in ax.get_ylabel()
    _renders(fig)


def test_bias_sweep_figure_shows_the_window_and_marks_the_chosen_shift():
    import pandas as pd

    shifts = np.round(np.arange(-5.0, 12.01, 0.5), 2)
    sweep = pd.DataFrame({"shift": shifts, "errors": np.abs(shifts - 3.5) * 10,
                          "errors_on_classes": np.abs(shifts - 3.0) * 5})
    fig = plots.bias_sweep(sweep, chosen=3.5, label="3s")
    ax = fig.axes[0]
    curves, marker = ax.lines[:2], ax.lines[2]
    assert len(ax.lines) == 3
    assert all(min(line.get_xdata()) == -2.0 and max(line.get_xdata()) == 10.0 for line in curves)  # default window
    assert list(marker.get_xdata()) == [3.5, 3.5]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["all held-out errors", "errors on held-out 3s", "chosen shift +3.5"]
    assert ax.get_title() == "Bias sweep (3s)"
    _renders(fig)
    narrow = plots.bias_sweep(sweep, chosen=-1.0, label="7s and 8s", window=(-1.0, 1.0))
    assert len(narrow.axes[0].lines[0].get_xdata()) == 5
    assert "chosen shift -1.0" in [t.get_text() for t in narrow.axes[0].get_legend().get_texts()]


def test_training_curves_plot_against_optimizer_steps():
    h = {"epoch": [1, 2, 3], "step": [40, 80, 120], "train_loss": [1.0, 0.5, 0.3],
         "val_accuracy": [0.9, 0.95], "val_step": [80, 120]}
    fig = plots.training_curves(h)
    loss_ax, acc_ax = fig.axes
    assert list(loss_ax.lines[0].get_xdata()) == [40, 80, 120]
    assert list(acc_ax.lines[0].get_xdata()) == [80, 120] and list(acc_ax.lines[0].get_ydata()) == [0.9, 0.95]
    assert loss_ax.get_xlabel() == acc_ax.get_xlabel() == "optimizer step"
    # two runs with different steps per epoch share one step axis (the app's baseline vs distilled curves)
    other = {"epoch": [1, 2], "step": [60, 120], "train_loss": [0.8, 0.2], "val_accuracy": [0.97], "val_step": [120]}
    fig = plots.training_curves({"baseline": h, "distilled": other})
    assert [list(line.get_xdata()) for line in fig.axes[0].lines] == [[40, 80, 120], [60, 120]]
    _renders(fig)


def test_training_curves_fall_back_to_epochs_without_steps():
    h = {"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.3], "val_accuracy": [0.8, 0.9, 0.95]}
    fig = plots.training_curves(h)
    assert all(list(ax.lines[0].get_xdata()) == [1, 2, 3] for ax in fig.axes)
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)


def test_no_package_module_draws_through_pyplot():
    """Every figure is a plots.new_figure (shown by Jupyter on its own): a pyplot figure hides behind a ';' in
    a site build or nbval run without the inline backend (notebook 13's plots once did)."""
    import pathlib

    import kd_lessons

    root = pathlib.Path(kd_lessons.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if "matplotlib.pyplot" in p.read_text()]
    assert offenders == [], f"use kd_lessons.plots.new_figure instead of pyplot in {offenders}"
