"""Tests for kd_lessons.losses: torch.nn.functional as the oracle, hand-worked values, math properties."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from kd_lessons.losses import (
    HintRegressor,
    attention_map,
    attention_transfer_loss,
    check_alpha,
    check_labels,
    check_logits,
    check_T,
    distillation_loss,
    entropy,
    hint_loss,
    kd_loss,
    kd_term,
    log_soften,
    soft_cross_entropy,
    soften,
)

from strategies import FAST, logits_pair, seeds, temperatures, value_and_grad

pytestmark = pytest.mark.usefixtures("one_thread")




# ---------------------------------------------------------------- oracles: value and gradient

@FAST
@given(seed=seeds, T=temperatures())
def test_kd_loss_matches_torch_kl_div(seed, T):
    s, t = logits_pair(seed)
    oracle = lambda s, t: T**2 * F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1),
                                          reduction="batchmean")
    ours, g_ours = value_and_grad(lambda s, t: kd_loss(s, t, T), s, t)
    ref, g_ref = value_and_grad(oracle, s, t)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)


@FAST
@given(seed=seeds, T=temperatures(), alpha=st.floats(0.0, 1.0))
def test_distillation_loss_matches_manual_combination(seed, T, alpha):
    s, t = logits_pair(seed)
    y = torch.randint(0, 5, (4,), generator=torch.Generator().manual_seed(seed))
    oracle = lambda s, t: (alpha * T**2 * F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1),
                                                   reduction="batchmean")
                           + (1 - alpha) * F.cross_entropy(s, y))
    ours, g_ours = value_and_grad(lambda s, t: distillation_loss(s, t, y, T, alpha), s, t)
    ref, g_ref = value_and_grad(oracle, s, t)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)


@FAST
@given(seed=seeds, T=st.floats(0.05, 100.0))
def test_soften_matches_torch_softmax(seed, T):
    s, _ = logits_pair(seed, scale=5.0)
    ours, g_ours = value_and_grad(lambda s, _: (soften(s, T) ** 2).sum(), s, None)
    ref, g_ref = value_and_grad(lambda s, _: (F.softmax(s / T, -1) ** 2).sum(), s, None)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)
    torch.testing.assert_close(log_soften(s, T), F.log_softmax(s / T, -1))


@FAST
@given(seed=seeds, T=temperatures())
def test_soft_cross_entropy_matches_torch_and_equals_kl_plus_entropy(seed, T):
    s, t = logits_pair(seed)
    ours, g_ours = value_and_grad(lambda s, t: soft_cross_entropy(s, t, T), s, t)
    ref, g_ref = value_and_grad(lambda s, t: F.cross_entropy(s / T, F.softmax(t / T, -1)), s, t)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)
    torch.testing.assert_close(ours, kd_loss(s, t, T) / T**2 + entropy(soften(t, T)).mean())


# ---------------------------------------------------------------- worked by hand

def test_two_class_example_by_hand():
    # student z = [0, 0] -> q = [1/2, 1/2]; teacher v = [2 ln 3, 0] at T = 2 -> p = [3/4, 1/4].
    # KL(p || q) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.304099 - 0.173287 = 0.130812; x T^2 = 0.523248.
    # d kd_loss / dz = T (q - p) / B = 2 * ([1/2, 1/2] - [3/4, 1/4]) = [-0.5, 0.5].
    # Hard part with y = 0: cross_entropy = ln 2 = 0.693147; alpha = 0.5 -> 0.608198.
    s = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[2 * math.log(3), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(soften(t, 2), torch.tensor([[0.75, 0.25]], dtype=torch.float64))
    loss = kd_loss(s, t, T=2)
    assert loss.item() == pytest.approx(0.523248, abs=1e-6)
    (grad,) = torch.autograd.grad(loss, s)
    torch.testing.assert_close(grad, torch.tensor([[-0.5, 0.5]], dtype=torch.float64))
    parts = distillation_loss(s, t, torch.tensor([0]), T=2, alpha=0.5, return_parts=True)
    assert parts["cross_entropy"].item() == pytest.approx(math.log(2))
    assert parts["kd"].item() == pytest.approx(0.523248, abs=1e-6)
    assert parts["total"].item() == pytest.approx(0.608198, abs=1e-6)
    assert entropy(torch.tensor([0.5, 0.5, 0.0])).item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------- properties of soft targets

@FAST
@given(seed=seeds, T=st.floats(0.05, 100.0), scale=st.floats(0.1, 50.0))
def test_soften_is_a_distribution(seed, T, scale):
    s, _ = logits_pair(seed, scale=scale, dtype=torch.float32)
    p = soften(s, T)
    assert ((p >= 0) & (p <= 1)).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(4))


@FAST
@given(seed=seeds, scale=st.floats(0.1, 10.0))
def test_soft_targets_approach_uniform_as_T_grows(seed, scale):
    s, _ = logits_pair(seed, shape=(4, 10), scale=scale)
    Ts = [0.5, 1, 2, 4, 8, 16, 32, 100, 1000]
    H = torch.stack([entropy(soften(s, T)) for T in Ts])  # [len(Ts), B]
    assert (H[1:] >= H[:-1] - 1e-9).all(), "entropy must not decrease as T grows"
    torch.testing.assert_close(H[-1], torch.full((4,), math.log(10), dtype=torch.float64),
                               atol=1e-3, rtol=0)


@FAST
@given(seed=seeds)
def test_small_T_gives_argmax_one_hot(seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.stack([torch.randperm(6, generator=g) for _ in range(4)]).double()  # gaps >= 1
    torch.testing.assert_close(soften(s, 0.01), F.one_hot(s.argmax(-1), 6).double())


# ---------------------------------------------------------------- properties of the KD loss

@FAST
@given(seed=seeds, T=temperatures(), scale=st.floats(0.1, 10.0))
def test_kd_loss_nonnegative_and_zero_for_equal_logits(seed, T, scale):
    s, t = logits_pair(seed, scale=scale)
    assert kd_loss(s, t, T).item() >= -1e-12
    assert abs(kd_loss(t.clone(), t, T).item()) < 1e-10


@FAST
@given(seed=seeds, T=temperatures())
def test_alpha_endpoints(seed, T):
    s, t = logits_pair(seed)
    y = torch.randint(0, 5, (4,), generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(distillation_loss(s, t, y, T, alpha=0.0), F.cross_entropy(s, y))
    torch.testing.assert_close(distillation_loss(s, t, y, T, alpha=1.0), kd_loss(s, t, T))


def test_teacher_gets_no_gradient_even_without_no_grad():
    s, t = (x.requires_grad_(True) for x in logits_pair(0))
    y = torch.tensor([0, 1, 2, 3])
    for loss in (kd_loss(s, t, 4.0), distillation_loss(s, t, y, 4.0, 0.9),
                 soft_cross_entropy(s, t, 4.0)):
        g_s, g_t = torch.autograd.grad(loss, (s, t), allow_unused=True)
        assert g_t is None and g_s.abs().sum() > 0


def grad_norm(s, t, T, scaled=True):
    """Norm of d(soft term)/d(student logits), with or without the T^2 factor."""
    _, g = value_and_grad(lambda s, t: kd_loss(s, t, T) / (1 if scaled else T**2), s, t)
    return g.norm().item()


@pytest.mark.parametrize("seed", range(5))
def test_T_squared_keeps_gradient_scale(seed):
    s, t = logits_pair(seed, shape=(32, 10))
    Ts = [1, 2, 5, 10, 20]
    with_t2 = [grad_norm(s, t, T) for T in Ts]
    assert max(with_t2) / min(with_t2) < 4  # measured about 1.1 for unit-variance logits
    without = [grad_norm(s, t, T, scaled=False) for T in Ts]
    for T, g in zip(Ts, without):  # without T^2 the gradient shrinks like 1/T^2
        assert 1 / 4 < g / (without[0] / T**2) < 4


@pytest.mark.parametrize("seed", range(3))
def test_high_T_limit_is_logit_matching(seed):
    # Hinton et al. 2015, sec. 2.1: for zero-mean logits and large T, KL ~ sum (z - v)^2 / (2 K T^2),
    # so T^2 KL -> 0.5 * mean_b sum_i (z_i - v_i)^2 / K and its gradient -> (z - v) / (K B).
    B, K, T = 8, 10, 100.0
    s, t = logits_pair(seed, shape=(B, K))
    z, v = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    loss, grad = value_and_grad(lambda s, t: kd_loss(s, t, T), s, t)
    approx = 0.5 * ((z - v) ** 2).sum(-1).mean() / K
    assert loss.item() == pytest.approx(approx.item(), rel=0.05)
    expected = (z - v) / (K * B)
    torch.testing.assert_close(grad, expected, rtol=0.02, atol=0.01 * expected.abs().max().item())


@pytest.mark.parametrize("T", [0.05, 1.0, 100.0])
def test_huge_logits_stay_finite(T):
    s, t = logits_pair(0, scale=1e4, dtype=torch.float32)
    y = torch.tensor([0, 1, 2, 3])
    s.requires_grad_(True)
    for loss in (kd_loss(s, t, T), distillation_loss(s, t, y, T, 0.5),
                 soft_cross_entropy(s, t, T), entropy(soften(s, T)).sum()):
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


# ---------------------------------------------------------------- bad input

S, TT, Y = torch.zeros(4, 5), torch.zeros(4, 5), torch.tensor([0, 1, 2, 3])
BAD_CALLS = {
    "T=0": (lambda: kd_loss(S, TT, 0), "T must be finite and > 0.*1-20"),
    "T<0": (lambda: kd_loss(S, TT, -2.0), "T must be finite and > 0"),
    "T=nan": (lambda: kd_loss(S, TT, float("nan")), r"got T=nan"),
    "T=inf": (lambda: kd_loss(S, TT, math.inf), r"got T=inf"),
    "T=bool": (lambda: kd_loss(S, TT, True), "T must be a real number, got True"),
    "T=str": (lambda: soften(S, "4"), "T must be a real number"),
    "T=vector": (lambda: soften(S, torch.tensor([1.0, 2.0])), r"single number.*\[2\]"),
    "alpha>1": (lambda: distillation_loss(S, TT, Y, 4, 1.5), r"alpha must be a number in \[0, 1\]"),
    "alpha<0": (lambda: distillation_loss(S, TT, Y, 4, -0.1), "alpha must be"),
    "alpha=nan": (lambda: distillation_loss(S, TT, Y, 4, math.nan), "got alpha=nan"),
    "alpha=None": (lambda: distillation_loss(S, TT, Y, 4, None), "alpha must be a real number"),
    "shape mismatch": (lambda: kd_loss(S, torch.zeros(4, 6), 4), r"\[4, 5\].*\[4, 6\]"),
    "batch mismatch": (lambda: kd_loss(S, torch.zeros(3, 5), 4), r"\[4, 5\].*\[3, 5\]"),
    "1-D logits": (lambda: kd_loss(torch.zeros(5), torch.zeros(5), 4), "2-D tensor"),
    "int logits": (lambda: kd_loss(S.long(), TT, 4), "floating-point"),
    "list logits": (lambda: kd_loss([[0.0]], TT, 4), "floating-point.*list"),
    "nan logits": (lambda: kd_loss(torch.full((4, 5), math.nan), TT, 4), "NaN or inf.*learning rate"),
    "inf teacher": (lambda: kd_loss(S, torch.full((4, 5), math.inf), 4), "teacher_logits contains"),
    "float y": (lambda: distillation_loss(S, TT, Y.float(), 4, 0.5), "integer class indices"),
    "int32 y": (lambda: distillation_loss(S, TT, Y.int(), 4, 0.5), r"y\.long\(\)"),
    "one-hot y": (lambda: distillation_loss(S, TT, F.one_hot(Y, 5), 4, 0.5), r"shape \[4\]"),
    "y too big": (lambda: distillation_loss(S, TT, Y + 2, 4, 0.5), r"\[0, 5\).*2 to 5"),
    "y negative": (lambda: distillation_loss(S, TT, Y - 1, 4, 0.5), r"from -1"),
    "regressor width": (lambda: HintRegressor(3, 4)(torch.zeros(2, 5, 4, 4)), r"HintRegressor\(student"),
    "hint rank": (lambda: hint_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), None), "2-D or 4-D"),
    "hint channels": (lambda: hint_loss(torch.zeros(2, 3), torch.zeros(2, 4), None), "teacher_channels=4"),
    "at batch": (lambda: attention_transfer_loss(torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4)),
                 "same batch size"),
    "at rank": (lambda: attention_map(torch.zeros(2, 3)), "4-D"),
    "regressor channels": (lambda: HintRegressor(0, 4), "channel counts must be >= 1.*feature shapes"),
    # the public checks, as objectives and runs call them directly
    "check_T": (lambda: check_T(0.0), "T must be finite and > 0.*T=4.0"),
    "check_alpha": (lambda: check_alpha(2), r"alpha must be a number in \[0, 1\].*alpha=0.9"),
    "check_logits": (lambda: check_logits(S, S[:, :3]), r"teacher_logits has shape \[4, 3\].*same classes"),
    "check_labels range": (lambda: check_labels(Y, 4, 3), r"y must lie in \[0, 3\)"),
    "check_labels batch": (lambda: check_labels(Y, 5, 5), r"y must have shape \[5\].*got \[4\]"),
    "check_labels bool": (lambda: check_labels(Y > 0, 4, 5), "integer class indices, got torch.bool"),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_input_raises_helpful_value_error(name):
    call, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=message):
        call()


def test_public_checks_return_plain_floats_and_accept_good_input():
    assert check_T(4) == 4.0 and isinstance(check_T(torch.tensor(2.5)), float) and check_T(np_float(0.5)) == 0.5
    assert check_alpha(0) == 0.0 and check_alpha(torch.tensor(1.0)) == 1.0
    check_logits(S, TT)
    check_labels(Y, 4, 5)


def np_float(value):
    import numpy as np

    return np.float64(value)


@FAST
@given(seed=seeds, T=temperatures())
def test_kd_term_is_kd_loss_without_the_checks(seed, T):
    s, t = logits_pair(seed)
    ours, g_ours = value_and_grad(lambda s, t: kd_term(s, t, T), s, t)
    ref, g_ref = value_and_grad(lambda s, t: kd_loss(s, t, T), s, t)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=0)
    s_bad = s.clone()
    s_bad[0, 0] = math.nan
    assert torch.isnan(kd_term(s_bad, t, T))  # unchecked: NaN passes through (kd_loss would raise)


def test_accepted_T_forms():
    s, t = logits_pair(0)
    ref = kd_loss(s, t, 4.0)
    torch.testing.assert_close(kd_loss(s, t, 4), ref)
    torch.testing.assert_close(kd_loss(s, t, torch.tensor(4.0)), ref)
    torch.testing.assert_close(distillation_loss(s, t, torch.zeros(4, dtype=torch.long), 4.0,
                                                 torch.tensor(1.0)), ref)


# ---------------------------------------------------------------- FitNets hints

def test_hint_regressor_shapes_conv_and_linear():
    reg = HintRegressor(8, 16)
    assert reg(torch.randn(2, 8, 5, 7)).shape == (2, 16, 5, 7)
    assert reg(torch.randn(3, 8)).shape == (3, 16)
    x = torch.randn(2, 8, 5, 7)  # the 1x1 conv is the Linear applied at every pixel
    torch.testing.assert_close(reg(x), reg.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


def test_hint_loss_matches_mse_and_gradients_flow_to_student_and_regressor_only():
    reg = HintRegressor(4, 6)
    s = torch.randn(2, 4, 5, 5, requires_grad=True)
    t = torch.randn(2, 6, 5, 5, requires_grad=True)
    loss = hint_loss(s, t, reg)
    torch.testing.assert_close(loss, F.mse_loss(reg(s), t))
    g_s, g_t, g_w = torch.autograd.grad(loss, (s, t, reg.proj.weight), allow_unused=True)
    assert g_t is None and g_s.abs().sum() > 0 and g_w.abs().sum() > 0


def test_hint_loss_pools_the_larger_map():
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(hint_loss(s, t, None), F.mse_loss(F.adaptive_avg_pool2d(s, 4), t))
    torch.testing.assert_close(hint_loss(t, s, None), F.mse_loss(t, F.adaptive_avg_pool2d(s, 4)))


# ---------------------------------------------------------------- attention transfer

def test_attention_map_is_normalised_and_matches_definition():
    f = torch.randn(3, 5, 4, 6)
    q = attention_map(f)
    assert q.shape == (3, 24)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(3))
    raw = (f**2).mean(1).flatten(1)  # the paper's channel mean: same map after normalising
    torch.testing.assert_close(q, raw / raw.norm(dim=1, keepdim=True))


def test_attention_transfer_loss_zero_for_same_maps_and_any_channel_count():
    f = torch.randn(2, 4, 6, 6)
    assert attention_transfer_loss(f, f).item() == pytest.approx(0, abs=1e-6)
    # teacher with 3x the channels but the same per-pixel pattern: same attention map
    assert attention_transfer_loss(f, torch.cat([f, f, f], 1)).item() == pytest.approx(0, abs=1e-6)
    # teacher at 2x resolution (nearest upsampling): bilinear resizing recovers the student's map
    big = F.interpolate(f, scale_factor=2, mode="nearest")
    assert attention_transfer_loss(f, big).item() == pytest.approx(0, abs=1e-6)


def test_attention_transfer_loss_range_and_gradients():
    s = torch.randn(2, 4, 6, 6, requires_grad=True)
    t = torch.randn(2, 8, 6, 6, requires_grad=True)
    loss = attention_transfer_loss(s, t)
    expected = (attention_map(s) - attention_map(t)).pow(2).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    # the authors' code variant: mean of the squared difference over batch and positions
    torch.testing.assert_close(loss / 36, (attention_map(s) - attention_map(t)).pow(2).mean())
    assert 0 < loss.item() <= 4
    g_s, g_t = torch.autograd.grad(loss, (s, t), allow_unused=True)
    assert g_t is None and g_s.abs().sum() > 0


@FAST
@given(seed=seeds, T=temperatures())
def test_entropy_matches_torch_categorical_in_nats(seed, T):
    s, _ = logits_pair(seed, scale=5.0)
    p = soften(s, T)
    torch.testing.assert_close(entropy(p), torch.distributions.Categorical(probs=p).entropy())
    one_hot = F.one_hot(torch.tensor([2, 0]), 5).double()
    assert torch.equal(entropy(one_hot), torch.zeros(2))  # 0 log 0 = 0, not NaN
