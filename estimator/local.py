"""Refit from our own measurements: local CPU inference (llama.cpp-style engines).

Features are what is known before a request runs: parameters, effective bits
per weight (file bytes x 8 / parameters, as the worker records it), prompt
tokens (all, and those not in the prefix cache), output tokens and threads.
They enter as physical terms so few distinct models still extrapolate sensibly:
  prefill work      ~ params x uncached prompt tokens / threads (compute-bound)
  prefill attention ~ sqrt(params) x uncached x (cached + uncached / 2) / threads
                      (each new token attends to the context before it: quadratic
                      in a long prompt; sqrt(params) stands for layers x width)
  decode traffic    ~ params x bits/8 x output tokens (weights streamed per token,
                      memory-bound, barely helped by more threads)
  decode context    ~ sqrt(params) x output tokens x (prompt + output / 2) (the KV
                      cache read per generated token grows with the context)
  decode compute    ~ params x output tokens / threads
plus a fixed per-request and per-token cost. Coefficients are non-negative and
fitted on relative error.

Energy is predicted time x a power model (W = base + per thread), both fitted
on the same rows: dynamic energy per unit of work does not fall as 1/threads,
so energy does not get latency's thread terms directly.

Held-out metrics and the interval come from the newest rows (a time split: the
test rows are runs after the training rows, as new requests will be), never a
random split, which would put rows of the same model and prompt on both sides.
The 80 % interval is split-conformal on those held-out rows' log ratios. The
fit is a plain JSON dict. No I/O here.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_percentage_error, mean_squared_error, r2_score

from estimator.physical import fit_relative_nnls
from shared import predict as predict_

KIND = "local-nnls"
FORMAT = 2
FEATURES = predict_.FEATURES
POWER_FEATURES = predict_.POWER_FEATURES
INPUTS = ["params", "bits", "prompt_tokens_uncached", "output_tokens", "threads"]
TARGETS = {"latency_s": "e2e_s", "energy_kwh": "energy_kwh"}
MIN_ROWS = 20
TEST_FRACTION = 0.2
MIN_TEST_ROWS = 10
COVERAGE = 0.8
# A fit whose held-out MAPE is worse than this is stored but not used.
GOOD_MAPE = 0.25


class NotEnoughRows(ValueError):
    """Fewer usable measurements than a held-out split needs."""


def features(frame: pd.DataFrame) -> np.ndarray:
    """Latency feature matrix in FEATURES order from a frame with the INPUTS columns
    (and prompt_tokens, all prompt tokens, when some were cached)."""
    p_all = frame["prompt_tokens"] if "prompt_tokens" in frame else frame["prompt_tokens_uncached"]
    return predict_.features(params=frame["params"], bits=frame["bits"], prompt_tokens=p_all,
                             prompt_tokens_uncached=frame["prompt_tokens_uncached"],
                             output_tokens=frame["output_tokens"], threads=frame["threads"])


def power_features(frame: pd.DataFrame) -> np.ndarray:
    """Power-model features in POWER_FEATURES order: a base and one term per thread."""
    return predict_.power_features(frame["threads"])


def usable(rows: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows with every input present and a positive target (and, for energy, a positive time)."""
    cols = INPUTS + [TARGETS[target]] + (["e2e_s"] if target == "energy_kwh" else [])
    ok = rows.dropna(subset=cols)
    keep = (ok[TARGETS[target]] > 0) & (ok["params"] > 0) & (ok["bits"] > 0)
    if target == "energy_kwh":
        keep &= ok["e2e_s"] > 0
    return ok[keep]


def time_split(n: int, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions of n rows in time order: the newest rows are the test rows,
    at least MIN_TEST_ROWS of them (when half the rows allow it)."""
    n_test = max(math.ceil(n * test_fraction), min(MIN_TEST_ROWS, n // 2))
    return np.arange(n - n_test), np.arange(n - n_test, n)


def conformal_factors(y: np.ndarray, pred: np.ndarray, coverage: float = COVERAGE) -> dict:
    """Split-conformal multiplicative interval from held-out rows: the ceil((n+1) x coverage)-th
    smallest |log(y / pred)| is q, and [pred / e^q, pred x e^q] covers a new row with
    probability >= coverage when rows are exchangeable. q is infinite when n is too small."""
    scores = np.sort(np.abs(np.log(y / np.maximum(pred, 1e-300))))
    k = math.ceil((len(scores) + 1) * coverage)
    q = float(scores[k - 1]) if k <= len(scores) else math.inf
    return {"coverage": coverage, "low_factor": math.exp(-q), "high_factor": math.exp(q),
            "calibration_rows": int(len(scores)),
            "basis": "split conformal on the newest held-out measurements (time split)"}


def _order(data: pd.DataFrame) -> pd.DataFrame:
    """Rows in time order: by result id when present, else as given."""
    return data.sort_values("result_id", kind="stable") if "result_id" in data else data


def fit(rows: pd.DataFrame, target: str, *, min_rows: int = MIN_ROWS,
        test_fraction: float = TEST_FRACTION) -> dict:
    """Fit `target` ("latency_s" or "energy_kwh") on measured rows; raises NotEnoughRows.

    rows: one measured inference per row, in time order (or with result_id), with the
    INPUTS columns and e2e_s (s) / energy_kwh (kWh). The energy fit carries its own
    time model and a power model (W); energy = time x power. Returns {"kind",
    "features", "coef", "metrics", "interval", "n_train", "n_test", "inputs_seen", ...};
    metrics and interval are on the newest held-out rows.
    """
    data = _order(usable(rows, target))
    if len(data) < min_rows:
        raise NotEnoughRows(f"{target}: {len(data)} usable measurements, need at least {min_rows}")
    X, t = features(data), data["e2e_s"].to_numpy(float)
    train, test = time_split(len(data), test_fraction)
    coef = fit_relative_nnls(X[train], t[train])
    out = {"kind": KIND, "format": FORMAT, "target": target, "features": FEATURES, "coef": coef.tolist()}
    pred = X[test] @ coef
    if target == "energy_kwh":
        watts = data["energy_kwh"].to_numpy(float) * 3.6e6 / t          # mean power of each row (W)
        P = power_features(data)
        power = fit_relative_nnls(P[train], watts[train])
        out.update(power_features=POWER_FEATURES, power_coef=power.tolist())
        pred = pred * (P[test] @ power) / 3.6e6
    y_test = data[TARGETS[target]].to_numpy(float)[test]
    return {
        **out,
        "metrics": {"mape": float(mean_absolute_percentage_error(y_test, pred)),
                    "r2": float(r2_score(y_test, pred)) if len(y_test) > 1 else None,
                    "mse": float(mean_squared_error(y_test, pred)),
                    "basis": "newest rows held out (time split)"},
        "interval": conformal_factors(y_test, pred),
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        # What the fit has seen: warn when asked to extrapolate far outside it.
        "inputs_seen": {c: [float(data[c].min()), float(data[c].max())] for c in INPUTS},
        # The bits per weight of each (params, bits) pair measured: a variant whose bits lie between
        # two of these is interpolated, although CPU speed follows the quantization type's kernel.
        "weights_seen": sorted({(float(a), round(float(b), 3)) for a, b in zip(data["params"], data["bits"])}),
    }


def unmeasured_weights(fit_json: dict, params: float, bits: float, tolerance: float = 0.05) -> bool:
    """True when the fit has never seen this model size (params, relative 1 %) at these bits per
    weight (within `tolerance` bits): its figure is an interpolation across quantization types.
    False for fits stored before `weights_seen` was recorded (nothing known)."""
    seen = fit_json.get("weights_seen")
    if not seen:
        return False
    return not any(abs(p - params) <= 0.01 * params and abs(b - bits) <= tolerance for p, b in seen)


def is_good(fit_json: dict) -> bool:
    mape = fit_json["metrics"]["mape"]
    return bool(np.isfinite(mape) and mape <= GOOD_MAPE)


def predict(fit_json: dict, *, params, bits, prompt_tokens_uncached, output_tokens, threads,
            prompt_tokens=None) -> dict:
    """Point estimate and 80 % interval in the fit's target unit (s or kWh), as
    shared.predict evaluates it (the worker's estimate before each inference).

    prompt_tokens: all prompt tokens (cached + uncached); default: none cached."""
    return predict_.evaluate(fit_json, params=params, bits=bits, prompt_tokens_uncached=prompt_tokens_uncached,
                             output_tokens=output_tokens, threads=threads, prompt_tokens=prompt_tokens)
