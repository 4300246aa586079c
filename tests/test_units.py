"""Small pure pieces: the CO2 formula, URL masking, metrics."""
from __future__ import annotations

import pytest
from sklearn.metrics import f1_score

from greenctl.report.metrics import UNPARSED, classification, confusion, mean_ci95, relative_change
from shared.config import mask_url
from worker.energy import apply_grid, grid_intensity_kg_per_kwh


def test_co2_is_energy_times_pue_times_intensity():
    # 1 Wh CPU + 0.5 Wh RAM at PUE 1.2 on a 0.1 kg/kWh grid: 1.8 Wh, 0.18 g CO2e.
    energy, co2 = apply_grid(0.001, 0.0005, 0.0, pue=1.2, intensity_kg_per_kwh=0.1)
    assert energy == pytest.approx(0.0018)
    assert co2 == pytest.approx(0.00018)


def test_grid_intensity_forced_or_from_codecarbon_table():
    assert grid_intensity_kg_per_kwh("CAN", forced_g_per_kwh=250) == 0.25
    assert 0.0 < grid_intensity_kg_per_kwh("FRA") < grid_intensity_kg_per_kwh("POL")
    with pytest.raises(ValueError, match="carbon.country_iso_code 'XXX'"):
        grid_intensity_kg_per_kwh("XXX")


def test_mask_url_hides_passwords_only():
    assert mask_url("postgresql://greenctl:s3cret@db:5432/greenctl") == "postgresql://greenctl:***@db:5432/greenctl"
    assert mask_url("redis://:pw@redis:6379/0") == "redis://:***@redis:6379/0"
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_classification_counts_unparsed_answers_as_wrong():
    y_true = ["positive", "negative", "neutral", "neutral"]
    y_pred = ["positive", None, "neutral", "positive"]
    m = classification(y_true, y_pred, ["positive", "negative", "neutral"])
    expected = f1_score(y_true, [p or UNPARSED for p in y_pred],
                        labels=["positive", "negative", "neutral"], average="weighted", zero_division=0)
    assert m["accuracy"] == 0.5 and m["f1_weighted"] == pytest.approx(expected)
    cm = confusion(y_true, y_pred, ["positive", "negative", "neutral"])
    assert cm["columns"][-1] == UNPARSED and cm["matrix"][1] == [0, 0, 0, 1]


def test_interval_and_relative_change():
    mean, low, high = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and low < 2.0 < high
    assert relative_change(0.55, 1.0) == pytest.approx(-0.45)
    assert relative_change(1.0, 0) is None
