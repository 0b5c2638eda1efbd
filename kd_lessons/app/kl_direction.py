"""What the app's "Generative KD: KL direction" tab shows: the KL-direction toy at the chosen beta.

Introduced in notebook 10_generative_kd (the same toy, with an ipywidgets slider). `app.py` only lays out
the widgets; this module fits the students (cached per setting by generative.toy), lays out the curves
for a chart the browser draws, and times the redraw, so the tab's speed is measured where it is computed.
"""
from __future__ import annotations

import time

import pandas as pd

from kd_lessons.generative import lm_plots, toy

__all__ = ["BETA_STEP", "SEPARATIONS", "kl_direction_view", "fit_table", "curve_frame"]

BETA_STEP = 0.05
SEPARATIONS = (0.0, 8.0, 0.5)  # min, max, step of the separation slider


def fit_table(fits) -> pd.DataFrame:
    """One row per fitted student: where its mass went, its entropy, mean and std (rounded for the page)."""
    rows = [{"student fitted by": lm_plots.fit_label(f), "mass between the modes": f.mass_between,
             "mass near the left mode": f.mass_near[0], "mass near the right mode": f.mass_near[1],
             "entropy (nats)": f.entropy, "mean": f.mean, "std": f.std} for f in fits]
    first = fits[0]
    rows.append({"student fitted by": "(the teacher)", "mass between the modes": first.teacher_mass_between,
                 "mass near the left mode": float(first.teacher_probs[first.x < 0].sum()),
                 "mass near the right mode": float(first.teacher_probs[first.x > 0].sum()),
                 "entropy (nats)": first.teacher_entropy, "mean": float((first.teacher_probs * first.x).sum()),
                 "std": float("nan")})
    return pd.DataFrame(rows).set_index("student fitted by").round(3)


def curve_frame(fits) -> pd.DataFrame:
    """Long form (x, probability, curve) of the teacher and each student, for a chart drawn in the browser."""
    first = fits[0]
    parts = [pd.DataFrame({"x": first.x, "probability": first.teacher_probs, "curve": "teacher"})]
    parts += [pd.DataFrame({"x": f.x, "probability": f.student_probs, "curve": f"student, {lm_plots.fit_label(f)}"})
              for f in fits]
    return pd.concat(parts, ignore_index=True)


def kl_direction_view(beta: float, separation: float = 4.0, reference: bool = True) -> dict:
    """Fit JSD(beta) (and, with reference=True, forward and reverse KL) and time it. Notebook 10_generative_kd.

    Returns {"fit": the JSD(beta) ToyFit, "fits": all shown, "frame": curve_frame (the browser draws the
    chart, so the server renders no image), "table": fit_table, "seconds": the time of this redraw's
    computation (fits come from the cache after their first use)}.
    """
    start = time.perf_counter()
    fit = toy.fit_student("jsd", beta, separation=separation)
    fits = [toy.fit_student("forward", separation=separation), toy.fit_student("reverse", separation=separation),
            fit] if reference else [fit]
    frame, table = curve_frame(fits), fit_table(fits)
    return {"fit": fit, "fits": fits, "frame": frame, "table": table, "seconds": time.perf_counter() - start}
