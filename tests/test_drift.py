"""The drift section of a sustained run (greenctl.report.drift): per-minute means and the throttling flag.

Oracles are worked by hand from the rows written here, not from the module's constants."""
from __future__ import annotations

import pytest

from greenctl.report.drift import Row, drift, line, per_minute, throttling
from scheduler.spec import SpecError, parse_spec
from tests.processes import DATASET, MODEL


def _run(freq_end: float, latency_end: float, minutes: int = 5, per_min: int = 6) -> list[Row]:
    """A run whose clock and latency move linearly from (3000 MHz, 1 s) to (freq_end, latency_end)."""
    n = minutes * per_min
    rows = []
    for k in range(n):
        f = k / (n - 1)
        rows.append(Row("q4_0", k * 60.0 / per_min, 1e-5, 1.0 + f * (latency_end - 1.0),
                        3000.0 + f * (freq_end - 3000.0), None))
    return rows


def test_per_minute_means_by_hand():
    rows = [Row("a", 0.0, 1e-5, 1.0, 3000.0, 50.0), Row("a", 59.9, 3e-5, 3.0, 2000.0, None),
            Row("a", 60.0, 5e-5, 2.0, None, 70.0)]
    out = per_minute(rows)
    assert [m["minute"] for m in out] == [0, 1] and [m["n"] for m in out] == [2, 1]
    assert out[0]["energy_kwh_per_inference"] == pytest.approx(2e-5)
    assert out[0]["latency_s_per_inference"] == pytest.approx(2.0)
    # mean +- 1.96 s / sqrt(n): latencies 1 and 3 have s = sqrt(2), so the half-width is 1.96.
    assert out[0]["latency_s_ci95"] == pytest.approx([2.0 - 1.96, 2.0 + 1.96])
    assert out[0]["cpu_freq_mhz"] == pytest.approx(2500.0) and out[0]["temperature_c"] == pytest.approx(50.0)
    assert out[1]["cpu_freq_mhz"] is None and out[1]["temperature_c"] == pytest.approx(70.0)


def test_a_steady_machine_is_not_flagged():
    t = throttling(_run(3000.0, 1.0))
    assert t["throttled"] is False and t["cpu_freq_change"] == pytest.approx(0.0)


def test_clock_down_a_fifth_is_flagged_and_a_few_percent_is_not():
    # 3000 -> 2000 MHz over the run: the last fifth's median is far below the first's.
    assert throttling(_run(2000.0, 1.0))["throttled"] is True
    # 3000 -> 2850 MHz (-5 % end to end): the fifths differ by less than that.
    small = throttling(_run(2850.0, 1.0))
    assert small["throttled"] is False and -0.05 < small["cpu_freq_change"] < 0


def test_latency_up_a_fifth_is_flagged():
    t = throttling(_run(3000.0, 1.5))
    assert t["throttled"] is True and t["latency_change"]["q4_0"] > 0.2


def test_no_clock_and_one_instant_is_undecided():
    rows = [Row("a", 0.0, 1e-5, 1.0, None, None), Row("a", 0.0, 1e-5, 1.0, None, None)]
    section = drift(rows, 1)
    assert section["throttled"] is None and "undecided" in line(section)
    assert "temperature not readable" in line(section)


def _spec(**extra):
    return {"name": "s", "dataset": {"path": str(DATASET), "labels": ["positive", "negative", "neutral"]},
            "models": [{"name": MODEL, "engine": "embedded", "variants": ["q8_0", "q4_0"]}]
            } | extra


def test_sustain_minutes_may_be_a_fraction_but_not_zero_and_not_with_stop():
    assert parse_spec(_spec(sustain={"minutes": 0.5})).sustain.minutes == 0.5
    with pytest.raises(SpecError, match=r"sustain\.minutes: .*got 0"):
        parse_spec(_spec(sustain={"minutes": 0}))
    with pytest.raises(SpecError) as err:
        parse_spec(_spec(sustain={"minutes": 1}, stop={"when": "decided"}))
    assert str(err.value).count("\n") == 0 and "remove one of them" in str(err.value)
