"""What the app's "Generative KD: KL direction" tab shows: the KL-direction toy at the chosen beta.

Introduced in notebook 10_generative_kd (the same toy, with an ipywidgets slider). `render(st)` draws the
tab (app.py runs it as a fragment); this module fits the students (cached per setting by generative.toy),
lays out the curves for a chart the browser draws, and times the redraw where it is computed.
"""
from __future__ import annotations

import time

import altair as alt
import pandas as pd

from kd_lessons.app import page
from kd_lessons.generative import lm_plots, toy

__all__ = ["BETA_STEP", "SEPARATIONS", "WIDTH", "MASS_NOTE", "kl_direction_view", "fit_table", "curve_frame",
           "render"]

BETA_STEP = 0.05
SEPARATIONS = (0.0, 8.0, 0.5)  # min, max, step of the separation slider
WIDTH = 0.6  # the width of each teacher mode (the toy's default); "near a mode" means within 2 widths of it
MASS_NOTE = (f"Mass near a mode = probability within 2 teacher widths (±{2 * WIDTH:g}) of that mode's centre, for "
             "the students and the teacher alike; mass between = the middle half of the gap (|x| < separation / 4). "
             f"When the modes are closer than 4 widths (separation < {4 * WIDTH:g}) the two windows overlap, so "
             "left + right can exceed 1.")


def fit_table(fits) -> pd.DataFrame:
    """One row per fitted student, then the teacher's, every mass with the same windows (MASS_NOTE), rounded."""
    rows = [{"student fitted by": lm_plots.fit_label(f), "mass between the modes": f.mass_between,
             "mass near the left mode": f.mass_near[0], "mass near the right mode": f.mass_near[1],
             "entropy (nats)": f.entropy, "mean": f.mean, "std": f.std} for f in fits]
    first = fits[0]
    rows.append({"student fitted by": "(the teacher)", "mass between the modes": first.teacher_mass_between,
                 "mass near the left mode": first.teacher_mass_near[0],
                 "mass near the right mode": first.teacher_mass_near[1],
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
    fit = toy.fit_student("jsd", beta, separation=separation, width=WIDTH)
    fits = [toy.fit_student("forward", separation=separation, width=WIDTH),
            toy.fit_student("reverse", separation=separation, width=WIDTH), fit] if reference else [fit]
    frame, table = curve_frame(fits), fit_table(fits)
    return {"fit": fit, "fits": fits, "frame": frame, "table": table, "seconds": time.perf_counter() - start}


def render(st) -> None:
    """The "Generative KD: KL direction" tab: sliders, numbers, curves, table. Notebook 10_generative_kd."""
    st.subheader("Generative KD: which way the KL points (notebook 10)")
    st.caption("A one-bump student fitted to a two-bump teacher on a 1-D grid (a softmax, like a next-token "
               "distribution). Forward KL(teacher ‖ student) covers both modes; reverse KL(student ‖ teacher), "
               "MiniLLM's choice, seeks one; GKD's generalized JSD(beta) lies between (0 = forward, 1 = reverse).")
    c1, c2, c3 = st.columns([3, 3, 2], vertical_alignment="bottom")
    beta = c1.slider("beta of the generalized JSD (0 = forward KL, 1 = reverse KL)", 0.0, 1.0, 0.5, BETA_STEP,
                     key="gen_beta")
    low, high, step = SEPARATIONS
    separation = c2.slider("Distance between the teacher's two modes", low, high, 4.0, step, key="gen_separation")
    reference = c3.checkbox("Show forward and reverse KL too", value=True, key="gen_reference")
    view = kl_direction_view(beta, separation, reference)
    fit = view["fit"]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(f"Student entropy, JSD(beta={fit.beta:g})", f"{fit.entropy:.3f} nats",
              help=f"the teacher's: {fit.teacher_entropy:.3f} nats")
    m2.metric("Student mass between the modes", f"{fit.mass_between:.3f}",
              help=f"the teacher's: {fit.teacher_mass_between:.3f}")
    m3.metric("Student mass near the left / right mode", f"{fit.mass_near[0]:.3f} / {fit.mass_near[1]:.3f}",
              help=f"the teacher's, same windows: {fit.teacher_mass_near[0]:.3f} / {fit.teacher_mass_near[1]:.3f} "
                   "(its left mode holds 60% of the mixture, the right one 40%)")
    m4.metric("Redraw time (server)", f"{view['seconds']:.3f} s",
              help="fitting (cached per setting after the first time) and preparing the chart")
    page.cached_chart(st, ("kl direction", beta, separation, reference), lambda: _curves_chart(view["frame"]))
    st.dataframe(view["table"])
    st.caption(MASS_NOTE)


def _curves_chart(frame) -> alt.Chart:
    curves = alt.Chart(frame).encode(x=alt.X("x:Q", title="position on the grid (the toy's vocabulary)"),
                                     y=alt.Y("probability:Q"), color=alt.Color("curve:N", title=None))
    chart = curves.transform_filter(alt.datum.curve == "teacher").mark_area(opacity=0.35) + \
        curves.transform_filter(alt.datum.curve != "teacher").mark_line(strokeWidth=2.5)
    return chart.properties(height=300)
