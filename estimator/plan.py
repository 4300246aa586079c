"""An experiment's cost before it runs: per-variant estimates and totals. Pure.

The caller (greenctl plan) gathers the inputs: token counts of each task's
prompt, the model's card, the fit that answers for the queue's machines. Here
they become figures per inference (the mean over the experiment's tasks) and
totals (sums over its tasks). Intervals are the fit's 80 % intervals; a total's
interval adds the per-task bounds, since one variant's tasks share the fit's
error (they move together, not independently). No I/O here.
"""
from __future__ import annotations

import numpy as np

from estimator import formulas, hardware, local, physical
from shared import predict as predict_
from shared.accounting import at_the_wall

CHARS_PER_TOKEN = predict_.CHARS_PER_TOKEN
approx_tokens = predict_.approx_tokens


def common_prefix_tokens(prompts: list[str]) -> int:
    """Tokens of the prefix every prompt shares (instructions, few-shot examples): a worker's
    prefix cache holds it after its first task, so later tasks encode only the rest."""
    if len(prompts) < 2:
        return 0
    lo, hi = min(prompts), max(prompts)      # the common prefix of all is that of the extremes
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return approx_tokens(lo[:n]) if n else 0


def output_tokens(max_tokens: int, labels: list[str], constrained: bool) -> int:
    """Tokens generated per task: a constrained label's tokens plus end of text (at most
    max_tokens); free text is taken at its cap, max_tokens (an upper bound)."""
    if not constrained:
        return max_tokens
    return min(max_tokens, max(approx_tokens(x) for x in labels) + 1)


def _triple(values: np.ndarray, low: np.ndarray, high: np.ndarray, reduce) -> dict:
    return {"value": float(reduce(values)), "low": float(reduce(low)), "high": float(reduce(high))}


def _figures(lat: tuple, energy: tuple | None, intensity: float) -> dict:
    """Per-inference means and experiment totals from per-task (value, low, high) arrays."""
    out = {"per_inference": {"latency_s": _triple(*lat, np.mean)},
           "total": {"task_seconds": _triple(*lat, np.sum)}}
    if energy is None:
        out["per_inference"].update(energy_kwh=None, co2_kg=None)
        out["total"].update(energy_kwh=None, co2_kg=None)
        return out
    co2 = tuple(formulas.co2_kg(e, intensity) for e in energy)
    out["per_inference"].update(energy_kwh=_triple(*energy, np.mean), co2_kg=_triple(*co2, np.mean))
    out["total"].update(energy_kwh=_triple(*energy, np.sum), co2_kg=_triple(*co2, np.sum))
    return out


def prior(fit_json: dict, profile: hardware.GpuProfile, *, params: float, layers: int | None, bits: float,
          prompt_tokens: np.ndarray, output_tokens: int, carbon_intensity: float) -> dict:
    """Figures from the HELM prior (physical fit) under a GPU profile's power accounting.

    prompt_tokens: every task's prompt (count; HELM caches nothing). Energy is at
    the wall (x profile.pue); CO2 in kg at carbon_intensity kg/kWh."""
    df = physical.predict(fit_json, profile, params=params, bits=bits, prompt_tokens=np.asarray(prompt_tokens),
                          output_tokens=output_tokens, layers=layers, carbon_intensity=carbon_intensity)
    lat = (df["e2e_s"].to_numpy(), df["e2e_low_s"].to_numpy(), df["e2e_high_s"].to_numpy())
    energy = tuple(df[f"energy{s}_kwh"].to_numpy() for s in ("", "_low", "_high"))
    return _figures(lat, energy, carbon_intensity)


def measured(latency_fit: dict, energy_fit: dict | None, *, params: float, bits: float,
             prompt_tokens: np.ndarray, prompt_tokens_uncached: np.ndarray, output_tokens: int,
             threads: int | None, pue: float, carbon_intensity: float) -> dict:
    """Figures from a profile's fits on its own measurements (estimator.local).

    prompt_tokens / prompt_tokens_uncached: every task's prompt, all of it and the
    part not in the prefix cache (counts). Energy is the machine's (IT) energy x pue,
    at the wall; without an energy fit energy and CO2 are None. threads default to
    the most the fit has seen."""
    p = np.asarray(prompt_tokens_uncached, float)
    threads = threads or int(latency_fit["inputs_seen"]["threads"][1])
    inputs = dict(params=np.full(len(p), float(params)), bits=bits, prompt_tokens_uncached=p,
                  prompt_tokens=np.asarray(prompt_tokens, float), output_tokens=output_tokens, threads=threads)
    lat = local.predict(latency_fit, **inputs)
    energy = None
    if energy_fit is not None:
        e = local.predict(energy_fit, **inputs)
        energy = tuple(at_the_wall(e[k], pue) for k in ("value", "low", "high"))
    out = _figures((lat["value"], lat["low"], lat["high"]), energy, carbon_intensity)
    seen = latency_fit.get("inputs_seen", {})
    checks = {"params": [params], "bits": [bits], "prompt_tokens_uncached": p, "output_tokens": [output_tokens],
              "threads": [threads]}
    out["extrapolating"] = [k for k, (lo, hi) in seen.items()
                            if k in checks and not all(lo <= float(x) <= hi for x in checks[k])]
    out["threads"] = threads
    out["unmeasured_quantization"] = local.unmeasured_weights(latency_fit, params, bits)
    return out


def wall_seconds(task_seconds: dict, workers: int) -> dict:
    """Wall time (s) of a queue's tasks spread over `workers` workers that each run one task
    at a time (at least one worker assumed). Model loads are not included."""
    n = max(1, workers)
    return {k: v / n for k, v in task_seconds.items()}


def add(triples: list[dict | None]) -> dict | None:
    """Sum of {value, low, high} figures; None if any is unknown."""
    if not triples or any(t is None for t in triples):
        return None
    return {k: float(sum(t[k] for t in triples)) for k in ("value", "low", "high")}


def longest(triples: list[dict]) -> dict | None:
    """The queue that finishes last: queues run in parallel, so wall time is the maximum."""
    if not triples:
        return None
    return {k: float(max(t[k] for t in triples)) for k in ("value", "low", "high")}
