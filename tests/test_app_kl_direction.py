"""The app's "Generative KD: KL direction" tab under AppTest (quick mode), and its logic without Streamlit.

The tab needs no data and no teacher of its own; the rest of the page still runs, so the quick MNIST
teacher is trained (once, cached) up front as in tests/test_app.py.
"""
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from kd_lessons.app import kl_direction

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TAB = "Generative KD: KL direction"
ENTROPY, BETWEEN, NEAR, REDRAW = ("Student entropy", "Student mass between the modes",
                                  "Student mass near the left / right mode", "Redraw time (server)")


@pytest.fixture(scope="module", autouse=True)
def quick_teacher():
    from kd_lessons.teachers import get_teacher
    from kd_lessons.train import TrainOptions

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KD_QUICK", "1")
        get_teacher("mnist", options=TrainOptions(progress=False))


def _metric(at: AppTest, label_start: str) -> str:
    found = [m.value for m in at.metric if m.label.startswith(label_start)]
    assert found, f"no metric starting with {label_start!r}; have {[m.label for m in at.metric]}"
    return found[0]


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture
def app(monkeypatch, no_grid_job):
    monkeypatch.setenv("KD_QUICK", "1")
    return AppTest.from_file(APP, default_timeout=300).run()


@pytest.fixture
def no_grid_job(monkeypatch):
    """The heatmap job never trains here (this file tests another tab): its future stays pending."""
    from kd_lessons.app import jobs

    monkeypatch.setattr(jobs, "start_grid", lambda *args, **kwargs: jobs.Job("heatmap"))


def test_tab_renders_and_the_beta_slider_moves_the_numbers(app):
    _clean(app)
    assert TAB in [t.label for t in app.tabs]
    assert app.slider(key="gen_beta").value == 0.5
    covering = (_metric(app, ENTROPY), _metric(app, BETWEEN), _metric(app, NEAR))
    assert float(covering[1]) > 0.3                     # beta 0.5: still covering (measured 0.375)
    start = time.perf_counter()
    app.slider(key="gen_beta").set_value(0.9).run()
    seconds = time.perf_counter() - start
    _clean(app)
    seeking = (_metric(app, ENTROPY), _metric(app, BETWEEN), _metric(app, NEAR))
    assert float(seeking[1]) < 0.1 and float(seeking[2].split(" / ")[0]) > 0.9   # one mode (measured 0.054, 0.954)
    assert float(seeking[0].split()[0]) < float(covering[0].split()[0])
    server = float(_metric(app, REDRAW).split()[0])
    print(f"beta 0.5 -> 0.9: whole-page AppTest rerun {seconds:.2f} s, the tab's own redraw {server:.3f} s")
    assert app.dataframe[-1].value.index.tolist() == ["forward KL", "reverse KL", "JSD(beta=0.9)", "(the teacher)"]
    assert kl_direction.MASS_NOTE in [c.value for c in app.caption]  # the tab says what "near a mode" means


def test_separation_and_reference_widgets(app):
    app.slider(key="gen_separation").set_value(0.0).run()
    _clean(app)
    assert float(_metric(app, BETWEEN)) == 0.0          # one merged mode: nothing is between
    app.checkbox(key="gen_reference").uncheck().run()
    _clean(app)
    assert app.dataframe[-1].value.index.tolist() == ["JSD(beta=0.5)", "(the teacher)"]


def test_view_logic_without_streamlit():
    view = kl_direction.kl_direction_view(0.2, separation=5.0)
    assert set(view["frame"]["curve"]) == {"teacher", "student, forward KL", "student, reverse KL",
                                           "student, JSD(beta=0.2)"}
    assert len(view["frame"]) == 4 * 200 and view["seconds"] >= 0
    again = kl_direction.kl_direction_view(0.2, separation=5.0)
    assert again["fit"] is view["fit"]                  # cached: a repeated setting costs no fit
    with pytest.raises(ValueError, match="beta must be a number in"):
        kl_direction.kl_direction_view(2.0)


def _window_mass(probs, x, centre):
    """Mass within 2 teacher widths of centre, computed here from the curve (independent of the toy's code)."""
    return float(probs[np.abs(x - centre) < 2 * kl_direction.WIDTH].sum())


@pytest.mark.parametrize("separation", [1.0, 4.0])
def test_the_table_measures_teacher_and_students_with_the_same_windows(separation):
    view = kl_direction.kl_direction_view(0.5, separation=separation)
    table, fit = view["table"], view["fit"]
    for row, probs in (("(the teacher)", fit.teacher_probs), ("JSD(beta=0.5)", fit.student_probs)):
        for column, centre in (("mass near the left mode", -separation / 2), ("mass near the right mode",
                                                                               separation / 2)):
            assert table.loc[row, column] == pytest.approx(_window_mass(probs, fit.x, centre), abs=1e-3), (row, column)
    teacher = table.loc["(the teacher)", ["mass near the left mode", "mass near the right mode"]].sum()
    if separation < 4 * kl_direction.WIDTH:
        assert teacher > 1.05      # the windows overlap, as MASS_NOTE says (x < 0 / x > 0 would sum to 1)
    else:
        assert teacher <= 1.0 + 1e-9


def test_a_failure_in_the_tab_stays_in_the_tab(monkeypatch, no_grid_job):
    def broken(*args, **kwargs):
        raise ValueError("toy broke")

    monkeypatch.setattr(kl_direction, "kl_direction_view", broken)
    monkeypatch.setenv("KD_QUICK", "1")
    at = AppTest.from_file(APP, default_timeout=300).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Generative KD: KL direction failed" in e.value and "toy broke" in e.value for e in at.error)
    assert any(m.label.startswith("Mean entropy of the soft labels") for m in at.metric)  # the rest still works
