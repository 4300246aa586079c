"""The machine's CPU clock and temperature at one moment (psutil), for sustained runs.

Either reading is None where the platform does not expose it (a VM without
sensors, a container): the report then says so instead of guessing.
"""
from __future__ import annotations

import psutil


def cpu_freq_mhz() -> float | None:
    """The current CPU clock (MHz, psutil's average over cores); None when not readable."""
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError):
        return None
    return float(freq.current) if freq and freq.current and freq.current > 0 else None


def temperature_c() -> float | None:
    """The hottest temperature sensor's reading (deg C); None when no sensor is readable."""
    read = getattr(psutil, "sensors_temperatures", None)
    try:
        sensors = read() if read else {}
    except (OSError, NotImplementedError):
        return None
    readings = [t.current for entries in (sensors or {}).values() for t in entries
                if t.current is not None and t.current > 0]
    return float(max(readings)) if readings else None
