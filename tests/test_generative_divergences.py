"""Tests for kd_lessons.generative.divergences: explicit numpy sums, torch.distributions and F.kl_div as
oracles (value and gradient), the math properties of each divergence, masks, top-k, input errors."""
import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Categorical, kl_divergence

from kd_lessons.generative.divergences import (
    check_beta,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    topk_kd_loss,
    topk_logprobs,
    topk_mass,
)
from kd_lessons.losses import kd_loss

from strategies import FAST, betas, seeds, temperatures, value_and_grad
from strategies import logits_pair as shared_logits_pair

pytestmark = pytest.mark.usefixtures("one_thread")

logits_pair = partial(shared_logits_pair, shape=(2, 3, 6), scale=2.0)  # [B, L, V] token logits


def _np_softmax(z, T):
    z = np.asarray(z, dtype=np.float64) / T
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_jsd(s, t, beta, T=1.0):
    """Per-position generalized JSD by explicit sums (GKD's definition, P = teacher, Q = student)."""
    p, q = _np_softmax(t, T), _np_softmax(s, T)
    m = beta * p + (1 - beta) * q
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / m), 0.0).sum(-1)
        b = np.where(q > 0, q * np.log(q / m), 0.0).sum(-1)
    return beta * a + (1 - beta) * b


def numeric_grad(f, s, eps=1e-6):
    """Central differences of a numpy function of s (float64)."""
    s = s.numpy().copy()
    grad = np.zeros_like(s)
    for idx in np.ndindex(s.shape):
        up, down = s.copy(), s.copy()
        up[idx] += eps
        down[idx] -= eps
        grad[idx] = (f(up) - f(down)) / (2 * eps)
    return torch.from_numpy(grad)


# ---------------------------------------------------------------- oracles: value and gradient

@FAST
@given(seed=seeds, T=temperatures(high=10.0))
def test_forward_kl_matches_torch_distributions_value_and_gradient(seed, T):
    s, t = logits_pair(seed)
    oracle = lambda s, t: kl_divergence(Categorical(logits=t / T), Categorical(logits=s / T)).mean()
    value, grad = value_and_grad(lambda s, t: forward_kl(s, t, T=T), s, t)
    ref_value, ref_grad = value_and_grad(oracle, s, t)
    torch.testing.assert_close(value, ref_value)
    torch.testing.assert_close(grad, ref_grad)


@FAST
@given(seed=seeds, T=temperatures(high=10.0))
def test_forward_kl_times_T_squared_is_the_course_kd_loss(seed, T):
    s, t = logits_pair(seed)
    value, grad = value_and_grad(lambda s, t: T * T * forward_kl(s, t, T=T), s, t)
    ref_value, ref_grad = value_and_grad(lambda s, t: kd_loss(s.reshape(-1, 6), t.reshape(-1, 6), T), s, t)
    torch.testing.assert_close(value, ref_value)
    torch.testing.assert_close(grad, ref_grad)


@FAST
@given(seed=seeds, T=temperatures(high=10.0))
def test_reverse_kl_matches_F_kl_div_with_the_arguments_swapped(seed, T):
    s, t = logits_pair(seed)
    # F.kl_div(input, target) = KL(target || input): the student is the *target* for reverse KL
    oracle = lambda s, t: F.kl_div(F.log_softmax(t / T, -1), F.log_softmax(s / T, -1), log_target=True,
                                   reduction="sum") / (s.numel() / s.shape[-1])
    value, grad = value_and_grad(lambda s, t: reverse_kl(s, t, T=T), s, t)
    ref_value, ref_grad = value_and_grad(oracle, s, t)
    torch.testing.assert_close(value, ref_value)
    torch.testing.assert_close(grad, ref_grad)


@FAST
@given(seed=seeds, beta=st.floats(0.01, 0.99), T=temperatures(high=10.0))
def test_generalized_jsd_matches_explicit_numpy_sums_value_and_gradient(seed, beta, T):
    s, t = logits_pair(seed, shape=(2, 2, 5))
    value, grad = value_and_grad(lambda s, t: generalized_jsd(s, t, beta, T=T), s, t)
    np_mean = lambda a: float(np_jsd(a, t.numpy(), beta, T).mean())
    assert value.item() == pytest.approx(np_mean(s.numpy()), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(grad, numeric_grad(np_mean, s), rtol=1e-5, atol=1e-8)


def test_teacher_gets_no_gradient():
    s, t = logits_pair(0)
    t.requires_grad_(True)
    s.requires_grad_(True)
    for loss in (forward_kl(s, t), reverse_kl(s, t), generalized_jsd(s, t, 0.3)):
        assert torch.autograd.grad(loss, t, allow_unused=True)[0] is None


# ---------------------------------------------------------------- properties

@FAST
@given(seed=seeds, beta=betas, T=temperatures(high=10.0))
def test_all_divergences_are_non_negative(seed, beta, T):
    s, t = logits_pair(seed)
    for per in (forward_kl(s, t, T, reduction="none"), reverse_kl(s, t, T, reduction="none"),
                generalized_jsd(s, t, beta, T, reduction="none")):
        assert per.shape == (2, 3) and per.min().item() >= -1e-12


@FAST
@given(seed=seeds, beta=st.floats(0.01, 0.99))
def test_zero_iff_equal(seed, beta):
    s, t = logits_pair(seed)
    shifted = s + 3.0  # the same distributions (softmax ignores a constant)
    for loss in (forward_kl(s, shifted), reverse_kl(s, shifted), generalized_jsd(s, shifted, beta)):
        assert loss.item() == pytest.approx(0.0, abs=1e-12)
    if not torch.allclose(F.softmax(s, -1), F.softmax(t, -1), atol=1e-6):
        for loss in (forward_kl(s, t), reverse_kl(s, t), generalized_jsd(s, t, beta)):
            assert loss.item() > 1e-10


@FAST
@given(seed=seeds, T=temperatures(high=10.0))
def test_jsd_is_symmetric_at_beta_one_half(seed, T):
    s, t = logits_pair(seed)
    assert generalized_jsd(s, t, 0.5, T).item() == pytest.approx(generalized_jsd(t, s, 0.5, T).item(), rel=1e-10)


@FAST
@given(seed=seeds, beta=betas, scale=st.floats(0.1, 30.0))
def test_jsd_is_bounded_by_the_binary_entropy_of_beta_and_by_log_2(seed, beta, scale):
    s, t = logits_pair(seed, scale=scale)
    per = generalized_jsd(s, t, beta, reduction="none")
    h = 0.0 if beta in (0.0, 1.0) else -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)
    assert per.max().item() <= h + 1e-9
    assert per.max().item() <= math.log(2) + 1e-9


def test_jsd_reaches_log_2_for_disjoint_distributions():
    s = torch.tensor([[60.0, 0.0, -60.0]], dtype=torch.float64)
    t = torch.tensor([[-60.0, 0.0, 60.0]], dtype=torch.float64)
    assert generalized_jsd(s, t, 0.5).item() == pytest.approx(math.log(2), rel=1e-6)


@FAST
@given(seed=seeds)
def test_endpoints_behave_as_the_gkd_paper_says(seed):
    s, t = logits_pair(seed, scale=1.0)
    fwd, rev = forward_kl(s, t).item(), reverse_kl(s, t).item()
    # exactly at the ends the mixture equals one of the two distributions, so JSD is 0 by definition
    assert generalized_jsd(s, t, 0.0).item() == 0.0 and generalized_jsd(s, t, 1.0).item() == 0.0
    # near the ends it is a scaled KL: JSD/beta -> KL(teacher||student), JSD/(1-beta) -> KL(student||teacher)
    eps = 1e-5
    assert generalized_jsd(s, t, eps).item() / eps == pytest.approx(fwd, rel=1e-3)
    assert generalized_jsd(s, t, 1 - eps).item() / eps == pytest.approx(rev, rel=1e-3)
    # scaled=True divides by beta (1 - beta): continuous, and the two KLs exactly at the ends
    assert generalized_jsd(s, t, 0.0, scaled=True).item() == pytest.approx(fwd, rel=1e-12)
    assert generalized_jsd(s, t, 1.0, scaled=True).item() == pytest.approx(rev, rel=1e-12)
    assert generalized_jsd(s, t, eps, scaled=True).item() == pytest.approx(fwd, rel=1e-3)


def test_jsd_at_the_ends_still_backpropagates_a_zero_gradient():
    s, t = logits_pair(1)
    s.requires_grad_(True)
    (grad,) = torch.autograd.grad(generalized_jsd(s, t, 1.0), s)
    assert torch.count_nonzero(grad) == 0


# ---------------------------------------------------------------- masks and reductions

def test_mask_drops_positions_and_the_mean_is_over_counted_positions():
    s, t = logits_pair(3)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    per = forward_kl(s, t, reduction="none")
    for fn in (forward_kl, reverse_kl, lambda s, t, **kw: generalized_jsd(s, t, 0.3, **kw)):
        full = fn(s, t, reduction="none")
        assert fn(s, t, mask=mask).item() == pytest.approx(full[mask].mean().item(), rel=1e-12)
        assert fn(s, t, mask=mask, reduction="sum").item() == pytest.approx(full[mask].sum().item(), rel=1e-12)
        assert torch.equal(fn(s, t, mask=mask, reduction="none")[~mask], torch.zeros(3, dtype=s.dtype))
    # a 0/1 float mask (an attention mask) means the same; changing a masked position changes nothing
    assert forward_kl(s, t, mask=mask.double()).item() == pytest.approx(per[mask].mean().item(), rel=1e-12)
    t2 = t.clone()
    t2[1, 2] += 5.0
    assert forward_kl(s, t2, mask=mask).item() == pytest.approx(forward_kl(s, t, mask=mask).item(), rel=1e-12)
    s2 = s.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reverse_kl(s2, t, mask=mask), s2)
    assert torch.count_nonzero(grad[~mask]) == 0 and torch.count_nonzero(grad[mask]) > 0


@pytest.mark.parametrize("mask, match", [
    (torch.zeros(2, 3, dtype=torch.bool), "selects no position"),
    (torch.ones(3, 2, dtype=torch.bool), r"mask has shape \[3, 2\]"),
    (torch.full((2, 3), 2.0), "only 0 and 1"),
    ([[1, 1, 1], [1, 1, 1]], "must be a torch.Tensor"),
])
def test_bad_masks_are_explained(mask, match):
    s, t = logits_pair(0)
    with pytest.raises(ValueError, match=match):
        forward_kl(s, t, mask=mask)


# ---------------------------------------------------------------- top-k

@FAST
@given(seed=seeds, T=temperatures(high=10.0))
def test_topk_with_k_equal_to_the_vocabulary_is_the_full_forward_kl(seed, T):
    s, t = logits_pair(seed)
    idx, lp = topk_logprobs(t, k=6, T=T)
    ref_value, ref_grad = value_and_grad(lambda s, t: forward_kl(s, t, T=T), s, t)
    for renormalize in (True, False):
        value, grad = value_and_grad(
            lambda s, t, renormalize=renormalize: topk_kd_loss(s, idx, lp, renormalize=renormalize, T=T), s, t)
        torch.testing.assert_close(value, ref_value)
        torch.testing.assert_close(grad, ref_grad)


def test_topk_logprobs_are_what_an_api_returns():
    t = torch.tensor([[2.0, 0.0, 1.0, -1.0]], dtype=torch.float64)
    idx, lp = topk_logprobs(t, 2)
    assert idx.tolist() == [[0, 2]]
    torch.testing.assert_close(lp, F.log_softmax(t, -1)[:, [0, 2]])
    torch.testing.assert_close(topk_mass(t, 2), lp.exp().sum(-1))
    assert topk_mass(t, 4).item() == pytest.approx(1.0)


def _explicit_topk(s, idx, lp, renormalize):
    """Per position, by explicit sums over the k tokens (+ the rest bucket)."""
    q = _np_softmax(s.numpy(), 1.0)
    out = np.zeros(s.shape[:-1])
    for pos in np.ndindex(s.shape[:-1]):
        ids, p = idx[pos].numpy(), np.exp(lp[pos].numpy())
        qk = q[pos][ids]
        if renormalize:
            pn = p / p.sum()
            out[pos] = (pn * np.log(pn / qk)).sum()
        else:
            out[pos] = (p * np.log(p / qk)).sum() + (1 - p.sum()) * np.log((1 - p.sum()) / (1 - qk.sum()))
    return out.mean()


@FAST
@given(seed=seeds, k=st.integers(1, 5), renormalize=st.booleans())
def test_topk_kd_loss_matches_explicit_sums_value_and_gradient(seed, k, renormalize):
    s, t = logits_pair(seed, shape=(2, 2, 6))
    idx, lp = topk_logprobs(t, k)
    value, grad = value_and_grad(lambda s, t: topk_kd_loss(s, idx, lp, renormalize=renormalize), s, t)
    f = lambda a: _explicit_topk(torch.from_numpy(a), idx, lp, renormalize)
    assert value.item() == pytest.approx(f(s.numpy()), rel=1e-9)
    torch.testing.assert_close(grad, numeric_grad(f, s), rtol=1e-5, atol=1e-8)


def test_what_renormalising_does_to_the_minimiser():
    """Renormalised: the student learns to put all its mass on the k tokens; rest bucket: the teacher's mass."""
    t = torch.tensor([[2.0, 1.0, 0.5, 0.5, 0.0]], dtype=torch.float64)
    idx, lp = topk_logprobs(t, 2)
    mass = topk_mass(t, 2).item()
    assert mass < 0.75  # the two settings really differ here
    for renormalize, expected in ((True, 1.0), (False, mass)):
        z = torch.zeros(1, 5, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([z], lr=0.1)
        for _ in range(1500):
            opt.zero_grad()
            topk_kd_loss(z, idx, lp, renormalize=renormalize).backward()
            opt.step()
        q = F.softmax(z.detach(), -1)[0]
        assert q[[0, 1]].sum().item() == pytest.approx(expected, abs=0.02)
        assert (q[0] / q[1]).item() == pytest.approx(math.e, rel=0.02)  # the teacher's ratio within the top-k


# ---------------------------------------------------------------- input errors

def test_vocabulary_mismatch_names_both_sizes_and_the_fix():
    s, t = torch.zeros(2, 3, 65), torch.zeros(2, 3, 80)
    with pytest.raises(ValueError, match=r"student's logits have 65 tokens .* teacher's have 80 .*shared tokenizer"):
        forward_kl(s, t)


@pytest.mark.parametrize("s, t, match", [
    (torch.zeros(2, 3, 5), torch.zeros(2, 4, 5), r"shape \[2, 3, 5\] but teacher_logits has shape \[2, 4, 5\]"),
    (torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2), "NaN or inf"),
    (torch.zeros(1, 2), torch.tensor([[float("inf"), 0.0]]), "NaN or inf"),
    (torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2), "floating-point"),
    (torch.zeros(0, 2), torch.zeros(0, 2), "non-empty"),
])
def test_bad_logits_are_explained(s, t, match):
    with pytest.raises(ValueError, match=match):
        reverse_kl(s, t)


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan"), "0.5", True])
def test_beta_outside_0_1_is_explained(beta):
    s, t = logits_pair(0)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(s, t, beta)
    with pytest.raises(ValueError, match="beta"):
        check_beta(beta)


def test_bad_T_and_reduction_are_explained():
    s, t = logits_pair(0)
    with pytest.raises(ValueError, match="T must be finite and > 0"):
        forward_kl(s, t, T=0.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        forward_kl(s, t, reduction="batchmean")


def test_bad_topk_inputs_are_explained():
    s, t = logits_pair(0)
    idx, lp = topk_logprobs(t, 3)
    with pytest.raises(ValueError, match="k must be an int in"):
        topk_logprobs(t, 7)
    with pytest.raises(ValueError, match="int64"):
        topk_kd_loss(s, idx.int(), lp)
    with pytest.raises(ValueError, match="look like logits"):
        topk_kd_loss(s, idx, t.gather(-1, idx) + 5.0)
    with pytest.raises(ValueError, match="share one tokenizer"):
        topk_kd_loss(s, idx + 10, lp)
    with pytest.raises(ValueError, match="repeats a token id"):
        topk_kd_loss(s, idx[..., [0, 0, 1]], lp)
    with pytest.raises(ValueError, match=r"\[\.\.\., k\]"):
        topk_kd_loss(s, idx[:1], lp[:1])
