"""kd_lessons.diffusion.metrics: sliced Wasserstein and MMD against closed forms, and collapsed samplers."""
import math

import pytest
import torch

from kd_lessons.diffusion import mmd2, rbf_bandwidth, sample_data, sliced_wasserstein


def _normal(n, seed):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def test_sliced_wasserstein_of_a_shifted_copy_is_the_shift_over_root_2():
    x = _normal(500, 0)
    for shift in ([1.0, 0.0], [0.3, -0.4], [2.0, 2.0]):
        d = torch.tensor(shift)
        assert sliced_wasserstein(x, x + d) == pytest.approx(float(d.norm()) / math.sqrt(2), rel=1e-6)
    assert sliced_wasserstein(x, x) == 0.0


def test_sliced_wasserstein_of_two_isotropic_gaussians():
    base = _normal(8000, 1)
    exact = 1.5 * math.sqrt(float((base.double() ** 2).sum(1).mean()) / 2)  # the same draws rescaled: sorting kept
    assert sliced_wasserstein(0.5 * base, 2.0 * base) == pytest.approx(exact, rel=1e-6)
    assert sliced_wasserstein(0.5 * base, 2.0 * _normal(8000, 2)) == pytest.approx(1.5, abs=0.05)  # |s1 - s2|
    shifted = _normal(8000, 3) + torch.tensor([1.0, 1.0])
    assert sliced_wasserstein(base, shifted) == pytest.approx(1.0, abs=0.05)           # |d| / sqrt(2), d = (1, 1)
    a, b = _normal(300, 4), _normal(300, 5) * 1.3
    assert sliced_wasserstein(a, b) == pytest.approx(sliced_wasserstein(b, a))


def test_mmd_against_its_closed_form_for_two_gaussians():
    s, h, delta = 0.5, 1.0, torch.tensor([1.0, 0.0])
    a, b = s * _normal(2000, 6), s * _normal(2000, 7) + delta
    c = h ** 2 / (h ** 2 + 2 * s ** 2)                     # in 2-D, (h^2 / (h^2 + 2 s^2))^(d/2) with d = 2
    want = 2 * c * (1 - math.exp(-float(delta @ delta) / (2 * (h ** 2 + 2 * s ** 2))))
    assert mmd2(a, b, h) == pytest.approx(want, abs=0.02)
    assert abs(mmd2(a, s * _normal(2000, 8), h)) < 0.01    # same distribution: unbiased, about 0


def test_bandwidth_is_the_median_pairwise_distance():
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert rbf_bandwidth(pts) == pytest.approx(2.0)         # distances 1, 2, 3


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard"])
def test_collapsed_samplers_score_badly(name):
    g = torch.Generator().manual_seed(0)
    ref, fresh = sample_data(name, 1000, g), sample_data(name, 1000, g)
    at_mean = ref.mean(0).expand(1000, 2).clone()
    one_mode = fresh[(fresh[:, 0] > 0.5) & (fresh[:, 1].abs() < 0.5)]
    one_mode = one_mode[torch.randint(0, len(one_mode), (1000,), generator=g)]
    h = rbf_bandwidth(ref)
    good_sw, good_mmd = sliced_wasserstein(fresh, ref), mmd2(fresh, ref, h)
    for collapsed in (at_mean, one_mode):
        assert sliced_wasserstein(collapsed, ref) > 3 * good_sw
        assert mmd2(collapsed, ref, h) > 10 * max(good_mmd, 1e-3)


def test_bad_input():
    x = _normal(10, 0)
    with pytest.raises(ValueError, match="same size"):
        sliced_wasserstein(x, x[:5])
    with pytest.raises(ValueError, match="NaN"):
        sliced_wasserstein(x, torch.full((10, 2), float("nan")))
    with pytest.raises(ValueError, match=r"\[n >= 2, dim\]"):
        sliced_wasserstein(x[:, 0], x[:, 1])
    with pytest.raises(ValueError, match="positive kernel width"):
        mmd2(x, x, 0.0)
