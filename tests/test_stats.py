"""kd_lessons.stats: the intervals cover at their nominal rate, verdicts follow the intervals, bad input is named."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kd_lessons import stats


def test_t_quantile_matches_torch_student_t_cdf():
    # torch's StudentT has a cdf-free log_prob only, so integrate the density numerically as the oracle.
    for df in (1, 2, 4, 9, 29, 40, 100):
        q = stats.t_quantile_975(df)
        grid = torch.linspace(-400.0, q, 400_001, dtype=torch.float64)
        dens = torch.distributions.StudentT(torch.tensor(float(df), dtype=torch.float64)).log_prob(grid).exp()
        cdf = torch.trapezoid(dens, grid).item()
        assert cdf == pytest.approx(0.975, abs=2e-3 if df == 1 else 3e-4)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_t_interval_covers_the_true_mean_95_percent_of_the_time(n):
    rng = np.random.default_rng(n)
    hits = 0
    for _ in range(3000):
        d = stats.mean_interval(rng.normal(1.5, 2.0, n))
        hits += d.low < 1.5 < d.high
    assert 0.935 < hits / 3000 < 0.965


def test_paired_is_the_interval_of_the_differences_and_pairs_by_position():
    a, b = [10.0, 12.0, 11.0, 13.0, 12.0], [14.0, 15.0, 13.0, 16.0, 15.0]
    d = stats.paired(a, b)
    diffs = np.subtract(a, b)
    half = 2.776 * diffs.std(ddof=1) / math.sqrt(5)
    assert d.mean == pytest.approx(diffs.mean()) and d.high == pytest.approx(diffs.mean() + half)
    assert d.values == tuple(diffs) and d.n == 5
    # Unpaired spreads are large; pairing removes the per-seed level shift, so the interval excludes 0.
    assert d.excludes_zero() and stats.verdict(d, higher_is_better=False) == "better"


def test_verdicts_need_the_interval_not_the_signs():
    same_sign = stats.paired([1.0, 1.1, 5.0], [0.9, 1.0, 0.0])  # all three positive, interval across 0
    assert all(v > 0 for v in same_sign.values) and not same_sign.excludes_zero()
    assert stats.verdict(same_sign) == "inconclusive"
    tight = stats.paired([1.0, 1.01, 0.99, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.01])
    assert stats.verdict(tight, margin=0.05) == "equivalent"
    assert stats.verdict(tight) == "inconclusive"  # no margin stated: never "no difference"
    assert stats.verdict(stats.paired([3, 4, 5], [0, 0, 0])) == "better"
    assert stats.verdict(stats.paired([3, 4, 5], [0, 0, 0]), higher_is_better=False) == "worse"


def test_false_positive_rate_of_beats_is_about_5_percent_when_nothing_differs():
    rng = np.random.default_rng(0)
    wins = sum(stats.paired(rng.normal(0, 1, 3), rng.normal(0, 1, 3)).excludes_zero() for _ in range(4000))
    signs = sum(bool(np.all(rng.normal(0, 1, 3) > 0) or np.all(rng.normal(0, 1, 3) < 0)) for _ in range(4000))
    assert 0.04 < wins / 4000 < 0.06
    assert signs / 4000 > 0.2  # "same sign on 3 seeds" fires about a quarter of the time


def test_bootstrap_over_items_covers_a_known_difference():
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(300):
        a, b = rng.random(2000) < 0.9, rng.random(2000) < 0.85
        d = stats.bootstrap_paired(a, b, n_boot=500, seed=i)
        hits += d.low < 0.05 < d.high
    assert 0.90 < hits / 300 <= 1.0 and d.method == "bootstrap" and d.n == 2000


@settings(max_examples=50, deadline=None)
@given(st.floats(0.01, 10), st.floats(0.01, 5))
def test_seeds_for_is_the_smallest_n_reaching_the_half_width(std, half):
    n = stats.seeds_for(std, half)
    assert n == 1000 or stats.t_quantile_975(n - 1) * std / math.sqrt(n) <= half
    assert n == 2 or stats.t_quantile_975(n - 2) * std / math.sqrt(n - 1) > half


def test_sample_size_note_names_the_interval_and_the_seeds_needed():
    note = stats.sample_size_note(stats.paired([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]), 0.5)
    assert "n=3" in note and "seeds would bring it to 0.5" in note


@pytest.mark.parametrize("a,b,match", [([1.0, float("nan")], [0.0, 0.0], "diverged"), ([1.0, 2.0], [1.0], "pair"),
                                       ([], [], "empty"), ("ab", [1.0, 2.0], "numbers")])
def test_bad_input_says_what_to_do(a, b, match):
    with pytest.raises(ValueError, match=match):
        stats.paired(a, b)


def test_bad_margin_and_df_are_refused():
    with pytest.raises(ValueError, match="margin"):
        stats.verdict(stats.paired([1, 2], [0, 0]), margin=0)
    with pytest.raises(ValueError, match="degrees of freedom"):
        stats.t_quantile_975(0)


def test_chi_square_p_against_known_quantiles():
    # df = 1: a statistic of 3.841 is the 95% quantile; two cells of 100 expected each, 100 +- d: 2 d^2 / 100
    d = (3.841 * 50) ** 0.5
    counts = torch.tensor([100 + d, 100 - d])
    assert stats.chi_square_p(counts, torch.tensor([0.5, 0.5])) == pytest.approx(0.05, abs=2e-3)
    assert stats.chi_square_p(torch.tensor([50, 50]), torch.tensor([0.5, 0.5])) == pytest.approx(1.0)
    assert stats.chi_square_p(torch.tensor([0, 10]), torch.tensor([1.0, 0.0])) == 0.0     # impossible counts
    # 6 cells (df = 5): the 99.9% quantile is 20.515
    e = torch.full((6,), 100.0)
    o = e.clone()
    o[0] += (20.515 * 100 / 2) ** 0.5  # the statistic: 2 d^2 / 100 = 20.515
    o[1] -= (20.515 * 100 / 2) ** 0.5
    assert stats.chi_square_p(o, e / e.sum()) == pytest.approx(1e-3, rel=0.01)
    with pytest.raises(ValueError, match="same cells"):
        stats.chi_square_p(torch.tensor([1, 2]), torch.tensor([0.3, 0.3, 0.4]))
