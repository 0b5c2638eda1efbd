"""The Streamlit app under AppTest (quick mode): it runs, its widgets move the numbers, failures stay local.

The default cache is used where possible so the quick teacher is trained once and reused, and the quick
heatmap (which the app fills in a background thread) is filled once. Tests that break things or use a
stand-in teacher get a private KD_CACHE_DIR, and never leave a background job running past the test:
a job still running after monkeypatch's undo would write a stand-in teacher's results into the real cache.
"""
import json
import math
import threading
import time
from pathlib import Path

import pytest
import torch
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from kd_lessons import cache
from kd_lessons.app import accuracy_tab, jobs, panels, soft_tab
from kd_lessons.data import DataUnavailableError, load_tensors
from kd_lessons.runs import grid

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 300       # the first run may train the quick teacher
FILL_TIMEOUT = 120  # the quick heatmap (2 x 2) and its seed spread fill in the background within this
SPAN, SPREAD, RATIO = "Heatmap span (best - worst cell)", "Seed spread (largest std over 3 seeds)", "Span / seed spread"


def _metric(at: AppTest, label_start: str) -> str:
    found = [m.value for m in at.metric if m.label.startswith(label_start)]
    assert found, f"no metric starting with {label_start!r}; have {[m.label for m in at.metric]}"
    return found[0]


def _number(at: AppTest, label_start: str) -> float:
    return float(_metric(at, label_start).split()[0].rstrip("%x"))


def _charts(block, title_start: str = "") -> list[tuple[dict, "object"]]:
    """The Altair charts in a page block: (Vega-Lite spec, its first dataset as a DataFrame), by title."""
    found = []
    for chart in block.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec.get("title", "")
        title = title.get("text", "") if isinstance(title, dict) else title
        if title.startswith(title_start):
            found.append((spec, convert_arrow_bytes_to_pandas_df(chart.proto.datasets[0].data.data)))
    return found


def _tab(at: AppTest, label: str):
    """A tab by its label (the Playground tab came first in issue 25: indices moved)."""
    return next(t for t in at.tabs if t.label == label)


def _heatmap_cells(at: AppTest) -> dict:
    """The Accuracy tab's heatmap as {(T, alpha): accuracy} (NaN: not trained yet; the spec's JSON says null)."""
    charts = _charts(_tab(at, "Accuracy"), "student test accuracy")
    assert len(charts) == 1, f"{len(charts)} heatmaps on the Accuracy tab"
    frame = charts[0][1]
    return {(float(t), float(a)): math.nan if v is None else float(v)
            for t, a, v in zip(frame["T"], frame["alpha"], frame["accuracy"])}


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _wait_for_heatmap(at: AppTest, timeout: float = FILL_TIMEOUT) -> AppTest:
    """Rerun the page until the background heatmap job is done (its seed-spread metrics show)."""
    deadline = time.monotonic() + timeout
    while not any(m.label == RATIO for m in at.metric):
        assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
        assert time.monotonic() < deadline, (f"the heatmap did not fill within {timeout} s; "
                                             f"progress: {[p.text for p in at.progress]}")
        time.sleep(2)
        at.run()
    return at


def _wait_for_training(at: AppTest, request: str = "train_request", timeout: float = TIMEOUT) -> AppTest:
    """Rerun the page until this session's queued "train now" request is done (the page redraws with it)."""
    deadline = time.monotonic() + timeout
    while request in at.session_state:
        assert not at.exception, [e.value for e in at.exception]
        assert time.monotonic() < deadline, f"the queued training did not finish within {timeout} s"
        time.sleep(0.5)
        at.run()
    return at


def _linear_teacher(dataset, options=None, arch=None, recipe_override=None):
    """A stand-in teacher (a seeded linear map): instant, so tests with a private cache need no training."""
    import torch

    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    return teacher, {"test_accuracy": 0.5, "n_test": 10000}


@pytest.fixture
def no_grid_job(monkeypatch):
    """The heatmap job never starts training (its future stays pending); records what it was asked to fill."""
    started = []

    def pending(rec, Ts, alphas, spread_cells=(), spread_seeds=(0, 1, 2)):
        started.append((rec, list(Ts), list(alphas), tuple(spread_cells)))
        return jobs.Job("heatmap")

    monkeypatch.setattr(jobs, "start_grid", pending)
    return started


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
    assert [t.label for t in app.tabs] == ["Playground", "Soft labels", "Accuracy", "Loss anatomy", "Compare",
                                           "Methods", "Generative KD: KL direction", "Code"]
    assert 0 <= _number(app, "Mean entropy of the soft labels") <= 2.303  # <= log 10
    assert "def kd_loss" in app.code[0].value
    assert app.selectbox(key="dataset").value == "mnist"
    caption = accuracy_tab.grid_caption(grid.recipe("mnist", student_width=100), accuracy_tab.training_images("mnist"))
    assert caption in [c.value for c in app.caption]
    assert not app.button(key="train_now").disabled
    assert "run_sweep" not in [b.key for b in app.button]  # no sweep button: the heatmap fills itself


def test_heatmap_fills_in_the_background_with_its_seed_spread(app):
    _wait_for_heatmap(app)
    _clean(app)
    assert not app.progress  # filled: no progress bar left
    rec = grid.recipe("mnist", student_width=100)
    table = grid.load(rec)
    Ts, alphas = grid.default_grid()
    assert {(T, a) for T in Ts for a in alphas} <= set(zip(table["T"], table["alpha"]))
    cells = {cell: v for cell, v in _heatmap_cells(app).items() if math.isfinite(v)}  # grey: live cells' gaps
    assert cells == {(t, a): pytest.approx(v) for t, a, v in zip(table["T"], table["alpha"], table["accuracy"])}
    span = _number(app, SPAN)
    assert _metric(app, SPAN).endswith(" points") and math.isfinite(span) and span >= 0
    assert span == pytest.approx(100 * (table["accuracy"].max() - table["accuracy"].min()), abs=0.006)
    spread = grid.spread(rec, grid.SPREAD_CELLS)  # cached by the background job: trains nothing
    assert len(spread) == 2 and set(spread["seeds"]) == {3}
    summary = panels.grid_summary(table, spread)
    assert _metric(app, SPREAD) == f"{summary['spread']:.2f} points"
    assert _metric(app, RATIO) == f"{summary['ratio']:.1f}x"
    app.select_slider(key="T").set_value(4.0)
    app.slider(key="alpha").set_value(0.9).run()
    assert "Red box: the current (T, alpha)." in [c.value for c in app.caption]  # a cell of the quick grid


def test_heatmap_fills_from_an_empty_cache(monkeypatch, tmp_path, grid_jobs):
    """A fresh cache: the page shows progress first, then the filled heatmap (stand-in teacher, 20-step cells)."""
    monkeypatch.setenv("KD_QUICK", "1")
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # stand-in results stay out of the user's cache
    monkeypatch.setattr("kd_lessons.teachers.get_teacher", _linear_teacher)
    monkeypatch.setattr(grid, "get_teacher", _linear_teacher)
    monkeypatch.setattr(jobs, "needs_starter", lambda dataset: False)
    real_recipe = grid.recipe
    monkeypatch.setattr(grid, "recipe", lambda dataset="mnist", **kw: real_recipe(dataset, **{**kw, "n_labeled": 100,
                                                                                          "steps": 20}))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    _clean(at)
    assert any(p.text.startswith("heatmap") for p in at.progress)  # filling, cells cached as they finish
    assert not any(m.label == RATIO for m in at.metric)
    _wait_for_heatmap(at)
    _clean(at)
    assert all(math.isfinite(v) for v in _heatmap_cells(at).values()) and math.isfinite(_number(at, SPAN))
    assert len(grid_jobs) == 1  # one job, reused by every rerun
    rec = grid.recipe("mnist", student_width=100)
    assert len(grid.load(rec)) == 4 and grid.path(rec).is_relative_to(tmp_path)
    for seed in (1, 2):  # the spread's other seeds, at its two cells
        assert sorted(zip(grid.load(rec.replace(seed=seed))["T"], grid.load(rec.replace(seed=seed))["alpha"])) == \
            sorted(grid.SPREAD_CELLS, key=lambda c: (c[0], c[1]))


@pytest.mark.parametrize("quick", ["1", "0"])
def test_grid_caption_says_how_many_labels_the_student_keeps_of_how_many_images(monkeypatch, quick):
    monkeypatch.setenv("KD_QUICK", quick)
    rec = grid.recipe("mnist", student_width=100)
    n_train = len(load_tensors("mnist", train=True)[1])
    caption = accuracy_tab.grid_caption(rec, accuracy_tab.training_images("mnist"))
    assert n_train == 60000 and "of all training images" not in caption
    if quick == "1":  # 500 labels in a 5,000-image pool
        assert (rec.n_labeled, rec.n_pool) == (500, 5000)
        assert "keeps the labels of 500 of a class-balanced pool of 5,000 training images (of the 60,000)" in caption
    else:  # every training image, 1,000 of them labelled
        assert (rec.n_labeled, rec.n_pool) == (1000, None)
        assert "keeps the labels of 1,000 of the 60,000 training images; the teacher labels the rest" in caption
    assert f"alpha = 0: no teacher, the {rec.n_labeled:,} labelled images alone" in caption
    unknown = accuracy_tab.grid_caption(rec, None)  # the data files are missing: no number is made up
    assert "None" not in unknown and "60,000" not in unknown and f"labels of {rec.n_labeled:,} of " in unknown


@pytest.mark.parametrize("quick", ["1", "0"])
def test_heatmap_shows_every_cell_from_the_start_and_each_one_as_it_finishes(monkeypatch, tmp_path, no_grid_job,
                                                                              quick):
    """Issue 28: full mode without prepare-class showed 'starting' and an empty bar for over a minute. The grid is
    drawn at once (grey cells), each cached cell appears on the next redraw, and the bar counts cells."""
    monkeypatch.setenv("KD_QUICK", quick)
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # cells written here stay out of the user's cache
    monkeypatch.setattr("kd_lessons.teachers.get_teacher", _linear_teacher)
    monkeypatch.setattr(jobs, "needs_starter", lambda dataset: False)
    rec = grid.recipe("mnist", student_width=100)
    Ts, alphas = grid.default_grid()
    n = len(Ts) * len(alphas)
    total = n + 2 * len(grid.SPREAD_CELLS)  # the grid, then seeds 1 and 2 at the spread's cells
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    _clean(at)
    assert len(no_grid_job) == 1  # the background job was started (and, here, never trains)
    cells = _heatmap_cells(at)
    assert set(cells) == {(t, a) for t in Ts for a in alphas} and all(math.isnan(v) for v in cells.values())
    bar = _tab(at, "Accuracy").get("progress")
    assert len(bar) == 1 and bar[0].value == 0
    assert bar[0].proto.text.startswith(f"heatmap: 0 of {n} cells trained; training T = {Ts[0]:g}, alpha = 0 "
                                        f"({rec.steps} steps)")
    assert (accuracy_tab.PREPARE_TIP in [c.value for c in at.caption]) == (quick == "0")
    for done, (t, a) in enumerate([(t, a) for a in alphas for t in Ts], 1):  # the job's order: alpha by alpha
        row = {"T": t, "alpha": a, "accuracy": 0.5 + 0.01 * done, "errors": 1, "seconds": 1.0, "source": "grid"}
        grid.add_result(rec, row)
        at.run()
        cells = _heatmap_cells(at)
        assert cells[(t, a)] == pytest.approx(row["accuracy"])  # shown on the redraw after it is cached
        assert sum(math.isfinite(v) for v in cells.values()) == done
        bar = _tab(at, "Accuracy").get("progress")[0]
        assert bar.value == int(100 * done / total), (bar.value, done, total)
        if done < n:
            assert bar.proto.text.startswith(f"heatmap: {done} of {n} cells trained")
    assert bar.proto.text.startswith(f"heatmap done; seed spread: training seed 1 at T = 4, alpha = 0.9 "
                                     f"({2 * len(grid.SPREAD_CELLS)} runs left)")
    _clean(at)


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


def _style(spec: dict) -> dict:
    """A soft-label chart's spec without what differs per image and tab (its data, title and height)."""
    return {k: v for k, v in spec.items() if k not in ("data", "datasets", "title", "height")}


def test_compare_shows_two_temperatures_in_the_soft_label_tabs_chart_style(app):
    app.select_slider(key="cmp_T_left").set_value(1.0)
    app.select_slider(key="cmp_T_right").set_value(8.0).run()
    _clean(app)
    assert _number(app, "Mean entropy at T = 8") > _number(app, "Mean entropy at T = 1")
    soft = _charts(_tab(app, "Soft labels"), "soft label entropy")
    compare = _charts(_tab(app, "Compare"), "soft label entropy")
    n_images = app.slider(key="n_images").value
    assert len(soft) == n_images and len(compare) == 2 * n_images  # each image at the left and the right T
    captions = [c for image in _tab(app, "Compare").image for c in image.captions]  # no matplotlib: a digit a row
    assert len(captions) == n_images and all(c.startswith("#") for c in captions)
    targets = {spec["encoding"]["color"]["scale"]["domain"][1] for spec, _ in compare}
    assert targets == {"soft label (T=1)", "soft label (T=8)"}
    for spec, _ in compare:  # the Soft labels tab's chart: same marks, encodings and colours
        assert spec["encoding"]["color"]["scale"]["range"] == [soft_tab.BASE_COLOUR, soft_tab.MAIN_COLOUR]
        assert json.dumps(_style(spec), sort_keys=True).replace("T=1)", "T=?)").replace("T=8)", "T=?)") == \
            json.dumps(_style(soft[0][0]), sort_keys=True).replace("T=4)", "T=?)")
    pool_probs = [frame[frame["target"] != "one-hot label"]["probability"].to_numpy() for _, frame in compare]
    assert all(p.sum() == pytest.approx(1.0, abs=1e-5) for p in pool_probs)  # each a soft label
    entropy = [float(-(torch.tensor(p) * torch.tensor(p).clamp_min(1e-12).log()).sum()) for p in pool_probs]
    rows = [(compare[2 * i][0], entropy[2 * i], entropy[2 * i + 1]) for i in range(n_images)]  # left, then right
    for spec, low, high in rows:  # the same image is softer at the right's T = 8 than at the left's T = 1
        assert spec["encoding"]["color"]["scale"]["domain"][1] == "soft label (T=1)" and low < high


def test_train_button_yields_an_accuracy_that_joins_the_grid(app):
    _wait_for_heatmap(app)  # the background job is done, so it and the button never write the table at once
    app.select_slider(key="T").set_value(3.0)
    app.slider(key="alpha").set_value(0.7).run()
    app.button(key="train_now").click().run()
    _wait_for_training(app)
    _clean(app)
    student = _number(app, "Distilled student (T=3, alpha=0.7)")
    baseline = _number(app, "From-scratch baseline")
    assert 10 < student <= 100 and 10 < baseline <= 100  # percent, better than chance
    table = grid.load(grid.recipe("mnist", student_width=100))
    row = table[(table["T"] == 3.0) & (table["alpha"] == 0.7)]
    assert len(row) == 1 and row["accuracy"].iloc[0] == pytest.approx(student / 100, abs=1e-4)
    assert row["source"].iloc[0] == "live"
    assert "Red box: the current (T, alpha)." in [c.value for c in app.caption]  # the heatmap shows the new cell
    assert _heatmap_cells(app)[(3.0, 0.7)] == pytest.approx(row["accuracy"].iloc[0])  # the new cell, in the heatmap
    assert len(_tab(app, "Accuracy").image) == 1  # the training curves (the heatmap is a chart)
    history = grid.history_for(grid.recipe("mnist", student_width=100), 3.0, 0.7)
    assert history["step"][-1] == grid.recipe("mnist", student_width=100).steps
    radio = app.radio(key="anatomy_student")
    assert "last trained student" in radio.options
    radio.set_value("last trained student").run()
    _clean(app)


def test_failed_training_run_is_reported(app, monkeypatch):
    _wait_for_heatmap(app)  # the background job must not meet the broken run_one below

    def boom(*args, **kwargs):
        raise RuntimeError("simulated: training diverged")

    monkeypatch.setattr(grid, "run_one", boom)
    app.button(key="train_now").click().run()
    _wait_for_training(app)
    assert not app.exception
    assert any("Accuracy failed" in e.value and "diverged" in e.value for e in app.error)
    assert _number(app, "Mean entropy of the soft labels") > 0
    assert _number(app, "Total loss") > 0


def test_two_sessions_train_one_at_a_time_and_the_second_sees_its_queue_position(monkeypatch, tmp_path, no_grid_job):
    monkeypatch.setenv("KD_QUICK", "1")
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # private grid path, so the queue's keys are this test's own
    monkeypatch.setattr("kd_lessons.teachers.get_teacher", _linear_teacher)
    monkeypatch.setattr(jobs, "needs_starter", lambda dataset: False)
    gate, started = threading.Event(), []

    def gated_cell(rec, T, alpha):
        def work(job):
            started.append((T, alpha))
            job.on_step(1, 4)
            assert gate.wait(60)
            row = {"T": T, "alpha": alpha, "accuracy": 0.5, "errors": 5000, "seconds": 0.1, "source": "live"}
            return {"row": row, "base": {**row, "alpha": 0.0, "accuracy": 0.4}, "student": _linear_teacher("mnist")[0]}
        return work

    monkeypatch.setattr(jobs, "train_cell", gated_cell)
    first, second = (AppTest.from_file(APP, default_timeout=TIMEOUT).run() for _ in range(2))
    try:
        first.button(key="train_now").click().run()
        deadline = time.monotonic() + 30
        while not started and time.monotonic() < deadline:
            time.sleep(0.05)
        second.slider(key="alpha").set_value(0.5).run()
        second.button(key="train_now").click().run()
        first.run()
        _clean(first), _clean(second)
        assert any(p.text.startswith("KD T=4, alpha=0.9: step 1/4") for p in first.progress)
        assert any("Queued: 1 training ahead of yours (KD T=4, alpha=0.5)" in i.value for i in second.info)
        assert started == [(4.0, 0.9)]  # the second waits; it does not train beside the first
    finally:
        gate.set()
    _wait_for_training(first), _wait_for_training(second)
    assert started == [(4.0, 0.9), (4.0, 0.5)]
    assert _number(second, "Distilled student (T=4, alpha=0.5)") == 50.0


def test_corrupt_grid_cache_is_reported_and_the_app_keeps_working(monkeypatch, tmp_path, no_grid_job):
    monkeypatch.setenv("KD_QUICK", "1")
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # never write garbage into the user's cache
    monkeypatch.setattr("kd_lessons.teachers.get_teacher", _linear_teacher)
    monkeypatch.setattr(grid, "get_teacher", _linear_teacher)
    monkeypatch.setattr(jobs, "needs_starter", lambda dataset: False)
    path = grid.path(grid.recipe("mnist", student_width=100))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage")
    cache.sidecar(path).write_text('{"sha256": "0"}')
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    _clean(at)
    assert any("rebuilt" in w.value for w in at.warning)
    assert not path.exists()  # deleted, to be rebuilt
    assert _number(at, "Mean entropy of the soft labels") > 0
    assert any(p.text.startswith("heatmap") for p in at.progress)  # and the heatmap starts filling
    assert len(no_grid_job) == 1 and no_grid_job[0][0] == grid.recipe("mnist", student_width=100)


def test_missing_data_is_explained_and_other_panels_still_work(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_QUICK", "1")
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # a fresh cache key, so nothing cached is reused
    missing = DataUnavailableError("Could not load dataset 'mnist' (simulated: offline, no copy)")

    def offline(dataset, *args, **kwargs):  # get_teacher(dataset, arch, ...)
        raise missing

    def failed_grid(rec, Ts, alphas, spread_cells=(), spread_seeds=(0, 1, 2)):
        job = jobs.Job("heatmap")  # as start_grid's job ends when the teacher cannot be had
        job.future.set_exception(missing)
        return job

    monkeypatch.setattr("kd_lessons.teachers.get_teacher", offline)
    monkeypatch.setattr(grid, "get_teacher", offline)
    monkeypatch.setattr(jobs, "start_grid", failed_grid)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    for _ in range(2):  # a rerun retries the failed heatmap job and says the same
        assert not at.exception, [e.value for e in at.exception]
        errors = [e.value for e in at.error]
        assert len(errors) == 3, errors
        assert errors[0].startswith("**Soft labels failed.**") and "make data" in errors[0]
        assert errors[1].startswith("**Accuracy failed.** The dataset is not available") and "make data" in errors[1]
        assert errors[2].startswith("**Methods failed.** The dataset is not available") and "make data" in errors[2]
        no_pool = ("This panel uses the soft-label panel's test images, which could not be loaded: "
                   "see the message there.")
        assert [i.value for i in at.info].count(no_pool) == 2  # Loss anatomy and Compare say why they are empty
        assert "def kd_loss" in at.code[0].value  # the Code panel still renders
        assert any(c.value.startswith("Each cell: an MLP student") for c in at.caption)
        at.run()


def test_full_mode_first_launch_shows_a_starter_teacher_while_the_full_one_trains(monkeypatch, tmp_path, no_grid_job):
    monkeypatch.setenv("KD_QUICK", "0")
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    release = threading.Event()
    calls = []

    def stand_in(dataset, options=None, arch=None, recipe_override=None):  # instant; the full one waits for release
        calls.append((arch, recipe_override))
        if recipe_override is None:
            release.wait(60)
        return _linear_teacher(dataset)

    monkeypatch.setattr("kd_lessons.teachers.get_teacher", stand_in)
    monkeypatch.setattr(grid, "get_teacher", stand_in)
    monkeypatch.setattr(jobs, "needs_starter", lambda dataset: True)
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        _clean(at)
        assert calls[0] == ("cnn", jobs.STARTER_RECIPES["mnist"])
        assert any(m.label.endswith("(starter teacher)") for m in at.metric)
        assert any("starter teacher" in i.value for i in at.info)
        assert any("heatmap" in i.value and "still training" in i.value for i in at.info)
        assert at.button(key="train_now").disabled
        assert no_grid_job == []  # no heatmap is trained with the starter teacher
        release.set()
        time.sleep(1)
        at.run()
        _clean(at)
        assert not any(m.label.endswith("(starter teacher)") for m in at.metric)
        assert not at.button(key="train_now").disabled
        assert len(no_grid_job) == 1
        rec, Ts, alphas, cells = no_grid_job[0]
        assert rec == grid.recipe("mnist", student_width=100) and rec.mode == "full"
        assert (len(Ts), len(alphas)) == (6, 4) and cells == grid.SPREAD_CELLS
    finally:
        release.set()


def test_methods_tab_trains_a_method_and_its_baseline_and_shows_the_table(app):
    from kd_lessons.runs import tour
    from kd_lessons.teachers import get_teacher

    app.select_slider(key="T").set_value(2.0)  # the sidebar's T and alpha do not reach the tour, and it says so
    app.slider(key="alpha").set_value(0.5).run()
    rec = tour.recipe()
    caption = [c.value for c in app.caption if "do not apply here" in c.value]
    assert len(caption) == 1, [c.value for c in app.caption]
    assert f"paper's defaults (T = {rec.T:g}, alpha = {rec.alpha:g}" in caption[0] and (rec.T, rec.alpha) != (2.0, 0.5)
    assert "the sidebar's T = 2 and alpha = 0.5 do not apply here" in caption[0]
    app.selectbox(key="tour_method").set_value("DKD")
    app.number_input(key="tour_seed").set_value(3).run()
    app.button(key="tour_train").click().run()
    _wait_for_training(app, "tour_request")
    _clean(app)
    table = tour.load(rec, get_teacher("mnist", "cnn")[0])  # trained with the tour's own T and alpha
    assert {("DKD", 3), ("scratch", 3)} <= set(zip(table["method"], table["seed"]))
    assert "tour_request" not in app.session_state
    shown = app.dataframe[0].value  # seven short columns that fit the page (issue 28: the table overflowed)
    assert list(shown.columns) == ["method", "family", "accuracy (%)", "seeds", "gain vs scratch (points)",
                                   "gain vs Hinton KD (points)", "seconds per run"]
    shown = shown.set_index("method")
    assert {"DKD", "scratch"} <= set(shown.index) and shown.loc["scratch", "gain vs scratch (points)"] == "—"
    wide = table[table.seed == 3].set_index("method")["accuracy"]
    gain = shown.loc["DKD", "gain vs scratch (points)"]  # '+1.23 (one seed)' or '+1.23 ± 0.45'
    paired = set(table[table.method == "DKD"].seed) & set(table[table.method == "scratch"].seed)
    if paired == {3}:
        assert gain == f"{100 * (wide['DKD'] - wide['scratch']):+.2f} (one seed)"
    else:
        assert " ± " in gain
    charts = _charts(_tab(app, "Methods"), "test errors per method")
    assert len(charts) == 1  # drawn by the browser, from the table this run loaded: a bar for every method
    spec, runs = charts[0]
    assert sorted(zip(runs["method"], runs["seed"])) == sorted(zip(table["method"], table["seed"]))
    assert spec["layer"][0]["encoding"]["y"]["title"] == "test errors"  # a short axis title, nothing cut off
    assert spec["layer"][0]["encoding"]["color"]["scale"]["range"] == [soft_tab.BASE_COLOUR, soft_tab.MAIN_COLOUR]


def test_methods_tab_draws_a_finished_training_in_the_run_that_finds_it(monkeypatch, tmp_path):
    """Issue 28: a bar was briefly missing after training finished. A full run that finds the request done draws
    the table and the chart from the finished result itself; it does not hand over to the fragment (which reruns
    the page) first."""
    from kd_lessons.app import methods_tab
    from kd_lessons.runs import tour

    monkeypatch.setenv("KD_QUICK", "1")
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    teacher = _linear_teacher("mnist")[0]
    rows = [{"method": m, "seed": 0, "accuracy": a, "errors": e, "seconds": 1.0, "device": "cpu"}
            for m, a, e in (("scratch", 0.8, 2000), ("Hinton KD", 0.85, 1500), ("DKD", 0.86, 1400))]
    monkeypatch.setattr(tour, "load", lambda rec, t: __import__("pandas").DataFrame(rows))
    queue = jobs.TrainingQueue(lock_file=False)
    job = queue.submit("k", "DKD, seed 0", lambda job: rows)
    job.future.result(timeout=30)
    handed = []
    shared = type("S", (), {"teacher": lambda self, d, arch: ((teacher, {}), "full"), "queue": queue,
                            "queued": lambda self, request, panel: handed.append(request)})()
    page = _Recorder({"tour_request": {"key": "k"}})
    methods_tab.render(page, shared, "mnist", 4.0, 0.9, busy=False)
    assert handed == [] and "tour_request" not in page.session_state
    assert [name for name, _ in page.calls].count("vega_lite_chart") == 1
    chart = dict(page.calls)["vega_lite_chart"][0]
    data = next(iter(chart["datasets"].values()))
    assert [d["method"] for d in data] == ["scratch", "Hinton KD", "DKD"]
    gate = threading.Event()
    pending = queue.submit("k2", "DKD, seed 1", lambda job: gate.wait(30) and rows)
    page = _Recorder({"tour_request": {"key": "k2"}})
    methods_tab.render(page, shared, "mnist", 4.0, 0.9, busy=False)
    gate.set()
    assert handed == ["tour_request"]  # still training: the fragment shows its progress
    pending.future.result(timeout=30)


class _Recorder:
    """A stand-in for `st`: records each call (name, args); widgets return their default."""

    def __init__(self, state: dict):
        self.session_state, self.calls = dict(state), []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args))
            if name in ("selectbox",):
                return args[1][kwargs.get("index", 0)]
            if name == "number_input":
                return args[3]
            return False
        return call
