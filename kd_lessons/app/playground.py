"""The "Playground" tab: a student that retrains as the sliders move, beside its twin taught by a teacher.

Introduced in notebook 00_start_here (the app tour's first tab). The widgets live in the tab; their values
go to and come from the URL (st.query_params), so a link opens the same setting. Training is in
playground_train, data and settings in playground_data; here are the pictures (numpy images, no matplotlib:
a redraw must stay well under a second) and the tab's layout. app.py passes `st` and a Tools of its cached
pieces and fragments, so this module never imports Streamlit.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from kd_lessons import losses
from kd_lessons.app import jobs
from kd_lessons.app.playground_data import BOX, GRID, OPTIONS, PRESETS, Settings, from_query, notes, preset_of, to_query
from kd_lessons.app.playground_train import Run, five_seeds, train_students, train_teacher

__all__ = ["Tools", "KEYS", "picture", "init_state", "apply_preset", "settings_from_state", "render", "frame",
           "train_teacher", "train_students"]

SCALE = 2  # pixels per field point: GRID * SCALE pixels a side
COLOURS = np.array([[245, 147, 34], [8, 119, 189]], dtype=np.float32)  # class 0 orange, class 1 blue
KEYS = {name: f"pg_{name}" for name in ("dataset", "noise", "T", "alpha", "labels", "unlabelled", "width", "seed")}
LABELS = {"dataset": "Data set", "noise": "Noise", "T": "Distillation temperature T",
          "alpha": "alpha, the teacher's weight", "labels": "Labelled points",
          "unlabelled": "Unlabelled points", "width": "Student width (units per layer)"}
MODES = ("pause", "play", "slow")


@dataclass(frozen=True)
class Tools:
    """app.py's cached pieces: run(settings) -> Run (cached), players[mode](run) fragments, the training queue."""

    run: Callable[[Settings], Run]
    teacher: Callable[[str, float], Any]
    players: dict
    queue: jobs.TrainingQueue
    queued: Callable[..., None]


# ---------------------------------------------------------------- pictures

def _pixels(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    size = GRID * SCALE
    col = ((x[:, 0].numpy() + BOX) / (2 * BOX) * (size - 1)).round().astype(int)
    row = ((BOX - x[:, 1].numpy()) / (2 * BOX) * (size - 1)).round().astype(int)
    return row, col


def _disc(img: np.ndarray, row, col, radius: int, colour) -> None:
    d = np.arange(-radius, radius + 1)
    dr, dc = np.meshgrid(d, d, indexing="ij")
    keep = dr ** 2 + dc ** 2 <= radius ** 2 + radius // 2
    r = np.clip(row[:, None] + dr[keep][None], 0, img.shape[0] - 1)
    c = np.clip(col[:, None] + dc[keep][None], 0, img.shape[1] - 1)
    img[r, c] = colour if np.ndim(colour) == 1 else np.asarray(colour)[:, None]


def picture(p1: torch.Tensor, points=(), boundary: bool = True) -> np.ndarray:
    """[H, W, 3] uint8: the field coloured by P(class 1) (orange 0 .. blue 1), its 0.5 line, then the points.

    points: (x [n, 2], y [n] or None for grey, radius) tuples, drawn in order with a white rim.
    """
    p = p1.reshape(GRID, GRID).clamp(0, 1).numpy()[..., None]
    rgb = COLOURS[0] * (1 - p) + COLOURS[1] * p
    rgb = 255 - (255 - rgb) * (0.25 + 0.45 * np.abs(2 * p - 1))  # pale where unsure
    if boundary:
        side = p[..., 0] > 0.5
        edge = np.zeros_like(side)
        edge[:-1] |= side[:-1] != side[1:]
        edge[:, :-1] |= side[:, :-1] != side[:, 1:]
        rgb[edge] = 60
    img = np.repeat(np.repeat(rgb, SCALE, 0), SCALE, 1).astype(np.uint8)
    for x, y, radius in points:
        if len(x) == 0:
            continue
        row, col = _pixels(x)
        _disc(img, row, col, radius + 1, np.array([255, 255, 255], np.uint8))
        colour = np.array([70, 70, 70], np.uint8) if y is None else COLOURS[y.numpy()].astype(np.uint8)
        _disc(img, row, col, radius, colour)
    return img


def png_url(img: np.ndarray) -> str:
    """A picture as a data: URL: the browser draws it without fetching a media file (measured: the fetch,
    not the training, was most of a slider move's latency in Chromium)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _probability(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    return losses.soften(logits, T)[..., 1]


# ---------------------------------------------------------------- state: URL, presets, widgets

def init_state(st) -> str | None:
    """First run of a session: the widgets' values from the URL; returns the URL's notice (None when it was fine)."""
    state = st.session_state
    if "pg_started" in state:
        return state.get("pg_notice")
    s, notice = from_query(dict(st.query_params.to_dict()))
    for name, key in KEYS.items():
        state[key] = getattr(s, name)
    state["pg_started"], state["pg_notice"] = True, notice
    return notice


def apply_preset(state, name: str) -> None:
    """A preset button's callback: its settings (the seed kept) into the widgets."""
    s = dataclasses.replace(Settings(**PRESETS[name][0]), seed=state.get(KEYS["seed"], 0))
    for field, key in KEYS.items():
        state[key] = getattr(s, field)


def settings_from_state(state) -> Settings:
    """The widgets' current values as Settings."""
    return Settings(**{name: state[key] for name, key in KEYS.items()})


def _set_mode(state, mode: str, last: int) -> None:
    if mode == "reset":
        state["pg_frame"], state["pg_mode"] = 0, "pause"
        return
    if mode == "step":
        state["pg_frame"], state["pg_mode"] = min(state.get("pg_frame", last) + 1, last), "pause"
        return
    if mode != "pause" and state.get("pg_frame", last) >= last:
        state["pg_frame"] = 0  # play from the start
    state["pg_mode"] = mode


def _widgets(st) -> None:
    row = st.columns(len(PRESETS))
    for col, name in zip(row, PRESETS):
        col.button(name, key=f"pg_preset_{name}", on_click=apply_preset, args=(st.session_state, name),
                   width="stretch")
    top, bottom = st.columns(4), st.columns(4)
    top[0].selectbox(LABELS["dataset"], OPTIONS["dataset"], key=KEYS["dataset"])
    for col, name in zip([*top[1:], *bottom[:3]], ("noise", "T", "alpha", "labels", "unlabelled", "width")):
        col.select_slider(LABELS[name], OPTIONS[name], key=KEYS[name], format_func=lambda v: f"{v:g}")
    bottom[3].number_input("Seed", 0, 9999, step=1, key=KEYS["seed"])


def _player_buttons(st, last: int) -> None:
    cols = st.columns(6)
    for col, (mode, label) in zip(cols, [("reset", "Back to step 0"), ("step", "Step"), ("play", "Play"),
                                         ("slow", "Slow motion"), ("pause", "Pause")]):
        col.button(label, key=f"pg_{mode}", on_click=_set_mode, args=(st.session_state, mode, last),
                   width="stretch")


# ---------------------------------------------------------------- the tab

def render(st, tools: Tools) -> None:
    """The Playground tab: presets, widgets, the four pictures (via a player fragment), notes, 5 seeds."""
    notice = init_state(st)
    if notice:
        st.info(notice)
    _widgets(st)
    s = settings_from_state(st.session_state)
    query = to_query(s)
    if st.query_params.to_dict() != query:
        st.query_params.from_dict(query)
    name = preset_of(s)
    if name:
        st.caption(f"**{name}**: {PRESETS[name][1]}")
    run = tools.run(s)
    last = len(run.snapshots) - 1
    if st.session_state.get("pg_run") != s.key():
        st.session_state.update(pg_run=s.key(), pg_frame=last, pg_mode="pause")
    _player_buttons(st, last)
    tools.players[st.session_state.get("pg_mode", "pause")](run)
    for line in notes(s):
        st.caption(line)
    _seeds(st, tools, s)


def frame(st, run: Run, advance: bool = False) -> None:
    """One frame of the training: teacher, scratch, distilled, the soft labels at T, accuracies, loss curve."""
    state, last = st.session_state, len(run.snapshots) - 1
    i = min(state.get("pg_frame", last), last)
    if advance and state.get("pg_mode") in MODES[1:]:
        if i >= last:
            state["pg_mode"] = "pause"
            st.rerun(scope="app")  # the end of the replay: stop the timer
        i = state["pg_frame"] = i + 1
    s, teacher, acc = run.settings, run.teacher, run.test_accuracy[i]
    captions = [f"Teacher: {teacher.accuracy:.1%} test accuracy", f"Scratch: {acc[0]:.1%}",
                f"Distilled: {acc[1]:.1%} ({100 * (acc[1] - acc[0]):+.1f} points)",
                f"Teacher's soft labels at T = {s.T:g}"]
    st.markdown(f"**Step {run.steps[i]} of {run.steps[-1]}** (Adam, full batch; scratch on {s.labels} labels, "
                f"distilled on them plus {s.unlabelled} unlabelled points, alpha = {s.alpha:g})")
    for col, url, caption in zip(st.columns(4), _urls(run, i), captions):
        col.image(url, caption=caption, width=GRID * SCALE)
    st.caption("Held-out cross-entropy of both students as they train (log scale)")
    st.vega_lite_chart(_loss_spec(run, i), width="stretch")


_URLS: OrderedDict = OrderedDict()  # (setting, frame, picture) -> its data: URL: a page rerun redraws nothing
_URLS_LOCK, URLS_KEEP = threading.Lock(), 256


def _picture(run: Run, i: int, k: int) -> np.ndarray:
    teacher, lab = run.teacher, (run.x_lab, run.y_lab, 4)
    if k == 0:
        return picture(_probability(teacher.grid_logits), [(teacher.x[:300], teacher.y[:300], 2)])
    if k == 3:
        return picture(_probability(teacher.grid_logits, run.settings.T), [(run.x_unlab, None, 1)], boundary=False)
    student = run.logits(_grid(), i)[k - 1]
    return picture(_probability(student), [lab] if k == 1 else [(run.x_unlab, None, 1), lab])


def _urls(run: Run, i: int):
    """The four pictures' data: URLs in order, each made once per server; lazily, so each is sent when made
    (measured: making all four before sending the first drew the distilled one later in Chromium)."""
    for k in range(4):
        key = (run.settings.key(), i, k)
        with _URLS_LOCK:
            url = _URLS.get(key)
            if url is not None:
                _URLS.move_to_end(key)
        if url is None:
            url = png_url(_picture(run, i, k))
            with _URLS_LOCK:
                _URLS[key] = url
                while len(_URLS) > URLS_KEEP:
                    _URLS.popitem(last=False)
        yield url


_GRID_POINTS: list = []


def _grid() -> torch.Tensor:
    if not _GRID_POINTS:
        from kd_lessons.app.playground_data import grid_points
        _GRID_POINTS.append(grid_points())
    return _GRID_POINTS[0]


def _loss_spec(run: Run, i: int) -> dict:
    values = [{"step": step, "student": who, "loss": loss[k]} for step, loss in zip(run.steps[:i + 1],
              run.test_loss[:i + 1]) for k, who in enumerate(("scratch", "distilled"))]
    return {"height": 170, "data": {"values": values},
            "mark": {"type": "line", "point": False},
            "encoding": {"x": {"field": "step", "type": "quantitative", "scale": {"domain": [0, run.steps[-1]]}},
                         "y": {"field": "loss", "type": "quantitative", "title": "test cross-entropy",
                               "scale": {"type": "log"}},
                         "color": {"field": "student", "type": "nominal",
                                   "scale": {"domain": ["scratch", "distilled"], "range": ["#888888", "#0877bd"]}}}}


def _seeds(st, tools: Tools, s: Settings) -> None:
    """The "5 seeds" button (through the app's training queue) and its paired difference with a 95% interval."""
    request = "pg_seeds_request"
    if st.button("5 seeds: rerun this setting on seeds 0-4", key="pg_five"):
        teacher = tools.teacher(s.dataset, s.noise)
        key = ("playground-5-seeds", dataclasses.replace(s, seed=0).key())
        tools.queue.submit(key, "Playground: 5 seeds", lambda job: {"result": five_seeds(s, teacher)})
        st.session_state[request] = {"key": key, "store_as": "pg_seeds",
                                     "meta": {"settings": dataclasses.replace(s, seed=0).key()}}
    if request in st.session_state:
        tools.queued(request, "Playground")
    done = st.session_state.get("pg_seeds")
    if done and done["settings"] == dataclasses.replace(s, seed=0).key():  # seeds 0-4, whatever the seed widget says
        r = done["result"]
        d = r["difference"]
        st.markdown(f"**5 seeds** (new labels, unlabelled and test points, new start each): distilled - scratch "
                    f"test accuracy {100 * d.mean:+.1f} points, 95% interval [{100 * d.low:+.1f}, "
                    f"{100 * d.high:+.1f}] -> **{r['verdict']}** (kd_lessons.stats.paired, t-interval over seeds)")
