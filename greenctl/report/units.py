"""Numbers as a person reads them, units always shown. Pure.

Per-inference CO2 of a small model is around 1e-7 kg: printed in kg it reads
"0.000", so masses and energies get the unit that keeps three significant
digits visible. A column of a table shares one unit (`pick_unit`), so its rows
compare by eye.
"""
from __future__ import annotations

import math
from typing import Iterable

# (unit, factor from the base unit), largest unit first.
CO2_UNITS = (("kg", 1.0), ("g", 1e3), ("mg", 1e6), ("µg", 1e9))
ENERGY_UNITS = (("kWh", 1.0), ("Wh", 1e3), ("mWh", 1e6), ("µWh", 1e9))
DASH = "–"


def pick_unit(values: Iterable[float | None], units: tuple = CO2_UNITS) -> tuple[str, float]:
    """The largest unit in which the smallest non-zero |value| is at least 0.1,
    so three significant digits never need more than "0.xyz"."""
    nonzero = [abs(v) for v in values if v is not None and v != 0 and math.isfinite(v)]
    if not nonzero:
        return units[0]
    smallest = min(nonzero)
    for unit, factor in units:
        if smallest * factor >= 0.1:
            return unit, factor
    return units[-1]


def number(x: float | None, digits: int = 3) -> str:
    """`digits` significant digits, never in scientific notation: 1234, 85.2, 0.512."""
    if x is None or not math.isfinite(x):
        return DASH
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def scaled(x: float | None, factor: float) -> str:
    """x in a unit chosen by `pick_unit` (the unit goes in the column header)."""
    return DASH if x is None else number(x * factor)


def _with_unit(x: float | None, units: tuple, unit: str | None) -> str:
    if x is None:
        return DASH
    name, factor = pick_unit([x], units) if unit is None else (unit, dict(units)[unit])
    return f"{number(x * factor)} {name}"


def co2(kg: float | None, unit: str | None = None) -> str:
    """kg CO2e as kg, g, mg or µg (the given unit, else the one that fits the value)."""
    return _with_unit(kg, CO2_UNITS, unit)


def energy(kwh: float | None, unit: str | None = None) -> str:
    """kWh as kWh, Wh, mWh or µWh (the given unit, else the one that fits the value)."""
    return _with_unit(kwh, ENERGY_UNITS, unit)


def seconds(s: float | None) -> str:
    """A duration: ms below a second, s below two minutes, then min, then h."""
    if s is None:
        return DASH
    if abs(s) < 1:
        return f"{number(s * 1000)} ms"
    if abs(s) < 120:
        return f"{number(s)} s"
    if abs(s) < 2 * 3600:
        return f"{number(s / 60)} min"
    return f"{number(s / 3600)} h"


def ratio(x: float | None, digits: int = 2) -> str:
    """A score in [0, 1] (accuracy, precision, F1) with fixed decimals, as the seed paper prints them."""
    return DASH if x is None else f"{x:.{digits}f}"


def percent_change(x: float | None) -> str:
    """A relative change: -45 %, +3 %."""
    return "" if x is None else f"{x * 100:+.0f} %"


def delta(x: float | None, digits: int = 2) -> str:
    """An absolute change of a score: +0.03, -0.10."""
    return "" if x is None else f"{x:+.{digits}f}"


def mean_or_dash(x: float | None, digits: int = 0) -> str:
    return DASH if x is None else f"{x:.{digits}f}"
