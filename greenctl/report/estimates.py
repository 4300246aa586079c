"""CO2e per inference of a variant that has no finished result, from the
estimator (estimator.estimate.measured: fits refitted from this machine's own
measurements). The estimate is never presented as a measurement.

`request_inputs` is pure: it takes what the estimator needs from the report
(the model's parameter count, the variant's bits per weight, tokens from the
measured variants, the machine they ran on). `estimate_unmeasured` reads the
stored fits: the only I/O here.
"""
from __future__ import annotations

from statistics import mean

from shared.variants import nominal_bits

INTERVAL = "80 % (estimator)"


def _bits(variant: dict) -> float | None:
    bits = (variant.get("model_info") or {}).get("bits_per_weight")
    if bits:
        return float(bits)
    return nominal_bits(variant["variant"])   # ggml block sizes: q4_0 -> 4.5 bits per weight


def _params(variant: dict, same_model: list[dict]) -> float | None:
    for v in [variant, *same_model]:
        count = (v.get("model_info") or {}).get("parameter_count")
        if count:
            return float(count)
    from estimator import datasets   # bundled model cards (parameter counts of known models)

    cards = datasets.model_cards()
    return float(cards.loc[variant["model"], "params"]) if variant["model"] in cards.index else None


def request_inputs(report: dict, index: int, params: float | None = None) -> tuple[dict | None, str | None]:
    """(inputs, None) for the estimator, or (None, why it cannot estimate this variant)."""
    v = report["variants"][index]
    measured = [w for w in report["variants"] if w["n"]]
    if not measured:
        return None, "no variant of this experiment has finished a task: nothing to take tokens and machine from"
    same_model = [w for w in measured if w["model"] == v["model"]]
    same_queue = [w for w in measured if w["queue"] == v["queue"]]
    tokens_from = same_model or measured        # the same tokenizer reads the same prompt alike
    machine_from = same_queue or measured       # the same queue runs on the same machines
    bits = _bits(v)
    if bits is None:
        return None, f"bits per weight of {v['variant']!r} unknown (not a GGUF quantization name)"
    if params is None:
        return None, f"parameter count of {v['model']!r} unknown (no measured variant of it, no model card)"
    machines: dict[str, int] = {}
    for w in machine_from:
        for m in w["by_machine"]:
            machines[m["hardware_profile"]] = machines.get(m["hardware_profile"], 0) + m["n"]
    profile = max(machines, key=machines.get)
    return {
        "hardware_profile": profile, "params": params, "bits": bits,
        "prompt_tokens": round(mean(w["prompt_tokens_uncached_mean"] for w in tokens_from)),
        "output_tokens": max(1, round(mean(w["output_tokens_mean"] for w in tokens_from))),
        "carbon_intensity_kg_per_kwh": mean(w["carbon_intensity_kg_per_kwh"] for w in machine_from),
        "pue": mean(w["pue"] for w in machine_from),
        "basis": f"tokens from {', '.join(w['variant'] for w in tokens_from)}; machine {profile} "
                 f"(where {', '.join(w['variant'] for w in machine_from)} ran)",
    }, None


def estimate_unmeasured(db: str, report: dict) -> dict[int, dict]:
    """variant index -> {"status": "estimated", "co2_kg": {value, low, high}, ...} or
    {"status": "unavailable", "reason": ...}, for every variant with no finished task."""
    from estimator import estimate as est, store

    out = {}
    for i, v in enumerate(report["variants"]):
        if v["n"]:
            continue
        same_model = [w for w in report["variants"] if w["model"] == v["model"] and w["n"]]
        inputs, reason = request_inputs(report, i, _params(v, same_model))
        if reason:
            out[i] = {"status": "unavailable", "reason": reason}
            continue
        profile = inputs["hardware_profile"]
        latency_fit = store.latest_fit(db, profile, est.LATENCY)
        energy_fit = store.latest_fit(db, profile, est.ENERGY)
        if latency_fit is None or energy_fit is None:
            out[i] = {"status": "unavailable",
                      "reason": f"no good estimator fit for hardware profile {profile!r}: "
                                f"run `greenctl estimator fit --hardware {profile}`"}
            continue
        request = est.Request(params=inputs["params"], bits=inputs["bits"], prompt_tokens=inputs["prompt_tokens"],
                              output_tokens=inputs["output_tokens"])
        result = est.measured(latency_fit["model"], energy_fit["model"], request, pue=inputs["pue"],
                              carbon_intensity=inputs["carbon_intensity_kg_per_kwh"])
        out[i] = {"status": "estimated", "interval": INTERVAL, "co2_kg": result["co2_kg"],
                  "energy_kwh": result["energy_kwh"], "latency_s": result["latency_s"], "inputs": inputs,
                  "fit": f"{profile}/energy_kwh v{energy_fit['version']}, latency_s v{latency_fit['version']}",
                  # The fit learned from results whose energy may itself be an estimate (CodeCarbon's TDP model).
                  "fit_energy_methods": energy_fit["model"].get("energy_methods", []),
                  "extrapolating": result["detail"].get("extrapolating", [])}
    return out
