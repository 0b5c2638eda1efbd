"""The Playground tab (issue 25): its data, settings, URL, training and pictures, then the tab under AppTest.

Unit tests first (no Streamlit), then app.py under AppTest in quick mode: presets, the URL round trip, bad
URL parameters, extreme settings, the player and the 5-seed button. Speed is bench/playground_speed.py's job.
"""
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from kd_lessons.app import playground, playground_data, playground_train
from kd_lessons.app.playground_data import DATASETS, PRESETS, Settings, from_query, notes, preset_of, sample, to_query

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 300  # the first run may train the quick teacher of the other tabs


@pytest.mark.parametrize("dataset", DATASETS)
def test_each_data_set_is_balanced_reproducible_and_inside_the_box(dataset):
    x, y = sample(dataset, 0.2, 101, seed=3)
    assert x.shape == (101, 2) and x.dtype == torch.float32 and y.shape == (101,)
    assert int((y == 0).sum()) == 51 and int((y == 1).sum()) == 50
    assert x.abs().max() <= playground_data.BOX
    x2, y2 = sample(dataset, 0.2, 101, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, sample(dataset, 0.2, 101, seed=4)[0])
    assert sample(dataset, 0.0, 0, seed=0)[0].shape == (0, 2)


def test_sample_names_what_is_wrong():
    with pytest.raises(ValueError, match="pick one of"):
        sample("swiss roll", 0.1, 10, 0)
    with pytest.raises(ValueError, match="noise"):
        sample("moons", -0.1, 10, 0)


def test_url_round_trip_and_bad_parameters_give_the_defaults_with_one_line():
    s = Settings(dataset="spirals", noise=0.35, T=0.1, alpha=0.3, labels=50, unlabelled=2000, width=1, seed=17)
    assert from_query(to_query(s)) == (s, None)
    assert from_query({}) == (Settings(), None)
    assert from_query({"embed": "true", "T": ["8"]}) == (Settings(T=8.0), None)
    assert from_query({"labels": "50.0", "alpha": "0.30"}) == (Settings(labels=50, alpha=0.3), None)
    for bad in ({"T": "banana"}, {"T": "7"}, {"labels": "-1"}, {"width": "1e9"}, {"dataset": "mnist"},
                {"seed": "99999"}, {"alpha": "nan"}, {"labels": "20.5"}, {"colour": "red", "T": "2"}):
        got, notice = from_query(bad)
        assert got == Settings(), bad
        assert notice and "\n" not in notice and "opened the defaults" in notice, notice


def test_every_preset_is_recognised_and_says_what_to_see():
    assert list(PRESETS) == ["KD pays", "T too low", "alpha = 0 is scratch", "student too small", "noisy teacher"]
    assert PRESETS["KD pays"][0] == {"labels": 20, "unlabelled": 500}
    for name, (changes, sentence) in PRESETS.items():
        assert preset_of(dataclasses.replace(Settings(**changes), seed=5)) == name
        assert sentence.endswith(".") and sentence.count(". ") == 0, sentence  # one sentence
    assert preset_of(Settings(width=16)) is None


def test_extreme_settings_are_explained():
    assert notes(Settings()) == []
    for s, word in [(Settings(labels=0), "0 labels"), (Settings(width=1), "1 hidden unit"), (Settings(T=0.1), "hard"),
                    (Settings(T=20.0), "50/50"), (Settings(alpha=0.0), "alpha = 0"),
                    (Settings(unlabelled=0), "No unlabelled")]:
        assert any(word in line for line in notes(s)), (s, notes(s))


@pytest.fixture(scope="module")
def teacher():
    return playground_train.train_teacher("moons", 0.2)


def test_teacher_is_good_and_cached(teacher):
    assert teacher.accuracy > 0.9
    assert playground_train.train_teacher("moons", 0.2) is teacher
    assert teacher.grid_logits.shape == (playground_data.GRID ** 2, 2)


def test_both_students_start_alike_and_alpha_0_trains_the_distilled_one_as_scratch(teacher):
    run = playground_train.train_students(Settings(alpha=0.0), teacher)
    assert len(run.snapshots) == playground_train.STEPS // playground_train.EVERY + 1
    weights, _ = run.snapshots[0]
    assert all(torch.equal(w[0], w[1]) for w in weights)  # one initialisation for both
    x = playground_data.grid_points()[:500]
    out = run.logits(x)
    assert torch.allclose(out[0], out[1], atol=1e-5)
    assert run.test_accuracy[-1][0] == pytest.approx(run.test_accuracy[-1][1], abs=0.002)
    assert not torch.equal(run.logits(x, 0), out)  # it did train


def test_a_setting_trains_the_same_students_every_time_and_leaves_the_global_seed_alone(teacher):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    first = playground_train.train_students(Settings(seed=2), teacher)
    assert torch.equal(torch.rand(3), expected)  # the sessions of a server train at once: no shared seed
    again = playground_train.train_students(Settings(seed=2), teacher)
    assert first.test_accuracy == again.test_accuracy
    assert torch.equal(first.logits(first.x_lab), again.logits(again.x_lab))


@pytest.mark.parametrize("changes", [{"labels": 0}, {"labels": 0, "unlabelled": 0}, {"width": 1}, {"T": 0.1},
                                     {"T": 20.0}, {"alpha": 1.0}, {"labels": 2, "unlabelled": 0}])
def test_extreme_settings_train_to_finite_numbers(teacher, changes):
    run = playground_train.train_students(Settings(**changes), teacher)
    assert np.isfinite(np.array(run.test_loss)).all() and np.isfinite(np.array(run.test_accuracy)).all()
    start, end = run.logits(playground_data.grid_points(), 0), run.logits(playground_data.grid_points())
    if changes.get("labels") == 0:
        assert torch.equal(start[0], end[0])  # nothing to learn from: scratch keeps its start
    if changes == {"labels": 0, "unlabelled": 0}:
        assert torch.equal(start[1], end[1])
    img = playground.picture(playground._probability(end[1]), [(run.x_lab, run.y_lab, 4)])
    assert img.shape == (playground_data.GRID * playground.SCALE,) * 2 + (3,) and img.dtype == np.uint8


def test_picture_draws_the_boundary_and_the_points():
    x = playground_data.grid_points()
    p = (x[:, 0] > 0).float()  # left orange, right blue
    img = playground.picture(p, [(torch.tensor([[-1.0, 1.0]]), torch.tensor([1]), 4)])
    mid = img.shape[1] // 2
    assert (img[:, mid - 1:mid + 2] == 60).all(axis=-1).any(axis=1).all()  # the 0.5 line, top to bottom
    assert img[10, 5, 0] > img[10, 5, 2] and img[10, -5, 2] > img[10, -5, 0]
    row, col = playground._pixels(torch.tensor([[-1.0, 1.0]]))
    assert tuple(img[row[0], col[0]]) == tuple(playground.COLOURS[1].astype(np.uint8))
    assert (playground.picture(p, boundary=False) != 60).any(axis=-1).all()


def test_kd_pays_on_5_seeds_with_an_interval_that_excludes_0(teacher):
    """At the "KD pays" preset the distilled student beats scratch on seeds 0-4 (if not: change the preset)."""
    s = dataclasses.replace(Settings(**PRESETS["KD pays"][0]), seed=0)
    r = playground_train.five_seeds(s, teacher)
    print(f"KD pays, 5 seeds: scratch {r['scratch']}, distilled {r['distilled']}, {r['difference']}")
    assert r["verdict"] == "better" and r["difference"].low > 0


# ---------------------------------------------------------------- the tab in app.py, under AppTest

def _open(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at.run()


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _tab(at: AppTest):
    assert at.tabs[0].label == "Playground"
    return at.tabs[0]


def test_playground_is_the_first_tab_with_four_pictures_and_the_url():
    at = _open()
    _clean(at)
    tab = _tab(at)
    assert len(tab.image) == 4  # teacher, scratch, distilled, soft labels
    assert any(c.value.startswith("**KD pays**") for c in tab.caption)  # the defaults are "KD pays"
    assert dict(at.query_params) == to_query(Settings())


def test_a_link_opens_its_setting_and_moves_write_it_back():
    s = Settings(dataset="circles", noise=0.1, T=2.0, alpha=0.5, labels=10, unlabelled=200, width=4, seed=3)
    at = _open(to_query(s))
    _clean(at)
    assert playground.settings_from_state(at.session_state) == s
    at.select_slider(key="pg_T").set_value(8.0).run()
    _clean(at)
    assert from_query(dict(at.query_params)) == (dataclasses.replace(s, T=8.0), None)


@pytest.mark.parametrize("query", [{"T": "banana"}, {"width": "0"}, {"colour": "red"}, {"labels": "1e99"}])
def test_a_bad_link_opens_the_defaults_with_a_notice(query):
    at = _open(query)
    _clean(at)
    assert playground.settings_from_state(at.session_state) == Settings()
    assert any("opened the defaults" in i.value for i in _tab(at).info)


def test_each_preset_button_sets_its_values_and_its_sentence():
    at = _open()
    for name, (changes, sentence) in PRESETS.items():
        at.button(key=f"pg_preset_{name}").click().run()
        _clean(at)
        assert playground.settings_from_state(at.session_state) == Settings(**changes)
        assert any(c.value == f"**{name}**: {sentence}" for c in _tab(at).caption)


@pytest.mark.parametrize("key, value, word", [("pg_labels", 0, "0 labels"), ("pg_width", 1, "1 hidden unit"),
                                              ("pg_T", 0.1, "hard"), ("pg_T", 20.0, "50/50")])
def test_extreme_settings_draw_pictures_and_say_why(key, value, word):
    at = _open()
    at.select_slider(key=key).set_value(value).run()
    _clean(at)
    tab = _tab(at)
    assert len(tab.image) == 4
    assert any(word in c.value for c in tab.caption)


def _step(at: AppTest) -> str:
    return next(m.value for m in _tab(at).markdown if m.value.startswith("**Step "))


def test_start_step_and_play_move_through_the_training():
    at = _open()
    last = playground_train.STEPS
    assert _step(at).startswith(f"**Step {last} of {last}**")
    at.button(key="pg_reset").click().run()
    assert _step(at).startswith(f"**Step 0 of {last}**")
    at.button(key="pg_step").click().run()
    assert _step(at).startswith(f"**Step {playground_train.EVERY} of {last}**")
    at.button(key="pg_play").click().run()
    _clean(at)
    assert at.session_state["pg_mode"] == "play"
    at.button(key="pg_pause").click().run()
    assert at.session_state["pg_mode"] == "pause"


def test_five_seeds_button_shows_the_paired_difference():
    at = _open()
    at.button(key="pg_five").click().run()
    deadline = time.monotonic() + 120
    while "pg_seeds" not in at.session_state and time.monotonic() < deadline:
        time.sleep(1)
        at.run()
    _clean(at)
    assert at.session_state["pg_seeds"]["result"]["verdict"] == "better"
    assert any(m.value.startswith("**5 seeds**") and "95% interval" in m.value for m in _tab(at).markdown)
