"""Why the estimator stops near 20-25 % MAPE on LLM-Perf: diagnostics, not a product path.

Everything here DOES look at the validation targets, on purpose, to bound what
any estimator with the same inputs could reach. Nothing here feeds the product.

    .venv/bin/python bench/estimator_limits.py
"""
from __future__ import annotations

import json

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_percentage_error as mape
from sklearn.model_selection import GroupKFold, cross_val_predict

from estimator import datasets, hardware, reproduce


def smooth_fit_floor(rows) -> dict:
    """Best smooth function of (log params, log params^2, bits, layers) fitted ON the validation rows."""
    X = np.column_stack([np.log(rows["params"]), np.log(rows["params"]) ** 2, rows["bits"], rows["layers"]])
    out = {}
    for target in ("e2e_s", "energy_kwh"):
        y = np.log(rows[target])
        in_sample = np.exp(LinearRegression().fit(X, y).predict(X))
        held_out = np.exp(cross_val_predict(LinearRegression(), X, y, groups=rows["model"], cv=GroupKFold(5)))
        out[target] = {"in_sample": mape(rows[target], in_sample),
                       "leave_models_out": mape(rows[target], held_out)}
    return out


def energy_split(rows, fit_json) -> dict:
    """How much of the energy error is latency and how much is power."""
    pred = reproduce._physical(fit_json, rows, **reproduce.HEADLINE)
    true_power = rows["energy_kwh"] * 3.6e6 / rows["e2e_s"]
    pred_power = pred["energy_kwh"] * 3.6e6 / pred["e2e_s"]
    return {
        "true power with predicted latency": mape(rows["energy_kwh"], true_power * pred["e2e_s"] / 3.6e6),
        "predicted power with true latency": mape(rows["energy_kwh"], pred_power * rows["e2e_s"] / 3.6e6),
        "measured power W (min/median/max)": [float(true_power.min()), float(true_power.median()),
                                              float(true_power.max())],
        "predicted power W": float(pred_power.iloc[0]),
        "measured GPU share of TDP (median)": float(
            ((rows["prefill_energy_gpu_kwh"] + rows["decode_energy_gpu_kwh"]) * 3.6e6 / rows["e2e_s"]).median()
            / hardware.PROFILES["a100-llm-perf"].tdp_w),
    }


def same_size_spread(rows) -> dict:
    """Per-token latency of fp16 eager models of ~6-7B parameters: the architecture noise floor."""
    sub = rows[(rows["config"] == "float16-eager") & rows["params"].between(6e9, 7.1e9)]
    return {m: round(float(t) * 1e3, 1) for m, t in zip(sub["model"], sub["per_token_latency_s"])}


def main() -> None:
    rows = datasets.llm_perf_validation()
    fit_json = reproduce.fit_helm()
    dense = rows[~rows["moe"]]
    report = {
        "smooth_fit_on_validation_all": smooth_fit_floor(rows),
        "smooth_fit_on_validation_dense": smooth_fit_floor(dense),
        "energy_error_split": energy_split(rows, fit_json),
        "per_token_ms_fp16_eager_6_to_7B": same_size_spread(rows),
    }
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
