"""The improved estimator: physically shaped features, non-negative linear fits.

Why this shape: at batch 1 a transformer step is bounded below by reading every
weight once (bytes / bandwidth, memory-bound decode) and otherwise costs a fixed
amount per layer (kernel launches, norms, communication across devices) plus
matmul FLOPs (2 x params x tokens for the prompt, and attention's p^2 term).
The per-layer and FLOP coefficients are fitted on HELM by non-negative least
squares on relative error; the memory floor uses the spec-sheet bandwidth and
is what makes bits per weight matter. Which feature set to use is chosen by
leave-one-Megatron-profile-out cross-validation on HELM only.

A fit is a plain JSON dict (coefficients and constants; no pickles) so it can
be stored in Postgres; `predict` needs nothing else. No I/O here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from estimator import formulas
from estimator.hardware import GpuProfile

KIND = "physical-nnls"
FORMAT = 1

PER_TOKEN_CANDIDATES = {
    "layers": ["layers"],
    "layers+multi_device": ["layers", "layers_multi_device"],
    "const+layers+multi_device": ["one", "layers", "layers_multi_device"],
}
PROMPT_CANDIDATES = {
    "layers+compute": ["layers", "layers_multi_device", "compute_s"],
    "layers+compute+attention": ["layers", "layers_multi_device", "compute_s", "attention_s"],
    "const+layers+compute+attention": ["one", "layers", "layers_multi_device", "compute_s", "attention_s"],
}
# Decode lengths at which the end-to-end interval is calibrated.
_INTERVAL_OUTPUTS = (1, 8, 64, 256)
_INTERVAL_QUANTILES = (0.1, 0.9)


def _as_arrays(**columns) -> dict[str, np.ndarray]:
    arrays = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in columns.items()}
    n = max(len(a) for a in arrays.values())
    return {k: np.broadcast_to(a, (n,)).astype(float) for k, a in arrays.items()}


def features(names: list[str], *, params, layers, devices, bits, prompt_tokens=1,
             peak_flops_16: float, peak_flops_32: float) -> np.ndarray:
    """Feature matrix (rows x names). Times are in seconds, layers a count."""
    a = _as_arrays(params=params, layers=layers, devices=devices, bits=bits, p=prompt_tokens)
    peak = np.where(a["bits"] > 16, peak_flops_32, peak_flops_16)
    hidden = np.sqrt(a["params"] / (12.0 * a["layers"]))        # d_model from N ~ 12 L d^2
    columns = {
        "one": np.ones_like(a["params"]),
        "layers": a["layers"],
        "layers_multi_device": a["layers"] * (a["devices"] > 1),
        "compute_s": formulas.prefill_flops(a["params"], a["p"]) / (a["devices"] * peak),
        "attention_s": 4.0 * a["layers"] * a["p"] ** 2 * hidden / (a["devices"] * peak),
    }
    return np.column_stack([columns[n] for n in names])


def memory_floor_s(params, bits, devices, bandwidth_gb_s: float) -> np.ndarray:
    """Seconds to stream the weights once from device memory: the batch-1 lower bound."""
    a = _as_arrays(params=params, bits=bits, devices=devices)
    return formulas.weight_bytes(a["params"], a["bits"]) / (a["devices"] * bandwidth_gb_s * 1e9)


def fit_relative_nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimizing sum(((X c - y) / y)^2): relative error, like MAPE."""
    coef, _ = nnls(X / y[:, None], np.ones(len(y)))
    return coef


def _profile_constants(profile: GpuProfile) -> dict:
    return {"peak_flops_16": profile.peak_flops(16), "peak_flops_32": profile.peak_flops(32)}


def _leave_profile_out(data: pd.DataFrame, names: list[str], target: str, constants: dict) -> np.ndarray:
    """Relative errors of each row when its Megatron profile is left out of the fit."""
    errors = np.empty(len(data))
    for profile in data["profile"].unique():
        held = (data["profile"] == profile).to_numpy()
        train, test = data[~held], data[held]
        coef = fit_relative_nnls(_frame_features(train, names, constants), train[target].to_numpy())
        pred = _frame_features(test, names, constants) @ coef
        errors[held] = np.abs(pred / test[target].to_numpy() - 1)
    return errors


def _frame_features(df: pd.DataFrame, names: list[str], constants: dict) -> np.ndarray:
    p = df["prompt_tokens"] if "prompt_tokens" in df else 1
    return features(names, params=df["params"], layers=df["layers"], devices=df["devices"],
                    bits=df["bits"], prompt_tokens=p, **constants)


def _select(data: pd.DataFrame, candidates: dict, target: str, constants: dict) -> tuple[str, dict]:
    scores = {name: float(_leave_profile_out(data, cols, target, constants).mean())
              for name, cols in candidates.items()}
    return min(scores, key=scores.get), scores


def fit_depth_law(models: pd.DataFrame) -> dict:
    """log(layers) = intercept + slope * log(params): depth when only params are known."""
    unique = models.drop_duplicates("profile")
    slope, intercept = np.polyfit(np.log(unique["params"]), np.log(unique["layers"]), 1)
    return {"intercept": float(intercept), "slope": float(slope)}


def fit_usable_memory(models: pd.DataFrame, memory_gb: float) -> float:
    """Fraction of device memory the weights may fill, as HELM's deployments imply."""
    unique = models.drop_duplicates("profile")
    grid = np.round(np.arange(0.30, 1.0001, 0.05), 2)

    def error(fraction: float) -> float:
        pred = [formulas.min_devices_for_memory(n, b, device_memory_gb=memory_gb, usable_fraction=fraction)
                for n, b in zip(unique["params"], unique["bits"])]
        return float(np.mean(np.abs(np.array(pred) / unique["devices"].to_numpy() - 1)))

    return float(min(grid, key=error))


def fit(models: pd.DataFrame, prompts: pd.DataFrame, profile: GpuProfile) -> dict:
    """Fit on HELM (estimator.datasets.helm_models / helm_prompt_encoding); returns the JSON fit."""
    constants = _profile_constants(profile)
    per_token_name, per_token_cv = _select(models, PER_TOKEN_CANDIDATES, "per_token_s", constants)
    prompt_name, prompt_cv = _select(prompts, PROMPT_CANDIDATES, "prompt_encoding_s", constants)
    per_token_cols, prompt_cols = PER_TOKEN_CANDIDATES[per_token_name], PROMPT_CANDIDATES[prompt_name]
    result = {
        "kind": KIND,
        "format": FORMAT,
        "trained_on": "HELM idealized runtimes, A100 (Megatron-LM, fp16, batch 1)",
        "hardware": {"bandwidth_gb_s": profile.bandwidth_gb_s, "memory_gb": profile.memory_gb, **constants},
        "depth_law": fit_depth_law(models),
        "usable_memory_fraction": fit_usable_memory(models, profile.memory_gb),
        "per_token": _fit_part(models, per_token_cols, "per_token_s", constants),
        "prompt_encoding": _fit_part(prompts, prompt_cols, "prompt_encoding_s", constants),
        "cv": {"per_token_mape": per_token_cv, "prompt_encoding_mape": prompt_cv,
               "selected": {"per_token": per_token_name, "prompt_encoding": prompt_name}},
        "n_train": {"models": int(len(models)), "profiles": int(models["profile"].nunique()),
                    "prompt_rows": int(len(prompts))},
    }
    result["interval"] = _interval(models, prompts, result)
    return result


def _fit_part(data: pd.DataFrame, names: list[str], target: str, constants: dict) -> dict:
    coef = fit_relative_nnls(_frame_features(data, names, constants), data[target].to_numpy())
    return {"features": names, "coef": coef.tolist()}


def _interval(models: pd.DataFrame, prompts: pd.DataFrame, base: dict) -> dict:
    """80 % multiplicative interval of e2e latency from leave-one-profile-out predictions on HELM."""
    constants = {k: base["hardware"][k] for k in ("peak_flops_16", "peak_flops_32")}
    log_ratios = []
    for profile in models["profile"].unique():
        m_tr, p_tr = models[models["profile"] != profile], prompts[prompts["profile"] != profile]
        fold = {**base,
                "per_token": _fit_part(m_tr, base["per_token"]["features"], "per_token_s", constants),
                "prompt_encoding": _fit_part(p_tr, base["prompt_encoding"]["features"], "prompt_encoding_s",
                                             constants)}
        test = prompts[prompts["profile"] == profile].drop_duplicates("prompt_tokens")
        beta = float(models.loc[models["profile"] == profile, "per_token_s"].iloc[0])
        row = test.iloc[0]
        for o in _INTERVAL_OUTPUTS:
            truth = test["prompt_encoding_s"].to_numpy() + (o - 1) * beta
            pred = latency(fold, params=row["params"], bits=row["bits"], prompt_tokens=test["prompt_tokens"],
                           output_tokens=o, devices=row["devices"], layers=row["layers"])["e2e_s"]
            log_ratios.extend(np.log(truth / pred))
    log_ratios = np.asarray(log_ratios)
    low, high = np.quantile(log_ratios, _INTERVAL_QUANTILES)
    return {"coverage": 0.8, "low_factor": float(np.exp(low)), "high_factor": float(np.exp(high)),
            "e2e_mape": float(np.mean(np.abs(1 - np.exp(-log_ratios)))),   # |truth - pred| / truth
            "basis": "leave-one-Megatron-profile-out on HELM; wider on other software stacks"}


def layers_for(fit_json: dict, params) -> np.ndarray:
    law = fit_json["depth_law"]
    return np.maximum(1.0, np.round(np.exp(law["intercept"] + law["slope"] * np.log(params))))


def devices_for(fit_json: dict, params, bits) -> np.ndarray:
    memory = fit_json["hardware"]["memory_gb"]
    fraction = fit_json["usable_memory_fraction"]
    return np.array([formulas.min_devices_for_memory(n, b, device_memory_gb=memory, usable_fraction=fraction)
                     for n, b in zip(*np.broadcast_arrays(np.atleast_1d(params), np.atleast_1d(bits)))], float)


def latency(fit_json: dict, *, params, bits=16, prompt_tokens, output_tokens,
            devices=None, layers=None) -> dict[str, np.ndarray]:
    """Seconds for prompt encoding, each further token and the whole request (vectorized).

    params: parameter count; bits: bits per weight; devices/layers: known values,
    or None to use the fitted memory rule / depth law.
    """
    hw = fit_json["hardware"]
    a = _as_arrays(params=params, bits=bits, p=prompt_tokens, o=output_tokens,
                   layers=np.nan if layers is None else layers,
                   devices=np.nan if devices is None else devices)
    # Unknown depth / device count (NaN): the fitted depth law / memory rule fills in.
    layers = np.where(np.isnan(a["layers"]), layers_for(fit_json, a["params"]), a["layers"])
    devices = np.where(np.isnan(a["devices"]), devices_for(fit_json, a["params"], a["bits"]), a["devices"])
    constants = {"peak_flops_16": hw["peak_flops_16"], "peak_flops_32": hw["peak_flops_32"]}
    floor = memory_floor_s(a["params"], a["bits"], devices, hw["bandwidth_gb_s"])

    def part(key: str, p) -> np.ndarray:
        X = features(fit_json[key]["features"], params=a["params"], layers=layers, devices=devices,
                     bits=a["bits"], prompt_tokens=p, **constants)
        return np.maximum(X @ np.asarray(fit_json[key]["coef"]), floor)

    prompt = part("prompt_encoding", a["p"])
    beta = part("per_token", 1)
    e2e = prompt + np.maximum(a["o"] - 1, 0) * beta
    return {"prompt_encoding_s": prompt, "per_token_s": beta, "e2e_s": e2e,
            "devices": devices, "layers": layers, "busy": np.clip(floor / beta, 0.0, 1.0)}


def predict(fit_json: dict, profile: GpuProfile, *, params, bits=16, prompt_tokens, output_tokens,
            devices=None, layers=None, carbon_intensity: float = formulas.DEFAULT_CARBON_INTENSITY) -> pd.DataFrame:
    """Latency (s), energy (kWh) and CO2 (kg) with 80 % intervals, one row per request."""
    out = latency(fit_json, params=params, bits=bits, prompt_tokens=prompt_tokens,
                  output_tokens=output_tokens, devices=devices, layers=layers)
    iv = fit_json["interval"]
    df = pd.DataFrame(out)
    df["e2e_low_s"] = df["e2e_s"] * iv["low_factor"]
    df["e2e_high_s"] = df["e2e_s"] * iv["high_factor"]
    for suffix in ("", "_low", "_high"):
        if profile.power_model == "bandwidth":   # the interval scales the whole request's time
            scale = df[f"e2e{suffix}_s"] / df["e2e_s"]
            df[f"energy{suffix}_kwh"] = formulas.bandwidth_energy_kwh(
                df["prompt_encoding_s"] * scale, df[f"e2e{suffix}_s"], df["busy"], df["devices"],
                tdp_w=profile.tdp_w, idle_fraction=profile.idle_fraction, host_w=profile.host_w, pue=profile.pue)
        else:
            df[f"energy{suffix}_kwh"] = [
                formulas.energy_kwh(t, d, tdp_w=profile.tdp_w, utilization=profile.utilization,
                                    pue=profile.pue, host_w=profile.host_w)
                for t, d in zip(df[f"e2e{suffix}_s"], df["devices"])]
        df[f"co2{suffix}_kg"] = formulas.co2_kg(df[f"energy{suffix}_kwh"], carbon_intensity)
    return df
