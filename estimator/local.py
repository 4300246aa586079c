"""Refit from our own measurements: local CPU inference (llama.cpp-style engines).

Features are what is known before a request runs: parameters, bits per weight,
uncached prompt tokens, output tokens and threads. They enter as physical
terms so few distinct models still extrapolate sensibly:
  prefill work   ~ params x uncached prompt tokens (split by threads, compute-bound)
  decode traffic ~ params x bits/8 x output tokens (weights streamed per token,
                   memory-bound, barely helped by more threads)
  decode compute ~ params x output tokens / threads
plus a fixed per-request and per-token cost. Coefficients are non-negative and
fitted on relative error; held-out metrics come from a seeded split. The fit is
a plain JSON dict. No I/O here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_percentage_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

from estimator.physical import fit_relative_nnls

KIND = "local-nnls"
FEATURES = ["one", "output_tokens", "prefill_work_per_thread", "decode_bytes", "decode_work_per_thread"]
INPUTS = ["params", "bits", "prompt_tokens_uncached", "output_tokens", "threads"]
TARGETS = {"latency_s": "e2e_s", "energy_kwh": "energy_kwh"}
MIN_ROWS = 20
TEST_FRACTION = 0.2
# A fit whose held-out MAPE is worse than this is stored but not used.
GOOD_MAPE = 0.5


class NotEnoughRows(ValueError):
    """Fewer usable measurements than a held-out split needs."""


def features(frame: pd.DataFrame) -> np.ndarray:
    """Feature matrix in FEATURES order from a frame with the INPUTS columns."""
    n = frame["params"].to_numpy(float)
    threads = np.maximum(frame["threads"].to_numpy(float), 1.0)
    p = frame["prompt_tokens_uncached"].to_numpy(float)
    o = frame["output_tokens"].to_numpy(float)
    columns = {
        "one": np.ones_like(n),
        "output_tokens": o,
        "prefill_work_per_thread": n * p / threads / 1e12,
        "decode_bytes": n * frame["bits"].to_numpy(float) / 8.0 * o / 1e12,
        "decode_work_per_thread": n * o / threads / 1e12,
    }
    return np.column_stack([columns[f] for f in FEATURES])


def usable(rows: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows with every input present and a positive target."""
    col = TARGETS[target]
    ok = rows.dropna(subset=INPUTS + [col])
    return ok[(ok[col] > 0) & (ok["params"] > 0) & (ok["bits"] > 0)]


def fit(rows: pd.DataFrame, target: str, *, min_rows: int = MIN_ROWS,
        test_fraction: float = TEST_FRACTION, seed: int = 0) -> dict:
    """Fit `target` ("latency_s" or "energy_kwh") on measured rows; raises NotEnoughRows.

    rows: one measured inference per row with INPUTS columns and e2e_s (s) /
    energy_kwh (kWh). Returns {"kind", "features", "coef", "metrics", "interval",
    "n_train", "n_test", "inputs_seen"}; metrics are on the held-out rows.
    """
    data = usable(rows, target)
    if len(data) < min_rows:
        raise NotEnoughRows(f"{target}: {len(data)} usable measurements, need at least {min_rows}")
    y = data[TARGETS[target]].to_numpy(float)
    X = features(data)
    idx_train, idx_test = train_test_split(np.arange(len(data)), test_size=test_fraction, random_state=seed)
    coef = fit_relative_nnls(X[idx_train], y[idx_train])
    pred = X[idx_test] @ coef
    y_test = y[idx_test]
    safe = np.maximum(pred, 1e-12)
    low, high = np.quantile(np.log(y_test / safe), (0.1, 0.9))
    return {
        "kind": KIND,
        "target": target,
        "features": FEATURES,
        "coef": coef.tolist(),
        "metrics": {"mape": float(mean_absolute_percentage_error(y_test, pred)),
                    "r2": float(r2_score(y_test, pred)) if len(y_test) > 1 else None,
                    "mse": float(mean_squared_error(y_test, pred))},
        "interval": {"coverage": 0.8, "low_factor": float(np.exp(low)), "high_factor": float(np.exp(high)),
                     "basis": "held-out split of the measurements"},
        "n_train": int(len(idx_train)),
        "n_test": int(len(idx_test)),
        # What the fit has seen: warn when asked to extrapolate far outside it.
        "inputs_seen": {c: [float(data[c].min()), float(data[c].max())] for c in INPUTS},
    }


def is_good(fit_json: dict) -> bool:
    mape = fit_json["metrics"]["mape"]
    return bool(np.isfinite(mape) and mape <= GOOD_MAPE)


def predict(fit_json: dict, *, params, bits, prompt_tokens_uncached, output_tokens, threads) -> dict:
    """Point estimate and 80 % interval in the fit's target unit (s or kWh)."""
    frame = pd.DataFrame({"params": np.atleast_1d(params).astype(float), "bits": bits,
                          "prompt_tokens_uncached": prompt_tokens_uncached,
                          "output_tokens": output_tokens, "threads": threads})
    value = features(frame) @ np.asarray(fit_json["coef"])
    iv = fit_json["interval"]
    return {"value": value, "low": value * iv["low_factor"], "high": value * iv["high_factor"]}
