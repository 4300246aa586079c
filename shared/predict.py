"""Evaluating a local estimator fit (estimator.local's JSON) for one request. Pure (numpy only).

The worker records, before each inference, the estimate it expects; it may not
import estimator (an independent layer), so the fit's formula lives here and
estimator.local fits its coefficients with these same features. Units: seconds
for a latency fit, kWh (the machine's own, PUE not applied) for an energy fit.
"""
from __future__ import annotations

import math

import numpy as np

FEATURES = ["one", "output_tokens", "prefill_work_per_thread", "prefill_attention_per_thread", "decode_bytes",
            "decode_context", "decode_work_per_thread"]
# Fits stored before format 2: five features, energy fitted on them directly.
LEGACY_FEATURES = ["one", "output_tokens", "prefill_work_per_thread", "decode_bytes", "decode_work_per_thread"]
POWER_FEATURES = ["one", "threads"]
# Characters per token of English text under BPE tokenizers: an estimate made before
# the prompt is tokenized counts its tokens this way.
CHARS_PER_TOKEN = 4.0


def approx_tokens(text: str) -> int:
    """Tokens of `text` (count), approximated as characters / CHARS_PER_TOKEN, at least 1."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def common_prefix_chars(a: str, b: str) -> int:
    """Characters at the start of `a` and `b` that agree (what a prefix cache could reuse)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def features(*, params, bits, prompt_tokens, prompt_tokens_uncached, output_tokens, threads) -> np.ndarray:
    """Latency features (rows x FEATURES), arrays or scalars; see estimator.local for the physics.

    params: count; bits: bits per weight; prompt_tokens: all prompt tokens;
    prompt_tokens_uncached: those not in the prefix cache; threads: CPU threads."""
    n, bits, p_new, p_all, o, threads = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(x, float)) for x in (params, bits, prompt_tokens_uncached, prompt_tokens,
                                                        output_tokens, threads)))
    threads = np.maximum(threads, 1.0)
    p_all = np.maximum(p_all, p_new)
    width = np.sqrt(n)       # stands for layers x hidden width, which scales as sqrt(params)
    columns = {
        "one": np.ones_like(n),
        "output_tokens": o,
        "prefill_work_per_thread": n * p_new / threads / 1e12,
        "prefill_attention_per_thread": width * p_new * (p_all - p_new / 2) / threads / 1e12,
        "decode_bytes": n * bits / 8.0 * o / 1e12,
        "decode_context": width * o * (p_all + o / 2) / 1e12,
        "decode_work_per_thread": n * o / threads / 1e12,
    }
    return np.column_stack([columns[f] for f in FEATURES])


def power_features(threads) -> np.ndarray:
    """Power-model features (rows x POWER_FEATURES): a base and one term per thread."""
    threads = np.maximum(np.atleast_1d(np.asarray(threads, float)), 1.0)
    return np.column_stack([np.ones_like(threads), threads])


def evaluate(fit_json: dict, *, params, bits, prompt_tokens_uncached, output_tokens, threads,
             prompt_tokens=None) -> dict:
    """{"value", "low", "high"} arrays in the fit's unit (s or kWh), the interval the fit's
    (80 % unless it says otherwise). prompt_tokens defaults to none cached."""
    X = features(params=params, bits=bits, prompt_tokens_uncached=prompt_tokens_uncached,
                 prompt_tokens=prompt_tokens_uncached if prompt_tokens is None else prompt_tokens,
                 output_tokens=output_tokens, threads=threads)
    names = fit_json.get("features", FEATURES)
    if names == LEGACY_FEATURES:
        X = X[:, [FEATURES.index(f) for f in LEGACY_FEATURES]]
    elif names != FEATURES:
        raise ValueError(f"fit features {names} are not ones this version knows: refit")
    value = X @ np.asarray(fit_json["coef"], float)
    if "power_coef" in fit_json:          # energy = time x power (W), in kWh
        rows = np.broadcast_to(np.atleast_1d(np.asarray(threads, float)), value.shape)
        value = value * (power_features(rows) @ np.asarray(fit_json["power_coef"], float)) / 3.6e6
    iv = fit_json["interval"]
    return {"value": value, "low": value * iv["low_factor"], "high": value * iv["high_factor"]}
