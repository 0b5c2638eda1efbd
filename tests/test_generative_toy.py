"""Tests for kd_lessons.generative.toy and generative.plots: the measured KL-direction behaviour.

The numbers asserted here are what the toy measures with its defaults (modes at -2 and +2, width 0.6,
left mode 60% of the mass); the comments give the values measured when these tests were written.
"""
import numpy as np
import pytest
from matplotlib.figure import Figure

from kd_lessons.generative import lm_plots, toy

pytestmark = pytest.mark.usefixtures("one_thread")

BETAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@pytest.fixture(scope="module")
def fits():
    return {"forward": toy.fit_student("forward"), "reverse": toy.fit_student("reverse"),
            "sweep": toy.beta_sweep(BETAS)}


def test_teacher_is_a_two_mode_distribution_on_the_grid():
    p = toy.teacher_logits().exp()
    assert p.shape == (toy.POINTS,) and p.sum().item() == pytest.approx(1.0)
    x = toy.toy_grid()
    left, right = p[x < 0].sum().item(), p[x > 0].sum().item()
    assert left == pytest.approx(0.6, abs=0.01) and right == pytest.approx(0.4, abs=0.01)


def test_forward_kl_covers_both_modes(fits):
    fwd, rev = fits["forward"], fits["reverse"]
    # measured: mass between 0.371 (teacher 0.052), entropy 4.94 nats (teacher 4.39), mean -0.40
    assert fwd.mass_between > 5 * fwd.teacher_mass_between
    assert fwd.mass_between > rev.mass_between + 0.25
    assert fwd.entropy > fwd.teacher_entropy > rev.entropy
    assert abs(fwd.mean) < 0.5                        # centred between the modes at -2 and +2
    assert min(fwd.mass_near) > 0.2                   # real mass near both modes


def test_reverse_kl_seeks_one_mode(fits):
    rev = fits["reverse"]
    # measured: 0.954 of the mass near the left (heavier) mode, 0.000 near the right, mean -2.00, std 0.60
    assert rev.mass_near[0] > 0.9 and rev.mass_near[1] < 0.01
    assert rev.mean == pytest.approx(-2.0, abs=0.1) and rev.std == pytest.approx(0.6, abs=0.05)
    assert rev.mass_between < 2 * rev.teacher_mass_between


def test_reverse_kl_has_a_spread_out_local_optimum_from_the_centre(fits):
    """Why the toy keeps the best of three starts: from the centre, reverse KL stalls between the modes."""
    (m_left, s_left, v_left), (m_mid, s_mid, v_mid), (m_right, _, v_right) = fits["reverse"].optima
    assert abs(m_mid) < 0.5 and s_mid > 1.5          # measured: mean -0.32, std 1.81
    assert v_left < v_right < v_mid                   # measured: 0.51 < 0.91 < 1.13
    assert m_right == pytest.approx(2.0, abs=0.1)     # the lighter mode is a local optimum too


def test_jsd_ends_are_the_two_kls(fits):
    sweep = fits["sweep"]
    for end, ref in ((sweep[0], fits["forward"]), (sweep[-1], fits["reverse"])):
        np.testing.assert_allclose(end.student_probs, ref.student_probs, atol=1e-6)


def test_jsd_beta_moves_from_covering_to_seeking_monotonically_but_with_a_jump(fits):
    sweep = fits["sweep"]
    entropy = np.array([f.entropy for f in sweep])
    near = np.array([f.mass_near[0] for f in sweep])
    between = np.array([f.mass_between for f in sweep])
    # entropy never rises and the heavier mode's mass never falls as beta grows
    assert (np.diff(entropy) <= 1e-6).all() and (np.diff(near) >= -1e-6).all()
    # not smooth: one jump between beta 0.5 and 0.6 (measured: entropy 4.93 -> 3.73), tiny steps elsewhere
    jumps = np.flatnonzero(np.abs(np.diff(entropy)) > 0.5)
    assert jumps.tolist() == [BETAS.index(0.5)]
    # mass between the modes is NOT monotone: it creeps up by < 0.01 while covering (0.371 -> 0.375), then falls
    assert 0 < between[5] - between[0] < 0.01 and between[6] < 0.1


def test_close_modes_leave_nothing_to_choose(fits):
    """With the modes merged (separation 0) every divergence fits the same single bump."""
    a, b = toy.fit_student("forward", separation=0.0), toy.fit_student("reverse", separation=0.0)
    np.testing.assert_allclose(a.student_probs, b.student_probs, atol=1e-4)


def test_fits_are_cached_and_fast(fits):
    again = toy.fit_student("jsd", 0.5)
    assert again is fits["sweep"][5]
    assert toy.fit_student("jsd", 0.45).seconds < 5.0  # generous: shared CPU; bench/ has no target for this


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "kl"}, "method must be one of"),
    ({"beta": 1.5}, "beta must be a number in"),
    ({"separation": 20.0}, "separation must lie in"),
    ({"width": 0.01}, "width must lie in"),
    ({"left_weight": 1.0}, "left_weight must lie strictly"),
    ({"steps": 0}, "steps must be a positive int"),
])
def test_bad_settings_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        toy.fit_student(**kwargs)


def test_plots_return_figures(fits):
    fig = lm_plots.kl_direction([fits["forward"], fits["reverse"], fits["sweep"][5]])
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("forward KL" in t for t in labels) and any("JSD(beta=0.5)" in t for t in labels)
    assert isinstance(lm_plots.beta_sweep(fits["sweep"]), Figure)
    with pytest.raises(ValueError, match="at least one ToyFit"):
        lm_plots.kl_direction([])
    assert fig._repr_png_()[:4] == b"\x89PNG"
