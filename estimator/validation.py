"""Scoring predictions against the LLM-Perf A100 rows, as the paper validates R-ICE.

Pure: takes the validation frame (estimator.datasets.llm_perf_validation) and a
frame of predictions with columns e2e_s and energy_kwh, returns plain dicts.
MAPE is a fraction (0.229 = 22.9 %). Reported targets are named latency_s and
energy_kwh.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_percentage_error

# reported name -> column in both frames
TARGETS = {"latency_s": "e2e_s", "energy_kwh": "energy_kwh"}
# Table IV of the paper.
PAPER_REPORTED_MAPE = {"latency_s": 0.229, "energy_kwh": 0.153}


def mape(rows: pd.DataFrame, predicted: pd.DataFrame, mask=None) -> dict[str, float]:
    """MAPE per target, on the rows where `mask` is true (all rows by default)."""
    keep = np.ones(len(rows), bool) if mask is None else np.asarray(mask, bool)
    return {name: float(mean_absolute_percentage_error(rows[col].to_numpy()[keep],
                                                       predicted[col].to_numpy()[keep]))
            for name, col in TARGETS.items()}


def per_model(rows: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, dict]:
    """model -> {rows, params, latency_s, energy_kwh}: MAPE over that model's configurations."""
    ape = pd.DataFrame({name: np.abs(predicted[col].to_numpy() - rows[col].to_numpy()) / rows[col].to_numpy()
                        for name, col in TARGETS.items()})
    ape["model"] = rows["model"].to_numpy()
    ape["params"] = rows["params"].to_numpy()
    out = {}
    for model, group in ape.groupby("model", sort=False):
        out[model] = {"rows": int(len(group)), "params": float(group["params"].iloc[0]),
                      **{name: float(group[name].mean()) for name in TARGETS}}
    return dict(sorted(out.items(), key=lambda kv: kv[1]["params"]))


def coverage(truth, low, high) -> float:
    """Fraction of true values inside [low, high]."""
    truth, low, high = (np.asarray(x, float) for x in (truth, low, high))
    return float(np.mean((truth >= low) & (truth <= high)))
