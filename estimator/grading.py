"""Grading estimates against the measurements of the same inferences. Pure.

Each row pairs what the worker expected before an inference (value, and the
fit's interval factors) with what it measured. MAPE is a fraction with a 95 %
t-interval over rows; interval coverage is the share of measurements inside
the estimate's interval, with a 95 % Wilson interval (statsmodels). No I/O here.
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from statsmodels.stats.proportion import proportion_confint


def grade(estimated, measured, low_factor, high_factor, nominal: float = 0.8) -> dict | None:
    """{"rows", "mape", "mape_ci95", "coverage", "coverage_ci95", "nominal_coverage", "bias"} or None
    without rows. estimated/measured: same unit (s or kWh); factors: per-row interval
    multipliers (low <= 1 <= high). bias: median estimated / measured - 1."""
    est, y = np.asarray(estimated, float), np.asarray(measured, float)
    keep = np.isfinite(est) & np.isfinite(y) & (y > 0) & (est > 0)
    if not keep.any():
        return None
    est, y = est[keep], y[keep]
    lo, hi = np.asarray(low_factor, float)[keep] * est, np.asarray(high_factor, float)[keep] * est
    ape = np.abs(est - y) / y
    n = len(ape)
    mean = float(ape.mean())
    if n > 1 and ape.std(ddof=1) > 0:
        half = float(stats.t.ppf(0.975, n - 1) * ape.std(ddof=1) / np.sqrt(n))
        ci = [max(0.0, mean - half), mean + half]
    else:
        ci = [None, None]
    inside = int(((y >= lo) & (y <= hi)).sum())
    c_lo, c_hi = proportion_confint(inside, n, alpha=0.05, method="wilson")
    return {"rows": n, "mape": mean, "mape_ci95": ci, "coverage": inside / n,
            "coverage_ci95": [float(c_lo), float(c_hi)], "nominal_coverage": nominal,
            "bias": float(np.median(est / y) - 1)}
