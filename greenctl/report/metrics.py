"""Classification and cost metrics of one variant: pure functions over rows.

Metrics come from scikit-learn. An answer that names no label counts as wrong
(it is scored as the pseudo-label "<unparsed>"), as a user would count it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

UNPARSED = "<unparsed>"


def classification(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]) -> dict:
    """Accuracy, weighted and macro precision/recall/F1 over the given labels."""
    if not y_true:
        return {k: None for k in ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted",
                                  "precision_macro", "recall_macro", "f1_macro")}
    pred = [p if p is not None else UNPARSED for p in y_pred]
    out = {"accuracy": float(accuracy_score(y_true, pred))}
    for avg in ("weighted", "macro"):
        p, r, f, _ = precision_recall_fscore_support(y_true, pred, labels=list(labels),
                                                     average=avg, zero_division=0)
        out |= {f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)}
    return out


def confusion(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]) -> dict:
    """Rows: true label; columns: predicted label, plus <unparsed> when any answer named none."""
    pred = [p if p is not None else UNPARSED for p in y_pred]
    columns = list(labels) + ([UNPARSED] if UNPARSED in pred else [])
    if not y_true:
        return {"labels": list(labels), "columns": columns, "matrix": []}
    matrix = confusion_matrix(y_true, pred, labels=columns)[: len(labels)]
    return {"labels": list(labels), "columns": columns, "matrix": matrix.tolist()}


def mean_ci95(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): a normal-approximation 95 % interval of the mean."""
    if len(values) == 0:
        return None, None, None
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if len(arr) < 2:
        return mean, mean, mean
    half = 1.96 * float(arr.std(ddof=1)) / np.sqrt(len(arr))
    return mean, mean - half, mean + half


def relative_change(value: float | None, baseline: float | None) -> float | None:
    """(value - baseline) / baseline, or None when undefined."""
    if value is None or baseline in (None, 0):
        return None
    return (value - baseline) / baseline


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """Which (cost, quality) points no other point beats: True when no point has
    cost <= and quality >= with one of them strictly better. Points with a None
    are never on the front (they cannot be compared)."""
    known = [(i, c, q) for i, (c, q) in enumerate(points) if c is not None and q is not None]
    front = [False] * len(points)
    for i, c, q in known:
        front[i] = not any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for _, c2, q2 in known)
    return front


def energy_split(rows: Sequence[tuple[float, float, float, float]]) -> dict | None:
    """Mean energy per inference (kWh) split into prompt, decode and other, in
    proportion to time: rows are (energy_kwh, prompt_s, decode_s, e2e_s).

    The meter measures a whole task, not its phases, so this split is an
    ESTIMATE (it assumes the same power in both phases); "other" is the rest of
    the task (model load, tokenization, the meter's own overhead). None when no
    row has phase timings.
    """
    timed = [(e, p, d, max(t, p + d)) for e, p, d, t in rows if p + d > 0]
    if not timed:
        return None
    prompt = [e * p / t for e, p, d, t in timed]
    decode = [e * d / t for e, p, d, t in timed]
    other = [e - pe - de for (e, *_), pe, de in zip(timed, prompt, decode)]
    n = len(timed)
    return {"prompt_kwh_per_inference": sum(prompt) / n, "decode_kwh_per_inference": sum(decode) / n,
            "other_kwh_per_inference": sum(other) / n, "n": n,
            "basis": "estimate: each task's measured energy split in proportion to its prompt and decode time"}


def busy_spans(rows: Sequence[tuple[str, float, float]]) -> dict[str, float]:
    """Seconds each worker spent on the experiment, first start to last end:
    rows are (worker, start, end) in seconds on one clock."""
    spans: dict[str, tuple[float, float]] = {}
    for worker, start, end in rows:
        lo, hi = spans.get(worker, (start, end))
        spans[worker] = (min(lo, start), max(hi, end))
    return {w: hi - lo for w, (lo, hi) in spans.items()}
