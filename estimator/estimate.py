"""One request's latency, energy and CO2 from a stored (or bundled) fit. Pure.

Two kinds of fit answer an estimate:
- a GPU profile (estimator.hardware.PROFILES) uses the physical fit trained on
  HELM, stored under FIT_PROFILE, and the profile's power accounting;
- any other profile (a worker's hardware profile) uses the latency and energy
  fits refitted from its own measurements (estimator.local).
"""
from __future__ import annotations

from dataclasses import dataclass

from estimator import formulas, hardware, local, physical

FIT_PROFILE = "a100-helm"     # every GPU profile shares the HELM fit; they differ in accounting
LATENCY, ENERGY = "latency_s", "energy_kwh"


@dataclass(frozen=True)
class Request:
    params: float
    prompt_tokens: int
    output_tokens: int
    bits: float = 16.0
    layers: int | None = None
    devices: int | None = None
    threads: int | None = None


def _triple(value: float, low: float, high: float) -> dict:
    return {"value": float(value), "low": float(low), "high": float(high)}


def gpu(fit_json: dict, profile: hardware.GpuProfile, req: Request, *,
        carbon_intensity: float = formulas.DEFAULT_CARBON_INTENSITY) -> dict:
    """Estimate on a GPU profile with the physical fit; intervals are 80 %."""
    row = physical.predict(fit_json, profile, params=req.params, bits=req.bits,
                           prompt_tokens=req.prompt_tokens, output_tokens=req.output_tokens,
                           devices=req.devices, layers=req.layers,
                           carbon_intensity=carbon_intensity).iloc[0]
    return {
        "latency_s": _triple(row["e2e_s"], row["e2e_low_s"], row["e2e_high_s"]),
        "energy_kwh": _triple(row["energy_kwh"], row["energy_low_kwh"], row["energy_high_kwh"]),
        "co2_kg": _triple(row["co2_kg"], row["co2_low_kg"], row["co2_high_kg"]),
        "detail": {"prompt_encoding_s": float(row["prompt_encoding_s"]),
                   "per_output_token_s": float(row["per_token_s"]),
                   "devices": int(row["devices"]), "layers": int(row["layers"]),
                   # mean power of the request at the meter (W), whichever power model
                   "power_w": float(row["energy_kwh"] * 3.6e6 / profile.pue / row["e2e_s"]),
                   "power_model": profile.power_model,
                   "pue": profile.pue},
    }


def measured(latency_fit: dict, energy_fit: dict | None, req: Request, *, pue: float = 1.0,
             carbon_intensity: float = formulas.DEFAULT_CARBON_INTENSITY) -> dict:
    """Estimate on a profile refitted from measurements (machine energy x pue).

    prompt tokens count as uncached; threads default to the most the fit has
    seen. Without an energy fit, energy and CO2 are None.
    """
    threads = req.threads or int(latency_fit["inputs_seen"]["threads"][1])
    inputs = dict(params=req.params, bits=req.bits, prompt_tokens_uncached=req.prompt_tokens,
                  output_tokens=req.output_tokens, threads=threads)
    lat = local.predict(latency_fit, **inputs)
    out = {"latency_s": _triple(lat["value"][0], lat["low"][0], lat["high"][0]),
           "energy_kwh": None, "co2_kg": None,
           "detail": {"threads": threads, "pue": pue, "extrapolating": _outside(latency_fit, inputs)}}
    if energy_fit is not None:
        e = local.predict(energy_fit, **inputs)
        energy = [float(e[k][0]) * pue for k in ("value", "low", "high")]
        out["energy_kwh"] = _triple(*energy)
        out["co2_kg"] = _triple(*(formulas.co2_kg(x, carbon_intensity) for x in energy))
    return out


def _outside(fit_json: dict, inputs: dict) -> list[str]:
    """Inputs outside the range the fit was trained on (the estimate extrapolates)."""
    seen = fit_json.get("inputs_seen", {})
    return [k for k, (lo, hi) in seen.items() if not lo <= float(inputs[k]) <= hi]
