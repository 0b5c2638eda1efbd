"""The Playground tab's 2-D data sets, its settings, presets and URL parameters (no Streamlit, no scikit-learn).

Introduced in notebook 00_start_here (the app tour's first tab). Five two-class problems in the square
[-BOX, BOX]^2, each class drawn by construction (so n points hold n // 2 of each, the odd one in class 0),
with Gaussian noise of std `noise` on the coordinates. Settings is what the URL holds; from_query turns a
URL's parameters into Settings, or the defaults plus a one-line notice when any is unknown or out of range.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

__all__ = ["DATASETS", "BOX", "GRID", "grid_points", "sample", "Settings", "OPTIONS", "PRESETS", "from_query",
           "to_query", "notes", "preset_of"]

BOX, GRID = 1.8, 120  # the pictures show [-BOX, BOX]^2, the field computed on GRID x GRID points
DATASETS = ("moons", "circles", "spirals", "xor", "blobs")


def _moons(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    t = torch.rand(len(y), generator=g) * math.pi
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where(y[:, None] == 0, upper, lower)
    return (x - torch.tensor([0.5, 0.25])) * 1.1


def _circles(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    t = torch.rand(len(y), generator=g) * 2 * math.pi
    r = torch.where(y == 0, 1.3, 0.6)
    return torch.stack([r * torch.cos(t), r * torch.sin(t)], 1)


def _spirals(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    s = torch.rand(len(y), generator=g).sqrt()  # uniform along the arm's area
    angle = 3 * math.pi * s + math.pi * y
    r = 0.15 + 1.35 * s
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], 1)


def _xor(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = torch.rand(len(y), 2, generator=g) * 1.3 + 0.1  # in the first quadrant, away from the axes
    flip = torch.rand(len(y), generator=g) < 0.5  # class 1: (+,+) or (-,-); class 0: (+,-) or (-,+)
    sx = torch.where(flip, -1.0, 1.0)
    sy = torch.where(y == 1, sx, -sx)
    return x * torch.stack([sx, sy], 1)


def _blobs(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    centre = torch.where(y[:, None] == 0, torch.tensor([-0.6, 0.5]), torch.tensor([0.6, -0.5]))
    return centre + 0.35 * torch.randn(len(y), 2, generator=g)


def grid_points() -> torch.Tensor:
    """[GRID * GRID, 2]: the field's points, row by row from the top (y = BOX) down, left to right."""
    xs = torch.linspace(-BOX, BOX, GRID)
    gy, gx = torch.meshgrid(xs.flip(0), xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


_MAKERS = {"moons": _moons, "circles": _circles, "spirals": _spirals, "xor": _xor, "blobs": _blobs}


def sample(dataset: str, noise: float, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [n, 2] float32, y [n] int64): n points of a data set, balanced by class, reproducible from seed."""
    if dataset not in _MAKERS:
        raise ValueError(f"dataset={dataset!r}: pick one of {DATASETS}")
    if n < 0 or not noise >= 0:
        raise ValueError(f"n={n}, noise={noise}: need n >= 0 and noise >= 0")
    g = torch.Generator().manual_seed(int(seed))
    y = torch.arange(n) % 2
    y = y[torch.randperm(n, generator=g)]
    x = _MAKERS[dataset](y, g) + noise * torch.randn(n, 2, generator=g)
    return x.float().clamp(-BOX, BOX), y


# ---------------------------------------------------------------- settings, presets, URL

OPTIONS = {  # URL name -> the values its widget offers
    "dataset": DATASETS,
    "noise": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
    "T": (0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 10.0, 20.0),
    "alpha": tuple(round(0.1 * i, 1) for i in range(11)),
    "labels": (0, 2, 4, 6, 10, 20, 50, 100, 200),
    "unlabelled": (0, 50, 100, 200, 500, 1000, 2000),
    "width": (1, 2, 3, 4, 6, 8, 16, 32),
}


@dataclass(frozen=True)
class Settings:
    """One playground setting: what the URL holds and what keys the cached teacher and students."""

    dataset: str = "moons"
    noise: float = 0.2
    T: float = 4.0
    alpha: float = 0.9
    labels: int = 20
    unlabelled: int = 500
    width: int = 8
    seed: int = 0

    def key(self) -> str:
        return "&".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())


PRESETS = {  # name -> (changes from the defaults, what to see)
    "KD pays": ({"labels": 20, "unlabelled": 500},
                "20 labels are too few for the scratch student; the teacher's soft labels on 500 unlabelled points "
                "give the distilled one the teacher's shape."),
    "T too low": ({"T": 0.1},
                  "At T = 0.1 the soft-label view turns into two flat colours: the teacher hands over hard labels, "
                  "its boundary without its confidence."),
    "alpha = 0 is scratch": ({"alpha": 0.0},
                             "With no weight on the teacher's term the distilled student is trained exactly like the "
                             "scratch one: same start, same labels, the same picture."),
    "student too small": ({"width": 1},
                          "One hidden unit per layer cannot bend around the moons: no teacher makes up for a student "
                          "that cannot draw the shape."),
    "noisy teacher": ({"noise": 0.5},
                      "At noise 0.5 the classes overlap and the teacher is often wrong near the boundary: the "
                      "distilled student copies its shape, doubts and mistakes, and ends near the teacher's accuracy."),
}


def preset_of(s: Settings) -> str | None:
    """The preset whose settings these are (seed aside), or None."""
    for name, (changes, _) in PRESETS.items():
        if dataclasses.replace(Settings(**changes), seed=s.seed) == s:
            return name
    return None


def _parse(name: str, raw: str):
    if name == "seed":
        value = int(raw)
        if not 0 <= value <= 9999:
            raise ValueError
        return value
    options = OPTIONS[name]
    if name == "dataset":
        value = raw
    else:  # a number: the option it equals (20.5 labels is no option, nor is nan)
        value = next((o for o in options if math.isclose(o, float(raw))), None)
    if value not in options:
        raise ValueError
    return value


IGNORED = ("embed", "embed_options")  # Streamlit's own URL parameters


def from_query(params: dict) -> tuple[Settings, str | None]:
    """(Settings, notice): the URL's settings, or the defaults and one line naming what was wrong."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    values, bad = {}, []
    for name, raw in params.items():
        if name in IGNORED:
            continue
        raw = raw[-1] if isinstance(raw, list) else raw
        if name not in fields:
            bad.append(f"unknown `{name}`")
            continue
        try:
            values[name] = _parse(name, str(raw))
        except (ValueError, OverflowError):
            bad.append(f"`{name}={str(raw)[:20]}`")
    if bad:
        return Settings(), f"The link's {', '.join(bad[:4])} is not a playground setting: opened the defaults."
    return Settings(**values), None


def to_query(s: Settings) -> dict:
    """The URL parameters of a setting (what from_query reads back)."""
    return {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in dataclasses.asdict(s).items()}


def notes(s: Settings) -> list[str]:
    """Short explanations of extreme settings, shown under the pictures."""
    out = []
    if s.labels == 0:
        out.append("0 labels: the scratch student has nothing to learn from and keeps its random start; the "
                   "distilled one learns from the teacher's soft labels alone." if s.unlabelled and s.alpha else
                   "0 labels: the scratch student keeps its random start, and so does the distilled one (it has "
                   "no unlabelled points or no weight on the teacher).")
    if s.width == 1:
        out.append("1 hidden unit per layer: each student's boundary is one bent line at most.")
    if s.T <= 0.2:
        out.append(f"T = {s.T:g}: the teacher's soft labels are practically hard 0/1 labels.")
    if s.T >= 10:
        out.append(f"T = {s.T:g}: the soft labels are close to 50/50 everywhere; the T^2 factor of the KD loss keeps "
                   "their gradient, so the student still matches the teacher's logits.")
    if s.alpha == 0:
        out.append("alpha = 0: the teacher's term has no weight; the distilled student is the scratch one.")
    elif s.alpha == 1 and s.labels:
        out.append("alpha = 1: the labels get no weight; the distilled student learns from the teacher only.")
    if s.unlabelled == 0 and s.labels and s.alpha:
        out.append("No unlabelled points: the teacher's soft labels cover the few labelled points only.")
    return out
