"""Uncertainty and paired verdicts on classification results: pure statistics, no I/O.

Everything here is a function of prediction lists (and, for costs, of per-sample
numbers); nothing reads a database, a file or the environment.

Scoring matches greenctl.report.metrics (scikit-learn, zero_division=0): an
answer that names none of `labels` (None or any other string) is scored as the
pseudo-label "<unparsed>", i.e. wrong.

Method of every quality interval: stratified percentile bootstrap over samples.
Samples are resampled with replacement *within* each true label (an experiment
draws its samples stratified by label, so the label counts are fixed by design).
Because the metrics depend on the samples only through the confusion matrix,
resampling the n_c samples of true label c is exactly a draw of that confusion
row from Multinomial(n_c, observed row proportions); for a pair of variants the
joint (answer of a, answer of b) cell is drawn the same way, so both variants
are scored on the same resampled samples. This gives the bootstrap
distribution at O(n_boot x labels^2) cost, independent of the number of samples.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

UNPARSED = "<unparsed>"
METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro",
           "precision_weighted", "recall_weighted", "f1_weighted")
QUALITY_METHOD = ("stratified percentile bootstrap over samples (resampled within each true label), "
                  "{n_boot} resamples, seed {seed}, {level:.0%} interval")
RATIO_METHOD = ("paired percentile bootstrap of the ratio of means over the same samples, "
                "{n_boot} resamples, seed {seed}, {level:.0%} interval")
MCNEMAR_METHOD = "McNemar's exact (binomial) test on per-sample correctness (statsmodels)"


# -- encoding ------------------------------------------------------------------------------------

def _codes(y_true: Sequence[str], preds: Sequence[Sequence[str | None]], labels: Sequence[str]):
    """Integer codes: true labels 0..L-1 (L = a true label outside `labels`), answers 0..L-1 or
    L = "<unparsed>" (None or anything not in labels). Returns (t, [p...], L)."""
    index = {lab: i for i, lab in enumerate(labels)}
    n_lab = len(labels)
    t = np.fromiter((index.get(v, n_lab) for v in y_true), dtype=np.int64, count=len(y_true))
    out = []
    for pred in preds:
        if len(pred) != len(y_true):
            raise ValueError(f"predictions have {len(pred)} entries, true labels {len(y_true)}")
        out.append(np.fromiter((index.get(v, n_lab) if v is not None else n_lab for v in pred),
                               dtype=np.int64, count=len(pred)))
    return t, out, n_lab


# -- metrics from confusion counts (vectorized over a leading resample axis) ----------------------

def metric_from_confusion(cm: np.ndarray, metric: str) -> np.ndarray:
    """One metric from confusion counts of shape (..., L+1, L+1): rows true (last row: true label
    outside `labels`), columns answered (last column: "<unparsed>"). Same definitions as
    scikit-learn's precision_recall_fscore_support(labels=labels, zero_division=0); a fraction 0..1."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    cm = np.asarray(cm, dtype=float)
    n_lab = cm.shape[-1] - 1
    total = cm.sum(axis=(-2, -1))
    diag = np.diagonal(cm, axis1=-2, axis2=-1)[..., :n_lab]
    if metric == "accuracy":
        return _div(diag.sum(-1), total)
    support = cm.sum(-1)[..., :n_lab]
    answered = cm.sum(-2)[..., :n_lab]
    if metric.startswith("precision"):
        per = _div(diag, answered)
    elif metric.startswith("recall"):
        per = _div(diag, support)
    else:
        per = _div(2 * diag, answered + support)
    if metric.endswith("macro"):
        return per.mean(-1)
    return _div((per * support).sum(-1), support.sum(-1))


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (scikit-learn's zero_division=0)."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=float), np.asarray(den, dtype=float))
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _confusion(t: np.ndarray, p: np.ndarray, n_lab: int) -> np.ndarray:
    """(L+1, L+1) confusion counts via np.bincount."""
    k = n_lab + 1
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _boot_rows(rows: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified bootstrap of count rows: rows (R, C) -> (n_boot, R, C), row r redrawn from
    Multinomial(rows[r].sum(), rows[r] / rows[r].sum())."""
    out = np.zeros((n_boot,) + rows.shape, dtype=np.int64)
    for r, row in enumerate(rows):
        n = int(row.sum())
        if n:
            out[:, r, :] = rng.multinomial(n, row / n, size=n_boot)
    return out


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


# -- public interface ----------------------------------------------------------------------------

def point(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str], metric: str) -> float:
    """The metric on the samples as they are (a fraction 0..1)."""
    t, (p,), n_lab = _codes(y_true, [y_pred], labels)
    return float(metric_from_confusion(_confusion(t, p, n_lab), metric))


def bootstrap_ci(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str], metric: str,
                 *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high) of `metric` (a fraction 0..1) with a stratified percentile bootstrap
    interval (see the module docstring). Empty input -> (nan, nan, nan)."""
    if len(y_true) == 0:
        return math.nan, math.nan, math.nan
    t, (p,), n_lab = _codes(y_true, [y_pred], labels)
    cm = _confusion(t, p, n_lab)
    boot = metric_from_confusion(_boot_rows(cm, n_boot, np.random.default_rng(seed)), metric)
    lo, hi = _percentile(boot, level)
    return float(metric_from_confusion(cm, metric)), lo, hi


def bootstrap_cis(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str],
                  metrics: Sequence[str] = METRICS, *, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """bootstrap_ci for several metrics at once, on the same resamples: {metric: (point, low, high)}."""
    if len(y_true) == 0:
        return {m: (math.nan, math.nan, math.nan) for m in metrics}
    t, (p,), n_lab = _codes(y_true, [y_pred], labels)
    cm = _confusion(t, p, n_lab)
    boot_cm = _boot_rows(cm, n_boot, np.random.default_rng(seed))
    return {m: (float(metric_from_confusion(cm, m)), *_percentile(metric_from_confusion(boot_cm, m), level))
            for m in metrics}


def paired_delta_ci(y_true: Sequence[str], pred_a: Sequence[str | None], pred_b: Sequence[str | None],
                    labels: Sequence[str], metric: str, *, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """(delta, low, high) with delta = metric(b) - metric(a) (fraction points) on the SAME samples:
    position i of pred_a and pred_b answer the same sample. Stratified paired percentile bootstrap:
    each resample scores both variants on the same resampled samples."""
    return paired_delta_cis(y_true, pred_a, pred_b, labels, (metric,), n_boot=n_boot, seed=seed,
                            level=level)[metric]


def paired_delta_cis(y_true: Sequence[str], pred_a: Sequence[str | None], pred_b: Sequence[str | None],
                     labels: Sequence[str], metrics: Sequence[str] = ("f1_macro", "f1_weighted"), *,
                     n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """paired_delta_ci for several metrics on the same resamples: {metric: (delta, low, high)}."""
    if len(y_true) == 0:
        return {m: (math.nan, math.nan, math.nan) for m in metrics}
    t, (a, b), n_lab = _codes(y_true, [pred_a, pred_b], labels)
    k = n_lab + 1
    # joint counts: row = true label, column = (answer of a) * k + (answer of b)
    joint = np.bincount(t * k * k + a * k + b, minlength=k * k * k).reshape(k, k * k)
    boot = _boot_rows(joint, n_boot, np.random.default_rng(seed)).reshape(n_boot, k, k, k)
    cm_a, cm_b = boot.sum(axis=3), boot.sum(axis=2)
    obs = joint.reshape(k, k, k)
    out = {}
    for m in metrics:
        delta = float(metric_from_confusion(obs.sum(1), m) - metric_from_confusion(obs.sum(2), m))
        d = metric_from_confusion(cm_b, m) - metric_from_confusion(cm_a, m)
        out[m] = (delta, *_percentile(d, level))
    return out


def mcnemar_exact(y_true: Sequence[str], pred_a: Sequence[str | None], pred_b: Sequence[str | None]) -> dict:
    """McNemar's exact test on per-sample correctness of a and b (answers compared to the true
    label; None is wrong). Keys: both_right, only_a_right, only_b_right, both_wrong (counts),
    pvalue (two-sided), method."""
    from statsmodels.stats.contingency_tables import mcnemar

    if not (len(y_true) == len(pred_a) == len(pred_b)):
        raise ValueError("y_true, pred_a and pred_b must have the same length")
    ra = np.array([p is not None and p == t for t, p in zip(y_true, pred_a)], dtype=bool)
    rb = np.array([p is not None and p == t for t, p in zip(y_true, pred_b)], dtype=bool)
    table = [[int((ra & rb).sum()), int((ra & ~rb).sum())],
             [int((~ra & rb).sum()), int((~ra & ~rb).sum())]]
    discordant = table[0][1] + table[1][0]
    pvalue = 1.0 if discordant == 0 else float(mcnemar(table, exact=True).pvalue)
    return {"both_right": table[0][0], "only_a_right": table[0][1], "only_b_right": table[1][0],
            "both_wrong": table[1][1], "pvalue": min(pvalue, 1.0), "method": MCNEMAR_METHOD}


def paired_ratio_ci(x_a: Sequence[float], x_b: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """(ratio, low, high) with ratio = mean(x_b) / mean(x_a) (dimensionless; e.g. energy per
    inference of b over a) and a paired percentile bootstrap interval: position i of x_a and x_b
    are the same sample, resampled together. nan when undefined (empty, or a mean of 0)."""
    xa, xb = np.asarray(x_a, dtype=float), np.asarray(x_b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError("x_a and x_b must be paired (same length)")
    n = len(xa)
    if n == 0 or xa.mean() == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    ma, mb = np.empty(n_boot), np.empty(n_boot)
    chunk = max(1, 4_000_000 // n)               # bound memory: at most ~4M indices at a time
    for s in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - s), n))
        ma[s:s + len(idx)] = xa[idx].mean(1)
        mb[s:s + len(idx)] = xb[idx].mean(1)
    ratio = _div(mb, ma)
    lo, hi = _percentile(ratio[ma != 0], level)
    return float(xb.mean() / xa.mean()), lo, hi


def samples_to_resolve(half_width_now: float, n_now: int, target_half_width: float) -> int:
    """Samples (per variant) for an interval of half-width `half_width_now` at `n_now` samples to
    shrink to `target_half_width` (same units), assuming half-width ~ 1/sqrt(n): ceil(n (hw/target)^2).
    Returns n_now when it is already narrow enough."""
    if n_now <= 0 or target_half_width <= 0 or not math.isfinite(half_width_now):
        raise ValueError("need n_now > 0, target_half_width > 0 and a finite half_width_now")
    if half_width_now <= target_half_width:
        return int(n_now)
    return int(math.ceil(n_now * (half_width_now / target_half_width) ** 2))


# -- baselines and verdicts ----------------------------------------------------------------------

def majority_answers(y_true: Sequence[str], labels: Sequence[str]) -> list[str]:
    """The majority-class classifier's answers: the most frequent true label (ties: first in
    `labels`) for every sample."""
    counts = {lab: 0 for lab in labels}
    for v in y_true:
        if v in counts:
            counts[v] += 1
    top = max(labels, key=lambda lab: counts[lab])   # max keeps the first of equal counts
    return [top] * len(y_true)


def uniform_random_expected(y_true: Sequence[str], labels: Sequence[str],
                            metrics: Sequence[str] = METRICS, *, n_sim: int = 2000,
                            seed: int = 0) -> dict[str, float]:
    """Expected metric of a classifier answering uniformly at random among `labels`, on these
    samples' true labels: the mean over n_sim simulated answer sets (fixed seed). Each true-label
    row of the simulated confusion matrix is Multinomial(n_c, 1/L)."""
    n_lab = len(labels)
    t, _, _ = _codes(y_true, [], labels)
    if len(t) == 0 or n_lab == 0:
        return {m: math.nan for m in metrics}
    support = np.bincount(t, minlength=n_lab + 1)
    rng = np.random.default_rng(seed)
    sims = np.zeros((n_sim, n_lab + 1, n_lab + 1), dtype=np.int64)
    for r, n in enumerate(support):
        if n:
            sims[:, r, :n_lab] = rng.multinomial(int(n), [1.0 / n_lab] * n_lab, size=n_sim)
    return {m: float(metric_from_confusion(sims, m).mean()) for m in metrics}


def dominant_share(y_pred: Sequence[str | None]) -> tuple[str | None, float]:
    """(most frequent answer, its share of all answers 0..1); None answers count as "<unparsed>"."""
    if len(y_pred) == 0:
        return None, math.nan
    values, counts = np.unique(np.array([p if p is not None else UNPARSED for p in y_pred], dtype=object),
                               return_counts=True)
    i = int(np.argmax(counts))
    return str(values[i]), float(counts[i] / len(y_pred))


def constant_answer_reasons(f1_low: dict[str, float], majority: dict[str, float], share: float,
                            *, max_share: float = 0.90) -> list[str]:
    """Why a variant is "no better than a constant answer" (empty list: it is not): its F1 interval
    reaches the majority-class figure (f1_low[m] <= majority[m] for m in f1_macro/f1_weighted), or
    one answer makes up >= max_share of its answers. Inputs are fractions 0..1."""
    reasons = []
    if share >= max_share:
        reasons.append(f"gives one answer for {share:.0%} of samples")
    for m in ("f1_macro", "f1_weighted"):
        lo, maj = f1_low.get(m), majority.get(m)
        if lo is not None and maj is not None and math.isfinite(lo) and lo <= maj:
            reasons.append(f"{m.replace('_', ' ')} lower bound {lo:.2f} reaches always-majority {maj:.2f}")
    return reasons


def delta_decided(low: float, high: float, tolerance: float) -> dict:
    """Decision on a paired delta interval [low, high] (fraction points), tolerance in the same
    units: "better" / "worse" when the interval excludes 0, "equivalent" (within +-tolerance) when
    its half-width is <= tolerance, else "undecided". Keys: decided (bool), verdict (str)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return {"decided": False, "verdict": "undecided"}
    if low > 0:
        return {"decided": True, "verdict": "better"}
    if high < 0:
        return {"decided": True, "verdict": "worse"}
    if (high - low) / 2 <= tolerance:
        return {"decided": True, "verdict": "equivalent"}
    return {"decided": False, "verdict": "undecided"}
