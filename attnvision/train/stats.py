"""Paired differences over seeds with a Student-t confidence interval, for :mod:`.compare`.

Two models trained with the same seed see the same data order and start from the same
initialisation seed, so their accuracies are paired: the interval is computed on the per-seed
differences ``d_k = a_k - b_k`` (Student, 1908): ``mean(d) ± t_{1-α/2, n-1} · sd(d) / √n``.

The t quantile is computed here, exactly for the integer degrees of freedom a seed count gives,
so that SciPy is not needed: the two-sided probability ``A(t | ν) = P(|T| < t)`` has the finite
closed forms of Abramowitz and Stegun, *Handbook of Mathematical Functions*, 26.7.3 (ν odd) and
26.7.4 (ν even), in ``θ = atan(t / √ν)``; it increases with t, so the quantile is found by
bisection to machine precision.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def t_two_sided(t: float, df: int) -> float:
    """``A(t | df) = P(|T| < t)`` for Student's t with ``df`` degrees of freedom (A&S 26.7.3-4)."""
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"t_two_sided: df must be a positive integer, got {df!r}")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # 26.7.3: (2/π)[θ + sinθ cosθ (1 + 2/3 cos²θ + ... + 2·4···(ν-3)/1·3···(ν-2) · cos^{ν-3}θ)]
        term, series = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= (2 * k) / (2 * k + 1) * c2
            series += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    # 26.7.4: sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ... + 1·3···(ν-3) / 2·4···(ν-2) cos^{ν-2}θ)
    term = series = 1.0
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * c2
        series += term
    return math.sin(theta) * series


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``t_quantile(0.975, 2)`` = 4.3027)."""
    if not 0 < p < 1:
        raise ValueError(f"t_quantile: p must lie in (0, 1), got {p!r}")
    if p == 0.5:
        return 0.0
    target = abs(2 * p - 1)  # P(|T| < t) for the upper quantile
    lo, hi = 0.0, 1.0
    while t_two_sided(hi, df) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_two_sided(mid, df) < target else (lo, mid)
    t = (lo + hi) / 2
    return t if p > 0.5 else -t


@dataclass(frozen=True)
class Paired:
    """The mean of paired differences over ``n`` seeds and its confidence interval (``None`` for one seed)."""

    mean: float
    n: int
    low: float | None = None
    high: float | None = None

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly above or below 0: a difference larger than the seed spread explains."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def paired_difference(a: list[float], b: list[float], confidence: float = 0.95) -> Paired:
    """``mean(a_k - b_k)`` and its Student-t interval at ``confidence`` (pairs by position)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference: needs two equally long, non-empty lists, got {len(a)} and "
                         f"{len(b)} values")
    diffs = [x - y for x, y in zip(a, b)]
    mean, n = statistics.fmean(diffs), len(diffs)
    if n == 1:
        return Paired(mean, n)
    half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return Paired(mean, n, mean - half, mean + half)
