"""95 % bootstrap intervals for the benchmark tables (scipy.stats.bootstrap, percentile).

A gain counts only when its whole interval lies above zero: the tables mark the rest as no
change. Paired: the differences of one mode and `none` on the same frames (or windows), so the
scene's own ups and downs, which both see, cancel out.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import bootstrap

CONFIDENCE = 0.95
RESAMPLES = 2000


def mean_interval(differences: Sequence[float]) -> tuple[float, float] | None:
    """The 95 % interval of the mean of paired differences; None for fewer than 2 (no
    spread to resample), the value itself when they are all equal."""
    x = np.asarray([d for d in differences if d is not None and np.isfinite(d)], float)
    if len(x) < 2:
        return None
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    ci = bootstrap((x,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                   method="percentile", random_state=0).confidence_interval
    return float(ci.low), float(ci.high)


def mean_relative_interval(differences: Sequence[Sequence[float]], bases: Sequence[float]
                           ) -> tuple[float, float] | None:
    """The 95 % interval of the mean over drives of 100 * mean(differences_d) / base_d, each
    drive's differences resampled on their own; None unless every drive has 2 or more."""
    samples = [np.asarray([d for d in ds if d is not None and np.isfinite(d)], float)
               for ds in differences]
    if not samples or any(len(s) < 2 for s in samples) or any(b <= 0 for b in bases):
        return None
    scale = 100.0 / np.asarray(bases, float)

    def statistic(*xs: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean([np.mean(x, axis=axis) * k for x, k in zip(xs, scale)], axis=0)

    ci = bootstrap(samples, statistic, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                   method="percentile", random_state=0, vectorized=True).confidence_interval
    return float(ci.low), float(ci.high)


def significant(interval: tuple[float, float] | None) -> bool:
    """Whether an interval excludes zero (a gain or a loss, not noise)."""
    return interval is not None and (interval[0] > 0 or interval[1] < 0)
