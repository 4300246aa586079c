"""Energy accounting: from a raw measurement to the figures a report shows.

One set of formulas for every layer (worker, estimator, reports), as small pure
functions with their units. A meter measures IT energy (what the machine's
components drew, kWh); accounting applies the site's PUE, the grid's carbon
intensity and the machine's idle power, in one step (`account`).
"""
from __future__ import annotations

from dataclasses import dataclass

JOULES_PER_KWH = 3.6e6


def kwh_from_joules(joules: float) -> float:
    """Energy in kWh from joules (1 kWh = 3.6 MJ)."""
    return joules / JOULES_PER_KWH


def kwh_from_watts(watts: float, seconds: float) -> float:
    """Energy (kWh) of a constant power (W) held for `seconds` (s)."""
    return kwh_from_joules(watts * seconds)


def mean_watts(kwh: float, seconds: float) -> float:
    """Average power (W) of `kwh` spent over `seconds` (s); 0 for an empty window."""
    return kwh * JOULES_PER_KWH / seconds if seconds > 0 else 0.0


def at_the_wall(it_kwh: float, pue: float) -> float:
    """Energy drawn from the grid (kWh): IT energy x PUE (power usage effectiveness, >= 1)."""
    return it_kwh * pue


def co2e_kg(wall_kwh: float, intensity_kg_per_kwh: float) -> float:
    """Operational emissions (kg CO2e) = energy at the wall (kWh) x grid intensity (kg CO2e/kWh)."""
    return wall_kwh * intensity_kg_per_kwh


def g_to_kg_per_kwh(g_per_kwh: float) -> float:
    """Grid intensity in kg CO2e/kWh from g CO2e/kWh."""
    return g_per_kwh / 1000.0


@dataclass(frozen=True)
class Accounted:
    """One window's figures at the wall: per component and total (kWh), CO2e (kg),
    and the machine's idle energy over the same window (kWh, None when never calibrated)."""
    cpu_kwh: float
    ram_kwh: float
    gpu_kwh: float
    energy_kwh: float
    co2_kg: float
    idle_energy_kwh: float | None
    pue: float
    carbon_intensity_kg_per_kwh: float


def account(cpu_kwh: float, ram_kwh: float, gpu_kwh: float, duration_s: float, *, pue: float,
            intensity_kg_per_kwh: float, idle_watts: float | None = None) -> Accounted:
    """The accounting step: raw IT energy per component (kWh) over `duration_s` (s) ->
    energy at the wall (x PUE), CO2e (x grid intensity), and idle energy at the wall."""
    cpu, ram, gpu = (at_the_wall(x, pue) for x in (cpu_kwh, ram_kwh, gpu_kwh))
    total = cpu + ram + gpu
    idle = None if idle_watts is None else at_the_wall(kwh_from_watts(idle_watts, duration_s), pue)
    return Accounted(cpu_kwh=cpu, ram_kwh=ram, gpu_kwh=gpu, energy_kwh=total,
                     co2_kg=co2e_kg(total, intensity_kg_per_kwh), idle_energy_kwh=idle, pue=pue,
                     carbon_intensity_kg_per_kwh=intensity_kg_per_kwh)


def it_energy(wall_kwh: float, pue: float) -> float:
    """IT energy (kWh) of a stored figure at the wall: the inverse of `at_the_wall`
    (PUE <= 0, from a bad row, counts as 1)."""
    return wall_kwh / pue if pue > 0 else wall_kwh


# -- how much of the energy was measured ------------------------------------------------------

_MEASURED = {"rapl": "RAPL", "nvml": "NVML", "powermetrics": "powermetrics"}
_NOT_MEASURED = {("cpu", "estimated"): "CodeCarbon's TDP x CPU load", ("ram", "estimated"): "CodeCarbon's constant",
                 ("gpu", "estimated"): "CodeCarbon's estimate"}


def measured_share(pairs: list[tuple[float | None, float]]) -> float | None:
    """Fraction (0-1) of the energy read from power counters, over (measured kWh, total kWh)
    pairs; rows that did not record their measured part (None) are left out; None when
    nothing is left or the total is 0."""
    known = [(m, t) for m, t in pairs if m is not None]
    total = sum(t for _, t in known)
    return sum(m for m, _ in known) / total if known and total > 0 else None


def parse_detail(detail: str) -> dict[str, str]:
    """'cpu=rapl ram=estimated gpu=none' -> {"cpu": "rapl", "ram": "estimated", "gpu": "none"}."""
    return dict(p.split("=", 1) for p in detail.split() if "=" in p)


def measured_share_note(share: float | None, details: list[str]) -> str | None:
    """E.g. "38 % measured (CPU, RAPL), 62 % estimated (RAM, CodeCarbon's constant)", from the
    measured share (0-1) and the rows' energy_detail strings; None when the share is unknown."""
    if share is None:
        return None
    measured, other = [], []
    for parts in (parse_detail(d) for d in details):
        for comp, how in parts.items():
            if how in ("none", "excluded"):
                continue
            label = (f"{comp.upper()}, {_MEASURED[how]}" if how in _MEASURED else
                     f"{comp.upper()}, {_NOT_MEASURED.get((comp, how), 'forced watts' if how == 'forced' else how)}")
            bucket = measured if how in _MEASURED else other
            if label not in bucket:
                bucket.append(label)
    out = f"{share * 100:.0f} % measured" + (f" ({'; '.join(measured)})" if measured else "")
    if share < 1 or other:
        word = "forced" if other and all("forced" in o for o in other) else (
            "estimated or forced" if any("forced" in o for o in other) else "estimated")
        out += f", {(1 - share) * 100:.0f} % {word}" + (f" ({'; '.join(other)})" if other else "")
    return out
