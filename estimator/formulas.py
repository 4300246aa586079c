"""The R-ICE formulas as pure functions.

Every coefficient is a keyword argument with the paper's default, so a caller
can plug in measured values (utilization, PUE, grid intensity) without forking
the formula. No I/O here.

Sources: Sikand et al., "Breaking the ICE" (GREENS 2025), Eq. 1 and the
operational-emissions formula of Sec. IV; HELM-efficiency (Narayanan et al.
2023) for the latency decomposition.
"""
from __future__ import annotations

import math

from shared.accounting import at_the_wall, co2e_kg, kwh_from_joules, kwh_from_watts

# Paper defaults (Sec. IV-A1): NVIDIA A100-80GB, utilization 26 %, PUE 1.1.
A100_TDP_W = 400.0
A100_MEMORY_GB = 80.0
DEFAULT_UTILIZATION = 0.26
DEFAULT_PUE = 1.1
# World-average grid intensity, the figure CodeCarbon falls back to (kg CO2e/kWh).
DEFAULT_CARBON_INTENSITY = 0.475


def e2e_latency_s(prompt_encoding_s: float, per_output_token_s: float, output_tokens: int) -> float:
    """End-to-end latency (s) of one request, R-ICE Eq. 1: T = prompt_encoding(p) + (o - 1) * beta.

    prompt_encoding_s: time to encode the prompt and emit the first token (s).
    per_output_token_s: beta, the time for each further output token (s/token).
    output_tokens: o, the number of generated tokens (>= 1; 0 is treated as 1).
    """
    return prompt_encoding_s + max(output_tokens - 1, 0) * per_output_token_s


def energy_kwh(runtime_s: float, devices: float = 1.0, *, tdp_w: float = A100_TDP_W,
               utilization: float = DEFAULT_UTILIZATION, pue: float = DEFAULT_PUE,
               host_w: float = 0.0) -> float:
    """Operational energy (kWh) = (#devices x TDP x utilization + host) x runtime x PUE.

    runtime_s: end-to-end latency (s). devices: accelerators serving the model.
    tdp_w: thermal design power of one device (W). utilization: average fraction of
    TDP drawn (0..1). pue: data-centre power usage effectiveness (>= 1).
    host_w: power of the rest of the machine (CPU, RAM) in W; the paper counts
    accelerators only, so its default is 0.
    """
    watts = devices * tdp_w * utilization + host_w
    return at_the_wall(kwh_from_watts(watts, runtime_s), pue)


def bandwidth_energy_kwh(prompt_s, e2e_s, busy, devices=1.0, *, tdp_w: float = A100_TDP_W,
                         idle_fraction: float = 0.15, host_w: float = 0.0, pue: float = 1.0):
    """Energy (kWh) with a memory-bandwidth power model instead of a fixed utilization.

    Prefill is compute-bound: the devices draw TDP for prompt_s (s). Each decode step
    draws idle + (TDP - idle) x busy, busy (0..1) being the share of the step spent
    streaming weights at spec-sheet bandwidth (memory floor / step time), for the rest
    of e2e_s. idle = idle_fraction x TDP (W). host_w (W) runs for all of e2e_s; x pue."""
    idle = idle_fraction * tdp_w
    decode_s = e2e_s - prompt_s
    device_j = devices * (prompt_s * tdp_w + decode_s * (idle + (tdp_w - idle) * busy))
    return at_the_wall(kwh_from_joules(device_j + host_w * e2e_s), pue)


def co2_kg(energy: float, carbon_intensity: float = DEFAULT_CARBON_INTENSITY) -> float:
    """Operational emissions (kg CO2e) = energy (kWh) x grid carbon intensity (kg CO2e/kWh),
    at R-ICE's default intensity (shared.accounting.co2e_kg)."""
    return co2e_kg(energy, carbon_intensity)


def weight_bytes(params: float, bits: float = 16.0) -> float:
    """Bytes of model weights: params x bits per weight / 8."""
    return params * bits / 8.0


def prefill_flops(params: float, prompt_tokens: int) -> float:
    """Forward-pass FLOPs to encode a prompt, ~2 x params x tokens (attention ignored)."""
    return 2.0 * params * prompt_tokens


def min_devices_for_memory(params: float, bits: float = 16.0, *,
                           device_memory_gb: float = A100_MEMORY_GB,
                           usable_fraction: float = 1.0) -> int:
    """Fewest devices whose memory holds the weights: ceil(bytes / (memory x usable_fraction)).

    device_memory_gb is in GiB (2**30 bytes), as GPU vendors count it.
    usable_fraction < 1 leaves headroom for the KV cache and activations.
    """
    capacity = device_memory_gb * 2**30 * usable_fraction
    return max(1, math.ceil(weight_bytes(params, bits) / capacity))
