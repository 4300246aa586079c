"""Small pure pieces: the CO2 formula, URL masking, metrics."""
from __future__ import annotations

import pytest
from sklearn.metrics import f1_score

from greenctl.report.metrics import UNPARSED, classification, confusion, mean_ci95, relative_change
from shared.config import mask_url
from shared.accounting import account
from worker.energy import grid_intensity_kg_per_kwh


def test_co2_is_energy_times_pue_times_intensity():
    # 1 Wh CPU + 0.5 Wh RAM at PUE 1.2 on a 0.1 kg/kWh grid: 1.8 Wh, 0.18 g CO2e.
    a = account(0.001, 0.0005, 0.0, 10.0, pue=1.2, intensity_kg_per_kwh=0.1, idle_watts=36.0)
    assert a.energy_kwh == pytest.approx(0.0018)
    assert a.co2_kg == pytest.approx(0.00018)
    assert (a.cpu_kwh, a.ram_kwh) == (pytest.approx(0.0012), pytest.approx(0.0006))
    # 36 W idle for 10 s = 360 J = 0.1 Wh, x PUE 1.2.
    assert a.idle_energy_kwh == pytest.approx(0.00012)


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


def test_power_samples_come_every_interval_of_a_long_window_and_never_in_short_ones():
    """CodeCarbon samples power every measure_power_secs of a task; our one long-lived sampler
    (no longer woken at each window's start, bench P4) must still do the same: none in windows
    shorter than the interval, one per interval in a longer one, none after a window closed."""
    import threading
    import time

    from worker.energy import PowerSampler

    taken, lock = [], threading.Lock()

    def sample() -> None:
        with lock:
            taken.append(time.monotonic())

    sampler = PowerSampler(sample, interval_s=0.2)
    try:
        for _ in range(5):                       # short windows: no sample
            sampler.open()
            time.sleep(0.05)
            sampler.close()
        time.sleep(0.3)
        assert taken == []
        sampler.open()
        opened = time.monotonic()
        time.sleep(1.0)
        sampler.close()
        closed = time.monotonic()
        time.sleep(0.5)
        with lock:
            offsets = [t - opened for t in taken]
        assert 3 <= len(offsets) <= 5, offsets   # at 0.2, 0.4, 0.6, 0.8 (1.0 may race the close)
        assert offsets[0] >= 0.19 and all(t <= closed - opened for t in offsets), offsets
    finally:
        sampler.stop()


def test_meter_windows_are_symmetric_and_refuse_misuse():
    from worker.energy import EnergyMeter, WindowError

    meter = EnergyMeter(cpu_watts=10.0)
    try:
        meter.begin("a")
        with pytest.raises(WindowError, match="'b' opened while 'a'"):
            meter.begin("b")
        with pytest.raises(WindowError, match="'b' ended"):
            meter.end("b")
        m = meter.end("a")
        # CPU forced; RAM measured or estimated beside it: a mixed row says both ("forced+estimated").
        assert m.duration_s >= 0 and m.total_kwh >= 0 and m.method.split("+")[0] == "forced"
        with pytest.raises(WindowError, match="open window is None"):
            meter.end("a")
    finally:
        meter.close()
