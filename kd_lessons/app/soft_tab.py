"""The app's "Soft labels" and "Compare" tabs: the teacher's soft labels at the sidebar's T, and at two Ts.

Introduced in notebook 00_start_here (the app tour; the ideas are notebooks 01_soft_vs_hard_labels and
02_temperature). Values come in as parameters; the cached teacher, pool and figures come in `shared`.
"""
from __future__ import annotations

import altair as alt

from kd_lessons.app import page, panels
from kd_lessons.app.page import NO_POOL, Shared
from kd_lessons.data import class_names, denormalize

__all__ = ["BASE_COLOUR", "MAIN_COLOUR", "soft_label_chart", "show_image", "render", "compare"]

BASE_COLOUR, MAIN_COLOUR = "#bbbbbb", "#1f77b4"  # the app's charts: grey the reference (one-hot, scratch), blue ours


def soft_label_chart(probs, label: int, names: list[str], T: float, entropy: float, height: int = 240) -> alt.Chart:
    """One-hot vs soft bars, drawn in the browser (a new T costs the server nothing); the Soft labels and Compare
    tabs draw the same chart. Notebook 00_start_here."""
    frame = panels.soft_label_frame(probs, label, names, T)
    targets = ["one-hot label", f"soft label (T={T:g})"]
    return alt.Chart(frame, title=f"soft label entropy {entropy:.3f} nats (one-hot: 0)").mark_bar().encode(
        x=alt.X("class:N", sort=None, title=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("target:N", sort=targets),
        y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("target:N", scale=alt.Scale(domain=targets, range=[BASE_COLOUR, MAIN_COLOUR]),
                        legend=alt.Legend(orient="right", title=None)),
        tooltip=["class", "target", alt.Tooltip("probability:Q", format=".4f")]).properties(height=height)


def draw_soft_label_chart(st, probs, label: int, names: list[str], T: float, entropy: float, height: int = 240):
    """soft_label_chart, its spec made once per image and T (a slider move redraws charts seen before; the load
    test's profile had Altair's spec building as the largest share of a redraw). Notebook 00_start_here."""
    key = ("soft label", tuple(probs.tolist()), label, tuple(names), T, entropy, height)
    page.cached_chart(st, key, lambda: soft_label_chart(probs, label, names, T, entropy, height))


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
        draw_soft_label_chart(right, soft["probs"][row], int(pool["y"][index]), names, T, h)
    return pool, shown, kind


def compare(st, dataset: str, pool: dict | None, shown: list[int]) -> None:
    """The "Compare" tab: the same images' soft labels at two temperatures side by side, drawn as the Soft labels
    tab draws them (soft_label_chart). Notebook 02_temperature."""
    if pool is None:
        st.info(NO_POOL)
        return
    st.subheader("Two temperatures side by side, same images")
    _, a, b = st.columns([1, 3, 3])
    Ts = (a.select_slider("Left T", panels.temperatures(), 1.0, key="cmp_T_left"),
          b.select_slider("Right T", panels.temperatures(), 8.0, key="cmp_T_right"))
    soft = [panels.soft_labels(pool["teacher_logits"][shown], pool["y"][shown], t) for t in Ts]
    for col, t, soft_t in zip((a, b), Ts, soft):
        col.metric(f"Mean entropy at T = {t:g}", f"{float(soft_t['entropy'].mean()):.3f} nats")
    names = class_names(dataset)
    for row, index in enumerate(shown):
        image, left, right = st.columns([1, 3, 3], vertical_alignment="center")
        with image:
            show_image(st, pool, dataset, index)
        for col, t, soft_t in zip((left, right), Ts, soft):
            draw_soft_label_chart(col, soft_t["probs"][row], int(pool["y"][index]), names, t,
                                  float(soft_t["entropy"][row]), height=200)
