"""Hardware profiles: the spec-sheet and accounting constants an estimate needs.

A profile is data, not a fit: device power, memory, bandwidth and peak
throughput come from vendor spec sheets; utilization and PUE are the paper's
defaults unless a profile says otherwise; `host_w` is the rest of the machine
as the energy meter of that setup counts it. Profiles that are not listed here
(e.g. a worker's CPU profile) get their estimates from fits on measurements.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from estimator import formulas


@dataclass(frozen=True)
class GpuProfile:
    name: str
    device: str
    tdp_w: float                    # W per device
    memory_gb: float                # GiB per device
    bandwidth_gb_s: float           # GB/s of device memory (1e9 bytes/s)
    # Dense peak TFLOPS by bits per weight of the matmuls. fp32 is plain FP32:
    # PyTorch leaves TF32 matmuls off by default.
    peak_tflops: dict = field(default_factory=dict)
    utilization: float = formulas.DEFAULT_UTILIZATION
    pue: float = formulas.DEFAULT_PUE
    host_w: float = 0.0
    # "utilization": devices x TDP x utilization (the paper's); "bandwidth": prefill at TDP,
    # decode at idle + the share of each step spent streaming weights (formulas.bandwidth_energy_kwh).
    power_model: str = "utilization"
    idle_fraction: float = 0.15     # idle draw as a fraction of TDP, for the bandwidth model
    note: str = ""

    def peak_flops(self, bits: float) -> float:
        """Peak FLOP/s for weights of `bits` bits; narrower than 16 bits computes at fp16 rate."""
        key = 32 if bits > 16 else 16
        return self.peak_tflops[key] * 1e12

    def with_overrides(self, **kwargs) -> "GpuProfile":
        """A copy with the given fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


_A100_80GB = dict(device="NVIDIA A100-SXM4-80GB", tdp_w=formulas.A100_TDP_W,
                  memory_gb=formulas.A100_MEMORY_GB, bandwidth_gb_s=2039.0,
                  peak_tflops={16: 312.0, 32: 19.5})

# The LLM-Perf machine's meter: GPU energy from NVML, CPU and RAM as CodeCarbon
# estimates them without RAPL: 50 % of the CPU's TDP (AMD EPYC 7742: 225 W) and
# 3 W per 8 GiB of RAM (540,671 MB = 503.5 GiB). The meter sits at the box: PUE 1.
LLM_PERF_HOST_W = 0.5 * 225.0 + 3.0 / 8.0 * (540671.627264e6 / 2**30)

PROFILES: dict[str, GpuProfile] = {
    p.name: p
    for p in (
        GpuProfile(name="a100-helm", **_A100_80GB,
                   note="HELM idealized runtime stack (Megatron-LM, fp16); paper energy defaults"),
        GpuProfile(name="a100-llm-perf", **_A100_80GB, pue=1.0, host_w=LLM_PERF_HOST_W, power_model="bandwidth",
                   note="LLM-Perf 1xA100 box: accounting as its meter (NVML + CodeCarbon CPU/RAM), PUE 1; "
                        "GPU power from the memory-bandwidth model"),
    )
}

DEFAULT_PROFILE = "a100-helm"
