"""Drift over a sustained run (`sustain:` in the spec): does the machine slow down as it heats?

Pure computation, no I/O. Input rows are one finished inference each:
`Row(variant, t_s, energy_kwh, e2e_s, cpu_freq_mhz, temperature_c)` where t_s
is seconds from the run's first inference window to this one's. Output:
energy and latency per inference per minute of the run, and a throttling flag
comparing the first and the last fifth of the run's time (medians, robust to
one slow inference): the CPU clock down by THRESHOLD or more, or a variant's
latency up by THRESHOLD or more. A flag is None (undecided) when a fifth has
no row to compare.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from typing import NamedTuple

from greenctl.report.metrics import mean_ci95

THRESHOLD = 0.10     # a fraction: -10 % clock or +10 % latency


class Row(NamedTuple):
    variant: str
    t_s: float                       # s since the run's first inference window opened
    energy_kwh: float                # per inference, kWh at the wall
    e2e_s: float                     # per inference, s
    cpu_freq_mhz: float | None
    temperature_c: float | None


def _mean(xs: list[float]) -> float | None:
    return float(sum(xs) / len(xs)) if xs else None


def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def per_minute(rows: list[Row]) -> list[dict]:
    """Means per whole minute of the run (minute 0 = the first 60 s), one dict per minute with a row:
    n, energy_kwh_per_inference (kWh) and latency_s_per_inference (s) with their 95 % intervals
    (metrics.mean_ci95), cpu_freq_mhz, temperature_c."""
    bins: dict[int, list[Row]] = defaultdict(list)
    for r in rows:
        bins[int(r.t_s // 60)].append(r)
    out = []
    for m, b in sorted(bins.items()):
        energy, latency = mean_ci95([r.energy_kwh for r in b]), mean_ci95([r.e2e_s for r in b])
        out.append({"minute": m, "n": len(b),
                    "energy_kwh_per_inference": energy[0], "energy_kwh_ci95": [energy[1], energy[2]],
                    "latency_s_per_inference": latency[0], "latency_s_ci95": [latency[1], latency[2]],
                    "cpu_freq_mhz": _mean([r.cpu_freq_mhz for r in b if r.cpu_freq_mhz is not None]),
                    "temperature_c": _mean([r.temperature_c for r in b if r.temperature_c is not None])})
    return out


def fifths(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """The rows in the first and in the last fifth of the run's time span (first to last row)."""
    if not rows:
        return [], []
    start, end = min(r.t_s for r in rows), max(r.t_s for r in rows)
    cut = (end - start) / 5.0
    return ([r for r in rows if r.t_s <= start + cut], [r for r in rows if r.t_s >= end - cut])


def change(first: float | None, last: float | None) -> float | None:
    """Relative change last vs first (a fraction); None when either is missing or first is 0."""
    return None if first is None or last is None or first == 0 else last / first - 1.0


def throttling(rows: list[Row]) -> dict:
    """First vs last fifth: clock change (all rows), latency change per variant, and the flag
    (True: throttled, False: not, None: undecided, a fifth is empty or no clock/latency to compare)."""
    first, last = fifths(rows)
    spread = bool(rows) and max(r.t_s for r in rows) > min(r.t_s for r in rows)
    freq = change(_median([r.cpu_freq_mhz for r in first]), _median([r.cpu_freq_mhz for r in last])) \
        if spread else None
    latency = {}
    for name in sorted({r.variant for r in rows}):
        a, b = [r for r in first if r.variant == name], [r for r in last if r.variant == name]
        latency[name] = change(_median([r.e2e_s for r in a]), _median([r.e2e_s for r in b])) \
            if spread and a and b else None
    checks = [freq is not None and freq <= -THRESHOLD] + [x is not None and x >= THRESHOLD
                                                          for x in latency.values()]
    known = [freq] + list(latency.values())
    flag = True if any(checks) else (None if all(x is None for x in known) else False)
    return {"throttled": flag, "threshold": THRESHOLD, "cpu_freq_change": freq,
            "latency_change": latency, "n_first_fifth": len(first), "n_last_fifth": len(last)}


def drift(rows: list[Row], minutes: float) -> dict:
    """The report's drift section: per variant per minute, and the throttling check."""
    by_variant: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_variant[r.variant].append(r)
    return {"minutes_planned": minutes,
            "minutes_run": (max(r.t_s for r in rows) / 60.0) if rows else 0.0,
            "per_minute": {name: per_minute(group) for name, group in sorted(by_variant.items())},
            "frequency_readable": any(r.cpu_freq_mhz is not None for r in rows),
            "temperature_readable": any(r.temperature_c is not None for r in rows),
            **throttling(rows)}


def line(section: dict) -> str:
    """One sentence for the terminal and Markdown reports."""
    pct = lambda x: "n/a" if x is None else f"{x * 100:+.1f} %"     # noqa: E731
    flag = {True: "THROTTLING: yes", False: "throttling: no", None: "throttling: undecided"}[section["throttled"]]
    lat = ", ".join(f"{k} {pct(v)}" for k, v in section["latency_change"].items())
    return (f"Sustained run: {section['minutes_run']:.1f} of {section['minutes_planned']:g} min; "
            f"{flag} (last vs first fifth: CPU clock {pct(section['cpu_freq_change'])}, latency {lat}; "
            f"flagged at -{THRESHOLD:.0%} clock or +{THRESHOLD:.0%} latency)"
            + ("" if section["temperature_readable"] else "; temperature not readable on this machine"))
