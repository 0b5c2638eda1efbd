"""One statistics standard for every claim about training results: paired differences, intervals, verdicts.

Introduced in notebook 04_distill_mnist. "A beats B" only when the 95% interval of the per-seed paired
difference excludes 0; "no difference" only when it lies inside a margin the text states; anything else is
"inconclusive". Few seeds? `bootstrap_paired` resamples test items instead, and `seeds_for` says how many
seeds a wanted precision needs.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "t_quantile_975", "mean_interval", "paired", "bootstrap_paired", "verdict", "seeds_for",
           "sample_size_note"]

# Two-sided 95% Student-t quantiles (the 0.975 quantile) for 1..30 degrees of freedom (torch's StudentT has no icdf).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom: a table to 30, Cornish-Fisher above."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df={df!r}: degrees of freedom are a positive integer (seeds - 1)")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval, the per-seed (or per-item) values behind it and how it was made."""

    mean: float
    low: float
    high: float
    n: int
    values: tuple = ()
    method: str = "t"

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0: the only ground for 'A beats B'."""
        return self.low > 0 or self.high < 0

    def inside(self, margin: float) -> bool:
        """True when the whole interval lies within +-margin: the only ground for 'no difference'."""
        return -margin < self.low and self.high < margin

    def __str__(self) -> str:
        return f"{self.mean:+.3g} [{self.low:+.3g}, {self.high:+.3g}] (n={self.n}, 95% {self.method})"


def _finite(values, what: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{what}: pass a sequence of numbers (one per seed), got {values!r}") from None
    if not out:
        raise ValueError(f"{what} is empty: pass one value per seed")
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what} holds {bad[:3]}: a run diverged or was not measured; rerun that seed")
    return out


def mean_interval(values, what: str = "values") -> Interval:
    """Mean of per-seed values with its 95% t-interval (a single value has an infinite one). Notebook 04."""
    v = _finite(values, what)
    mean = statistics.fmean(v)
    if len(v) < 2:
        return Interval(mean, -math.inf, math.inf, 1, tuple(v))
    half = t_quantile_975(len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))
    return Interval(mean, mean - half, mean + half, len(v), tuple(v))


def paired(a, b) -> Interval:
    """The per-seed differences a - b (same seeds, same order), their mean and 95% t-interval. Notebook 04."""
    a, b = _finite(a, "a"), _finite(b, "b")
    if len(a) != len(b):
        raise ValueError(f"a has {len(a)} seeds and b {len(b)}: pair them seed by seed (same seeds for both)")
    return mean_interval([x - y for x, y in zip(a, b)], "a - b")


def bootstrap_paired(a, b, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Mean difference of per-test-item scores a - b (e.g. 0/1 correct), percentile bootstrap over items.

    Notebook 04_distill_mnist. For one or two seeds, where a t-interval over seeds says nothing; it measures the
    test set's noise only, not the seed's, and the text must say so.
    """
    a, b = np.asarray(_finite(a, "a")), np.asarray(_finite(b, "b"))
    if a.shape != b.shape:
        raise ValueError(f"a has {a.size} items and b {b.size}: score both models on the same test items")
    if n_boot < 100:
        raise ValueError(f"n_boot={n_boot}: use at least 100 resamples (2000 is the default)")
    d = a - b
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(d.mean()), float(low), float(high), int(d.size), (), "bootstrap")


def verdict(d: Interval, margin: float | None = None, higher_is_better: bool = True) -> str:
    """'better', 'worse', 'equivalent' (inside +-margin) or 'inconclusive', for the difference A - B. Notebook 04."""
    if margin is not None and not margin > 0:
        raise ValueError(f"margin={margin!r}: state the margin of 'no difference' as a positive number")
    if d.excludes_zero():
        return "better" if (d.low > 0) == higher_is_better else "worse"
    if margin is not None and d.inside(margin):
        return "equivalent"
    return "inconclusive"


def seeds_for(std: float, half_width: float, limit: int = 1000) -> int:
    """Smallest number of seeds whose 95% t-interval has at most `half_width` for per-seed spread `std`."""
    if not (std >= 0 and half_width > 0):
        raise ValueError(f"std={std!r}, half_width={half_width!r}: need std >= 0 and half_width > 0")
    for n in range(2, limit + 1):
        if t_quantile_975(n - 1) * std / math.sqrt(n) <= half_width:
            return n
    return limit


def sample_size_note(d: Interval, margin: float) -> str:
    """One sentence: the interval, and how many seeds would make its half-width `margin`. Notebook 04."""
    if d.n < 2:
        return f"{d}: one seed gives no interval; run at least 3"
    std = statistics.stdev(d.values) if d.values else d.half_width * math.sqrt(d.n) / t_quantile_975(d.n - 1)
    need = seeds_for(std, margin)
    return (f"{d}: half-width {d.half_width:.3g} with {d.n} seeds; about {need} seeds would bring it to "
            f"{margin:.3g} at this spread")


def chi_square_p(counts, expected_probs) -> float:
    """Pearson's chi-square p-value of counts against exact probabilities (cells expecting < 5 pooled). Notebook 16.

    Tests "these samples come from that distribution" (notebook 16: speculative sampling is exact); a p-value
    below the chosen false-alarm rate rejects it.
    """
    import torch  # only this test needs the regularised incomplete gamma function

    o = torch.as_tensor(counts, dtype=torch.double).flatten()
    probs = torch.as_tensor(expected_probs, dtype=torch.double).flatten()
    if o.shape != probs.shape or (o < 0).any() or not o.sum() > 0 or (probs < 0).any() \
            or abs(float(probs.sum()) - 1) > 1e-6:
        raise ValueError(f"counts ({tuple(o.shape)}, >= 0, not all 0) and expected_probs ({tuple(probs.shape)}, "
                         ">= 0, summing to 1) must describe the same cells")
    e = probs * o.sum()
    small = e < 5
    if small.any():
        e, o = torch.cat([e[~small], e[small].sum()[None]]), torch.cat([o[~small], o[small].sum()[None]])
    keep = e > 0
    if (o[~keep] > 0).any():
        return 0.0  # a count where the distribution puts no mass: impossible under it
    e, o = e[keep], o[keep]
    if len(e) < 2:
        return 1.0  # one cell: every sample agrees
    stat = ((o - e) ** 2 / e).sum()
    return float(torch.special.gammaincc(torch.tensor((len(e) - 1) / 2, dtype=torch.double), stat / 2))
