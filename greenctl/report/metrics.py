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
