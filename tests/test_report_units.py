"""Pure parts of the report: unit formatting, the Pareto front, the energy split, worker spans."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from greenctl.report import metrics, units


@pytest.mark.parametrize("kg, text", [
    (0.012, "12.0 g"),            # the seed paper's 0.012 kg per inference
    (1.2e-4, "0.120 g"),
    (8.3e-8, "83.0 µg"),          # "0.000" in kg
    (1.15e-7, "0.115 mg"),
    (2.5, "2.50 kg"),
    (0.0, "0 kg"),
    (None, "–"),
])
def test_co2_picks_a_unit_that_keeps_digits(kg, text):
    assert units.co2(kg) == text


@pytest.mark.parametrize("kwh, text", [(9.5e-7, "0.950 mWh"), (6.99e-5, "69.9 mWh"), (0.0021, "2.10 Wh"),
                                       (3.0, "3.00 kWh")])
def test_energy_units(kwh, text):
    assert units.energy(kwh) == text


def test_a_column_shares_the_unit_of_its_smallest_value():
    assert units.pick_unit([1.2e-7, 8.3e-8, None], units.CO2_UNITS) == ("µg", 1e9)
    assert units.pick_unit([1.2e-4, 3e-3], units.CO2_UNITS) == ("g", 1e3)
    assert units.pick_unit([None, 0.0], units.ENERGY_UNITS) == ("kWh", 1.0)
    assert units.co2(1.2e-7, "µg") == "120 µg" and units.co2(1.2e-7, "mg") == "0.120 mg"


@given(st.floats(min_value=1e-12, max_value=1e3))
def test_no_co2_prints_as_zero(kg):
    text = units.co2(kg)
    number, unit = text.split(" ")
    assert float(number) > 0 and unit in ("kg", "g", "mg", "µg")
    assert float(number) / dict(units.CO2_UNITS)[unit] == pytest.approx(kg, rel=6e-3)


def test_durations_and_changes():
    assert [units.seconds(x) for x in (0.2567, 14.3, 300, 9000)] == ["257 ms", "14.3 s", "5.00 min", "2.50 h"]
    assert units.percent_change(-0.4512) == "-45 %" and units.percent_change(None) == ""
    assert units.delta(0.031) == "+0.03" and units.ratio(0.7363) == "0.74"


def test_pareto_front_keeps_what_nothing_beats():
    # (CO2, F1): q4 cheapest, f16 best; q5 is beaten by q8 (cheaper and better); unknowns never on it.
    points = [(125.0, 0.75), (97.0, 0.69), (83.0, 0.62), (100.0, 0.60), (None, 0.9), (90.0, None)]
    assert metrics.pareto_front(points) == [True, True, True, False, False, False]
    assert metrics.pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [True, True]     # ties beat nobody


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 1)), min_size=1, max_size=12))
def test_pareto_front_properties(points):
    front = metrics.pareto_front(points)
    beats = lambda a, b: a[0] <= b[0] and a[1] >= b[1] and a != b  # noqa: E731
    for p, on in zip(points, front):
        assert on == (not any(beats(q, p) for q in points))
    assert any(front)


def test_energy_split_is_proportional_to_time_and_sums_to_the_total():
    rows = [(10.0, 2.0, 6.0, 10.0), (4.0, 1.0, 1.0, 2.0), (5.0, 0.0, 0.0, 1.0)]   # last row: no timings
    split = metrics.energy_split(rows)
    assert split["n"] == 2
    assert split["prompt_kwh_per_inference"] == pytest.approx((2.0 + 2.0) / 2)
    assert split["decode_kwh_per_inference"] == pytest.approx((6.0 + 2.0) / 2)
    assert split["other_kwh_per_inference"] == pytest.approx((2.0 + 0.0) / 2)
    assert split["basis"].startswith("estimate")
    assert metrics.energy_split([(1.0, 0.0, 0.0, 1.0)]) is None


def test_busy_spans_per_worker():
    spans = metrics.busy_spans([("a", 0.0, 1.0), ("b", 5.0, 6.0), ("a", 9.0, 10.0)])
    assert spans == {"a": 10.0, "b": 1.0}
