"""The Streamlit app under AppTest (quick mode): it runs, its widgets move the numbers, failures stay local.

The default cache is used where possible so the quick teacher is trained once and reused; the tests
that break things get a private KD_CACHE_DIR.
"""
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kd_lessons import cache
from kd_lessons.data import DataUnavailableError
from kd_lessons.runs import grid

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 300  # the first run may train the quick teacher


def _metric(at: AppTest, label_start: str) -> str:
    found = [m.value for m in at.metric if m.label.startswith(label_start)]
    assert found, f"no metric starting with {label_start!r}; have {[m.label for m in at.metric]}"
    return found[0]


def _number(at: AppTest, label_start: str) -> float:
    return float(_metric(at, label_start).split()[0].rstrip("%"))


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture(scope="module", autouse=True)
def quick_teacher():
    """Train (once, then cached) the quick teacher up front, so the app does not start with a starter teacher."""
    from kd_lessons.teachers import get_teacher
    from kd_lessons.train import TrainOptions

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KD_QUICK", "1")
        get_teacher("mnist", options=TrainOptions(progress=False))


@pytest.fixture
def app(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    return AppTest.from_file(APP, default_timeout=TIMEOUT).run()


def test_app_runs_with_every_panel(app):
    _clean(app)
    assert app.title[0].value == "Knowledge distillation, live"
    assert [t.label for t in app.tabs] == ["Soft labels", "Accuracy", "Loss anatomy", "Compare", "Code"]
    assert 0 <= _number(app, "Mean entropy of the soft labels") <= 2.303  # <= log 10
    assert "def kd_loss" in app.code[0].value
    assert app.selectbox(key="dataset").value == "mnist"


def test_raising_T_raises_the_shown_entropy(app):
    app.select_slider(key="T").set_value(1.0).run()
    low = _number(app, "Mean entropy of the soft labels")
    app.select_slider(key="T").set_value(20.0).run()
    high = _number(app, "Mean entropy of the soft labels")
    _clean(app)
    assert high > low
    assert app.subheader[0].value.endswith("T = 20")


def test_alpha_trades_the_loss_terms(app):
    app.slider(key="alpha").set_value(0.1).run()
    ce, kd, total_low = (_number(app, s) for s in ("Cross-entropy", "T² · KL", "Total loss"))
    app.slider(key="alpha").set_value(0.9).run()
    _clean(app)
    assert _number(app, "Cross-entropy") == ce and _number(app, "T² · KL") == kd  # alpha only reweights
    total_high = _number(app, "Total loss")
    assert total_low == pytest.approx(0.1 * kd + 0.9 * ce, abs=2e-3)
    assert total_high == pytest.approx(0.9 * kd + 0.1 * ce, abs=2e-3)
    assert total_high != total_low


def test_compare_shows_two_temperatures(app):
    app.select_slider(key="cmp_T_left").set_value(1.0)
    app.select_slider(key="cmp_T_right").set_value(8.0).run()
    _clean(app)
    assert _number(app, "Mean entropy at T = 8") > _number(app, "Mean entropy at T = 1")


def test_train_button_yields_an_accuracy_that_joins_the_sweep(app):
    app.select_slider(key="T").set_value(3.0)
    app.slider(key="alpha").set_value(0.7).run()
    app.button(key="train_now").click().run()
    _clean(app)
    student = _number(app, "Distilled student (T=3, alpha=0.7)")
    baseline = _number(app, "From-scratch baseline")
    assert 10 < student <= 100 and 10 < baseline <= 100  # percent, better than chance
    table = grid.load(grid.recipe("mnist", 100))
    row = table[(table["T"] == 3.0) & (table["alpha"] == 0.7)]
    assert len(row) == 1 and row["accuracy"].iloc[0] == pytest.approx(student / 100, abs=1e-4)
    assert app.image  # the heatmap and the training curves
    radio = app.radio(key="anatomy_student")
    assert "last trained student" in radio.options
    radio.set_value("last trained student").run()
    _clean(app)


def _linear_teacher(dataset, options=None, recipe_override=None):
    """A stand-in teacher (a seeded linear map): instant, so tests with a private cache need no training."""
    import torch

    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    return teacher, {"test_accuracy": 0.5, "n_test": 10000}


def test_corrupt_grid_cache_is_reported_and_the_app_keeps_working(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_QUICK", "1")
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # never write garbage into the user's cache
    monkeypatch.setattr("kd_lessons.teachers.get_teacher", _linear_teacher)
    path = grid.path(grid.recipe("mnist", 100))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage")
    cache.sidecar(path).write_text('{"sha256": "0"}')
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    _clean(at)
    assert any("rebuilt" in w.value for w in at.warning)
    assert not path.exists()  # deleted, to be rebuilt
    assert _number(at, "Mean entropy of the soft labels") > 0


def test_missing_data_is_explained_and_other_panels_still_work(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_QUICK", "1")
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # a fresh cache key, so nothing cached is reused

    def offline(dataset, **kwargs):
        raise DataUnavailableError(f"Could not load dataset {dataset!r} (simulated: offline, no copy)")

    monkeypatch.setattr("kd_lessons.teachers.get_teacher", offline)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "Soft labels failed" in messages and "make data" in messages
    assert any("No accuracies cached" in i.value for i in at.info)  # the Accuracy panel still renders
    assert "def kd_loss" in at.code[0].value


def test_failed_training_run_is_reported(app, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated: training diverged")

    monkeypatch.setattr(grid, "run_one", boom)
    app.button(key="train_now").click().run()
    assert not app.exception
    assert any("Accuracy failed" in e.value and "diverged" in e.value for e in app.error)
    assert _number(app, "Mean entropy of the soft labels") > 0
    assert _number(app, "Total loss") > 0


def test_sweep_button_fills_the_heatmap_with_the_current_cell_marked(app):
    app.select_slider(key="T").set_value(4.0)
    app.slider(key="alpha").set_value(0.9).run()
    app.button(key="run_sweep").click().run()
    _clean(app)
    Ts, alphas = grid.default_grid()
    table = grid.load_or_run(grid.recipe("mnist", 100), Ts, alphas, progress=False)  # all cached now: no training
    assert len(table) == len(Ts) * len(alphas) and table["accuracy"].between(0, 1).all()
    assert any(c.value == "Red box: the current (T, alpha)." for c in app.caption)


def test_full_mode_first_launch_shows_a_starter_teacher_while_the_full_one_trains(monkeypatch, tmp_path):
    import threading

    from kd_lessons.app import jobs

    monkeypatch.setenv("KD_QUICK", "0")
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    release = threading.Event()

    def stand_in(dataset, options=None, recipe_override=None):  # instant; the full one waits for release
        if recipe_override is None:
            release.wait(60)
        return _linear_teacher(dataset)

    monkeypatch.setattr("kd_lessons.teachers.get_teacher", stand_in)
    monkeypatch.setattr(jobs, "needs_starter", lambda dataset: True)
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        _clean(at)
        assert any(m.label.endswith("(starter teacher)") for m in at.metric)
        assert any("starter teacher" in i.value for i in at.info)
        assert at.button(key="train_now").disabled and at.button(key="run_sweep").disabled
        release.set()
        time.sleep(1)
        at.run()
        _clean(at)
        assert not any(m.label.endswith("(starter teacher)") for m in at.metric)
        assert not at.button(key="train_now").disabled
    finally:
        release.set()
