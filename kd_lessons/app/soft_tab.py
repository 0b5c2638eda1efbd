"""The app's "Soft labels" and "Compare" tabs: the teacher's soft labels at the sidebar's T, and at two Ts.

Introduced in notebook 00_start_here (the app tour; the ideas are notebooks 01_soft_vs_hard_labels and
02_temperature). Values come in as parameters; the cached teacher, pool and figures come in `shared`.
"""
from __future__ import annotations

import altair as alt

from kd_lessons import config
from kd_lessons.app import panels
from kd_lessons.app.page import NO_POOL, Shared
from kd_lessons.data import class_names, denormalize

__all__ = ["soft_label_chart", "show_image", "render", "compare"]


def soft_label_chart(probs, label: int, names: list[str], T: float, entropy: float) -> alt.Chart:
    """One-hot vs soft bars, drawn in the browser (a new T costs the server nothing). Notebook 00_start_here."""
    frame = panels.soft_label_frame(probs, label, names, T)
    targets = ["one-hot label", f"soft label (T={T:g})"]
    return alt.Chart(frame, title=f"soft label entropy {entropy:.3f} nats (one-hot: 0)").mark_bar().encode(
        x=alt.X("class:N", sort=None, title=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("target:N", sort=targets),
        y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("target:N", scale=alt.Scale(domain=targets, range=["#bbbbbb", "#1f77b4"]),
                        legend=alt.Legend(orient="right", title=None)),
        tooltip=["class", "target", alt.Tooltip("probability:Q", format=".4f")]).properties(height=240)


def show_image(st, pool: dict, dataset: str, index: int, width: int = 84) -> None:
    """One test image of the pool, with its class as the caption (gray or colour). Notebook 00_start_here."""
    pixels = denormalize(pool["x"][index], dataset).clamp(0, 1).permute(1, 2, 0).numpy()
    st.image(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, width=width,
             caption=f"#{index}: {class_names(dataset)[int(pool['y'][index])]}")


def render(st, shared: Shared, dataset: str, T: float, n_images: int, seed: int) -> tuple[dict, list[int], str]:
    """The "Soft labels" tab; returns (pool, shown, kind) for the tabs that reuse its images. Notebook 00_start_here."""
    (teacher, info), kind = shared.teacher(dataset)
    if kind == "starter":
        shared.watch(dataset)
    pool = shared.pool(dataset, kind, teacher)
    shown = panels.pick_examples(pool["y"], n_images, seed=seed)
    soft = panels.soft_labels(pool["teacher_logits"][shown], pool["y"][shown], T)
    st.subheader(f"The teacher's soft labels at T = {T:g}")
    c1, c2, c3 = st.columns(3)
    c1.metric("Mean entropy of the soft labels", f"{float(soft['entropy'].mean()):.3f} nats",
              help=f"0 = one-hot; log K = {soft['max_entropy']:.3f} nats = uniform")
    c2.metric("Entropy of the one-hot labels", "0.000 nats")
    c3.metric("Teacher test accuracy" + (" (starter teacher)" if kind == "starter" else ""),
              f"{info.get('test_accuracy', pool['teacher_accuracy']):.2%}",
              help=f"on the {info.get('n_test', len(pool['y']))} test images")
    names = class_names(dataset)
    for row, (index, h, p) in enumerate(zip(shown, soft["entropy"].tolist(), soft["p_true"].tolist())):
        left, right = st.columns([1, 6], vertical_alignment="center")
        with left:
            show_image(st, pool, dataset, index)
            st.caption(f"p(true class) = {p:.3f}")
        right.altair_chart(soft_label_chart(soft["probs"][row], int(pool["y"][index]), names, T, h))
    return pool, shown, kind


def compare(st, shared: Shared, dataset: str, kind: str, pool: dict | None, shown: list[int]) -> None:
    """The "Compare" tab: the same images' soft labels at two temperatures side by side. Notebook 02_temperature."""
    if pool is None:
        st.info(NO_POOL)
        return
    st.subheader("Two temperatures side by side, same images")
    a, b = st.columns(2)
    settings = [(a, a.select_slider("Left T", panels.temperatures(), 1.0, key="cmp_T_left")),
                (b, b.select_slider("Right T", panels.temperatures(), 8.0, key="cmp_T_right"))]
    for col, t in settings:
        soft_t = panels.soft_labels(pool["teacher_logits"][shown], pool["y"][shown], t)
        col.metric(f"Mean entropy at T = {t:g}", f"{float(soft_t['entropy'].mean()):.3f} nats")
        for index in shown:
            key = (dataset, config.mode(), str(config.cache_dir()), kind, index, t)  # the pool's identity
            col.image(shared.png("soft label", key, (pool, dataset, index, t)))
