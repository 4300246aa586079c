"""Energy per task from one long-lived CodeCarbon tracker per worker process.

Creating a tracker costs seconds, so the worker creates one and opens a
begin/end window per task (`start_task`/`stop_task`). The tracker measures the
whole machine (`tracking_mode="machine"`): an Ollama server is not our process.

Energy is stored raw (PUE 1 inside CodeCarbon); the experiment's PUE and grid
carbon intensity are applied here, per task, so one worker serves experiments
with different carbon settings. Every reading says how it was obtained.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

# CodeCarbon CPU modes -> how the CPU energy was obtained.
_CPU_METHODS = {
    "intel_rapl": "rapl",
    "apple_powermetrics": "powermetrics",
    "intel_power_gadget": "powermetrics",
}
METHODS = ("rapl", "nvml", "powermetrics", "estimated", "forced")


@dataclass(frozen=True)
class EnergyReading:
    """Energy of one begin/end window. kWh at the wall (PUE applied), kg CO2e."""
    cpu_kwh: float
    ram_kwh: float
    gpu_kwh: float
    energy_kwh: float
    co2_kg: float
    duration_s: float
    method: str                    # one of METHODS, for the CPU (the part that dominates here)
    detail: str                    # per component, e.g. "cpu=rapl ram=estimated gpu=none"
    carbon_intensity_kg_per_kwh: float
    pue: float


def grid_intensity_kg_per_kwh(country_iso_code: str, forced_g_per_kwh: float | None = None) -> float:
    """Carbon intensity of the grid, kg CO2e/kWh: forced, else CodeCarbon's energy-mix table."""
    if forced_g_per_kwh is not None:
        return forced_g_per_kwh / 1000.0
    from codecarbon.input import DataSource

    mix = DataSource().get_global_energy_mix_data()
    try:
        return mix[country_iso_code.upper()]["carbon_intensity"] / 1000.0
    except KeyError:
        raise ValueError(f"carbon.country_iso_code {country_iso_code!r} is not in CodeCarbon's "
                         "energy-mix table: use an ISO 3166 alpha-3 code such as CAN, FRA, USA") from None


def apply_grid(cpu_kwh: float, ram_kwh: float, gpu_kwh: float, pue: float,
               intensity_kg_per_kwh: float) -> tuple[float, float]:
    """(energy at the wall in kWh, kg CO2e) = (sum × PUE, that × intensity)."""
    energy = (cpu_kwh + ram_kwh + gpu_kwh) * pue
    return energy, energy * intensity_kg_per_kwh


class EnergyMeter:
    """One CodeCarbon tracker; `begin()`/`end()` around each task."""

    def __init__(self, cpu_watts: float | None = None, ram_watts: float | None = None,
                 measure_power_secs: float = 1.0):
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self.forced = cpu_watts is not None
        self._tracker = OfflineEmissionsTracker(
            country_iso_code="CAN", tracking_mode="machine", save_to_file=False,
            log_level="error", pue=1.0, measure_power_secs=measure_power_secs,
            force_cpu_power=cpu_watts, force_ram_power=ram_watts, allow_multiple_runs=True,
        )
        # Task mode only, no tracker.start(): with a started tracker every window stops and
        # restarts CodeCarbon's measuring threads next to llama.cpp's (bench P4: 2.1 % -> 1.7 %
        # per 90 ms task, same energy). The first window sets up the hardware it describes.
        self.begin("greenctl-warm-up")
        self._tracker.stop_task()
        self.method, self.detail = self._describe()

    def _describe(self) -> tuple[str, str]:
        parts = {"cpu": "none", "ram": "estimated", "gpu": "none"}
        for hw in getattr(self._tracker, "_hardware", []):
            kind = type(hw).__name__.lower()
            if kind == "cpu":
                parts["cpu"] = _CPU_METHODS.get(getattr(hw, "_mode", ""), "estimated")
            elif kind == "gpu":
                parts["gpu"] = "nvml"
            elif kind == "ram" and getattr(hw, "_force_ram_power", None):
                parts["ram"] = "forced"
        if self.forced:
            parts["cpu"] = "forced"
        return parts["cpu"], " ".join(f"{k}={v}" for k, v in parts.items())

    def begin(self, name: str) -> None:
        self._tracker.start_task(name)

    def end(self, pue: float, intensity_kg_per_kwh: float) -> EnergyReading:
        data = self._tracker.stop_task()
        cpu, ram, gpu = float(data.cpu_energy), float(data.ram_energy), float(data.gpu_energy)
        energy, co2 = apply_grid(cpu, ram, gpu, pue, intensity_kg_per_kwh)
        return EnergyReading(cpu_kwh=cpu * pue, ram_kwh=ram * pue, gpu_kwh=gpu * pue,
                             energy_kwh=energy, co2_kg=co2, duration_s=float(data.duration),
                             method=self.method, detail=self.detail,
                             carbon_intensity_kg_per_kwh=intensity_kg_per_kwh, pue=pue)

    def idle_watts(self, seconds: float) -> float:
        """Average power (W) of the machine over `seconds` of doing nothing."""
        import time

        self.begin("idle-calibration")
        time.sleep(seconds)
        data = self._tracker.stop_task()
        kwh = float(data.cpu_energy) + float(data.ram_energy) + float(data.gpu_energy)
        return kwh * 3.6e6 / max(float(data.duration), 1e-9)

    def close(self) -> None:
        try:
            self._tracker.stop()
        except Exception:  # stopping a tracker at exit must never fail a worker
            pass
