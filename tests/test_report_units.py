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


def _plot_report(points, majority=0.18, uniform=0.33) -> dict:
    """A report dict with just what the CO2e-vs-F1 plot reads: points are (name, co2 kg, F1 w, on front)."""
    variants = []
    for i, (name, co2, f1, front) in enumerate(points):
        variants.append({"model": "smollm2:135m-instruct", "variant": name, "is_baseline": i == 0, "n": 60,
                         "co2_kg_per_inference": co2, "co2_kg_ci95": [co2 * 0.92, co2 * 1.08],
                         "f1_weighted": f1, "f1_weighted_ci95": [max(0.0, f1 - 0.15), min(1.0, f1 + 0.15)],
                         "on_pareto_front": front, "model_info": {"bits_per_weight": 16.0 / (i + 1)},
                         "weights_origin": "upcast" if i == 0 else "requantized", "weights_from": "q4_1",
                         "constant_answer": f1 < 0.3})
    return {"variants": variants, "energy_methods": {"estimated": "estimate, not a measurement"},
            "baselines": {"n": 60, "majority": {"answer": "neutral", "f1_weighted": majority},
                          "uniform_random": {"f1_weighted": uniform}}}


@pytest.mark.parametrize("points", [
    # four variants close together on the Pareto front (the crowded case)
    [("f16", 120e-9, 0.74, True), ("q8_0", 97e-9, 0.69, True), ("q4_1", 80e-9, 0.65, True),
     ("q4_0", 84e-9, 0.64, False)],
    # the demo of issue 12: two constant guessers near the majority line
    [("f16", 118e-9, 0.18, False), ("q4_0", 85e-9, 0.18, True)],
])
def test_plot_labels_stay_clear_of_each_other_the_points_and_the_lines(points):
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    from greenctl.report import figures

    fig = figures.co2_vs_f1_figure(_plot_report(points))
    renderer = FigureCanvasAgg(fig).get_renderer()
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.0)                         # the F1 axis starts at 0
    labels = [t for t in ax.texts if t.get_text().split(" ")[0].rstrip("*†‡!") in {p[0] for p in points}]
    assert len(labels) == len(points)
    boxes = []
    for t in labels:
        t.update_positions(renderer)
        boxes.append(Text.get_window_extent(t, renderer))
    inside = ax.get_window_extent(renderer)
    legend = ax.get_legend().get_window_extent(renderer)
    # every line drawn in the axes (Pareto step, reference lines), sampled densely, in display units
    line_points = []
    for line in ax.get_lines():
        xy = np.column_stack(line.get_data()).astype(float)
        if len(xy) == 2 and xy[0, 0] == 0 and xy[1, 0] == 1:            # axhline: axes-fraction x
            xy = np.array([[x, xy[0, 1]] for x in ax.get_xlim()])
        if line.get_drawstyle() == "steps-post":                          # the Pareto front as drawn
            xy = np.array([p for (x0, y0), (x1, _) in zip(xy, xy[1:]) for p in ((x0, y0), (x1, y0))]
                          + [tuple(xy[-1])])
        for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
            for s in np.linspace(0, 1, 60):
                line_points.append(ax.transData.transform((x0 + s * (x1 - x0), y0 + s * (y1 - y0))))
    markers = [ax.transData.transform((p[1] * 1e9, p[2])) for p in points]
    for i, box in enumerate(boxes):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
        assert not box.overlaps(legend)
        assert not any(box.overlaps(other) for other in boxes[i + 1:])
        assert not any(box.contains(x, y) for x, y in line_points), labels[i].get_text()
        assert not any(box.contains(x, y) for x, y in markers), labels[i].get_text()
    # the reference lines are there: majority and uniform random F1
    assert any("majority class" in t.get_text() for t in ax.get_legend().get_texts())


def test_a_stop_rule_widens_the_paired_interval_to_its_own_level():
    """After several looks the report's ΔF1 interval is the stop rule's (Bonferroni) one, not 95 %."""
    import random

    from greenctl.report import paired

    rng = random.Random(0)
    labels = ["positive", "negative", "neutral"]
    truth = [labels[i % 3] for i in range(120)]

    def answers(p):
        return [t if rng.random() < p else rng.choice(labels) for t in truth]

    keys = [(i, 0) for i in range(120)]
    costs = [1.0] * 120
    base = paired.Samples(keys, truth, answers(0.7), costs, costs, costs)
    other = paired.Samples(keys, truth, answers(0.6), costs, costs, costs)
    single = paired.versus_baseline(base, other, labels, 0.03)
    looks = paired.versus_baseline(base, other, labels, 0.03, looks_level=1 - 0.05 / 7)
    assert single["delta_level"] == 0.95 and looks["delta_level"] > 1 - 0.05 / 7
    (lo1, hi1), (lo2, hi2) = single["f1_macro_delta_ci95"], looks["f1_macro_delta_ci95"]
    assert lo2 < lo1 and hi2 > hi1 and single["f1_macro_delta"] == looks["f1_macro_delta"]
