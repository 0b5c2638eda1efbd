"""The app's "Loss anatomy" tab: the KD loss of one image split into its hard and soft terms, and over alpha.

Introduced in notebook 00_start_here (the app tour; the loss is notebook 03_kl_loss). Values come in as
parameters; the soft-label tab's test images come in `pool`, the cached untrained student in `shared`.
"""
from __future__ import annotations

import altair as alt
import pandas as pd

from kd_lessons.app import page, panels
from kd_lessons.app.page import NO_POOL, Shared
from kd_lessons.data import class_names

__all__ = ["render"]


def render(st, shared: Shared, dataset: str, width: int, T: float, alpha: float, pool: dict | None,
           shown: list[int]) -> None:
    """The "Loss anatomy" tab, for an untrained student or this session's last trained one. Notebook 03_kl_loss."""
    if pool is None:
        st.info(NO_POOL)
        return
    st.subheader(f"Loss anatomy at T = {T:g}, alpha = {alpha:g}")
    names = class_names(dataset)
    index = st.selectbox("Example", shown, format_func=lambda i: f"#{i} ({names[int(pool['y'][i])]})",
                         key="anatomy_example")
    live = st.session_state.get("live")
    choices = ["untrained student"] + (["last trained student"] if live and live["key"][0] == dataset else [])
    who = st.radio("Student", choices, horizontal=True, key="anatomy_student")
    student = live["student"] if who == "last trained student" else shared.student(dataset, width)
    xb, yb, tb = pool["x"][index:index + 1], pool["y"][index:index + 1], pool["teacher_logits"][index:index + 1]
    zb = panels.student_logits(student, xb)
    parts = panels.loss_anatomy(zb, tb, yb, T, alpha)
    m1, m2, m3 = st.columns(3)
    m1.metric("Cross-entropy with the label (hard)", f"{parts['cross_entropy']:.4f}",
              f"× (1 - alpha) = {parts['weighted_cross_entropy']:.4f}", delta_color="off", delta_arrow="off")
    m2.metric("T² · KL(teacher ‖ student) (soft)", f"{parts['kd']:.4f}",
              f"× alpha = {parts['weighted_kd']:.4f}", delta_color="off", delta_arrow="off")
    m3.metric("Total loss", f"{parts['total']:.4f}")
    key = ("loss anatomy", tuple(zb.flatten().tolist()), tuple(tb.flatten().tolist()), int(yb[0]), T, alpha)
    page.cached_chart(st, key, lambda: _curves_chart(zb, tb, yb, T, alpha))
    st.caption("alpha moves weight from the label's cross-entropy to the teacher's soft term; the dashed line is "
               "the current alpha. Raising T changes the soft term itself (T² keeps its gradients comparable).")


def _curves_chart(zb, tb, yb, T: float, alpha: float) -> alt.Chart:
    curves = panels.loss_vs_alpha(zb, tb, yb, T).rename(columns={
        "weighted_cross_entropy": "(1 - alpha) · CE", "weighted_kd": "alpha · T²·KL", "total": "total"})
    long = curves.melt("alpha", ["(1 - alpha) · CE", "alpha · T²·KL", "total"], var_name="term", value_name="loss")
    lines = alt.Chart(long).mark_line().encode(x="alpha:Q", y="loss:Q", color="term:N")
    rule = alt.Chart(pd.DataFrame({"alpha": [alpha]})).mark_rule(color="black", strokeDash=[4, 4]).encode(x="alpha:Q")
    return lines + rule
