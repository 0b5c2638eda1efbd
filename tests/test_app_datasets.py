"""Every registered dataset through every tab of the app under AppTest (quick mode), including the training paths.

For each name in kd_lessons.datasets.DATASETS the sidebar picks it and the page must render every tab's main
element with no exception and no error box; the Accuracy tab's heatmap is filled in the background and
"train this student now" trains one cell, so a student that does not fit the dataset's images (the 784-input MLP
on 3 x 32 x 32 CIFAR images) fails this test. A dataset that is not fetched on demand comes from its STANDINS
fixture (tests/conftest.py's cifar_standin: CIFAR-10's official layout, synthetic images). The teacher is a
seeded linear stand-in and the grid cells train 5 steps, so this tests the app's wiring per dataset, never its
accuracy.
"""
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from kd_lessons import datasets
from kd_lessons.app import jobs, page
from kd_lessons.runs import grid, tour

pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT, FILL_TIMEOUT = 300, 180
RATIO = "Span / seed spread"
STANDINS = {"cifar10": "cifar_standin"}  # tests/conftest.py fixtures for the datasets not fetched on demand


def _linear_teacher(dataset, options=None, arch=None, recipe_override=None):
    """A seeded linear map of the dataset's own input size: instant, with the right number of classes."""
    info = datasets.get(dataset)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(info.in_features, info.num_classes)).eval()
    return teacher, {"test_accuracy": 0.5, "n_test": 100}


def _problems(at: AppTest) -> list[str]:
    return [e.value for e in at.exception] + [e.value for e in at.error]


def _rerun_until(at: AppTest, done, what: str, timeout: float = FILL_TIMEOUT) -> AppTest:
    deadline = time.monotonic() + timeout
    while not done(at):
        assert not _problems(at), _problems(at)
        assert time.monotonic() < deadline, f"{what} did not finish within {timeout} s"
        time.sleep(0.5)
        at.run()
    return at


@pytest.mark.parametrize("dataset", list(datasets.DATASETS))
def test_every_tab_renders_and_trains_with_every_dataset(dataset, request, monkeypatch, tmp_path, grid_jobs):
    info = datasets.get(dataset)
    monkeypatch.setenv("KD_QUICK", "1")
    if info.on_demand:
        monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # the stand-in teacher's results stay out of the cache
    else:
        assert dataset in STANDINS, f"{dataset} is not fetched on demand: add a stand-in fixture to tests/conftest.py"
        request.getfixturevalue(STANDINS[dataset])  # private data and cache folders holding its files
    monkeypatch.setattr("kd_lessons.teachers.get_teacher", _linear_teacher)
    monkeypatch.setattr(grid, "get_teacher", _linear_teacher)
    monkeypatch.setattr(jobs, "needs_starter", lambda name: False)
    real_recipe = grid.recipe
    monkeypatch.setattr(grid, "recipe", lambda name="mnist", **kw: real_recipe(name, **{**kw, "n_labeled": 50,
                                                                                        "steps": 5}))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    picker = at.selectbox(key="dataset")
    assert info.label in picker.options, (dataset, picker.options)  # the sidebar offers it
    picker.set_value(dataset).run()
    assert not _problems(at), _problems(at)
    _rerun_until(at, lambda a: any(m.label == RATIO for m in a.metric), "the heatmap")  # every cell trained
    at.button(key="train_now").click().run()
    _rerun_until(at, lambda a: "train_request" not in a.session_state, "the queued training")
    at.radio(key="anatomy_student").set_value("last trained student").run()
    assert not _problems(at), _problems(at)

    tabs = {t.label: t for t in at.tabs}
    assert tuple(tabs) == page.TABS
    soft = tabs["Soft labels"]
    assert any(m.label == "Mean entropy of the soft labels" for m in soft.metric)
    n_images = at.slider(key="n_images").value
    assert len(soft.get("vega_lite_chart")) == n_images  # one soft-label chart per image
    captions = [c for image in soft.image for c in image.captions]
    assert len(captions) == n_images and all(c.split(": ", 1)[1] in datasets.class_names(dataset) for c in captions)
    accuracy = tabs["Accuracy"]
    assert accuracy.get("vega_lite_chart") and any(m.label == RATIO for m in accuracy.metric)  # heatmap, seed spread
    assert any(m.label.startswith("Distilled student (T=4, alpha=0.9)") for m in accuracy.metric)
    rec = grid.recipe(dataset, student_width=100)
    assert rec.dataset == dataset and len(grid.load(rec)) >= 4  # the quick 2 x 2 grid, on this dataset
    loss = tabs["Loss anatomy"]
    assert any(m.label == "Total loss" for m in loss.metric)
    compare = tabs["Compare"]
    assert any(m.label == "Mean entropy at T = 1" for m in compare.metric)
    assert len(compare.image) == n_images  # each image once, ...
    assert len(compare.get("vega_lite_chart")) == 2 * n_images  # ... with its soft-label bars at both temperatures
    methods = tabs["Methods"]
    assert [s.value for s in methods.subheader] == ["Methods tour: one teacher, one student, one budget (notebook 11)"]
    tour_dataset = tour.recipe().dataset
    if dataset == tour_dataset:  # the tour's dataset: its settings caption and its button
        assert any("do not apply here" in c.value for c in methods.caption)
        assert any(b.key == "tour_train" for b in methods.button)
    else:
        assert any(f"The methods tour runs on {datasets.get(tour_dataset).label}" in i.value for i in methods.info)
    assert any(m.label.startswith("Student entropy") for m in tabs["Generative KD: KL direction"].metric)
    assert "def kd_loss" in tabs["Code"].code[0].value
