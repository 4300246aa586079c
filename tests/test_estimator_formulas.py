"""Hand-computed cases for the pure R-ICE formulas and the hardware constants."""
from __future__ import annotations

import pytest

from estimator import formulas, hardware


def test_co2_is_energy_times_intensity():
    # 0.002 kWh on a 0.4 kg/kWh grid -> 0.0008 kg
    assert formulas.co2_kg(0.002, 0.4) == pytest.approx(0.0008)
    assert formulas.co2_kg(0.002) == pytest.approx(0.002 * 0.475)


def test_energy_with_paper_defaults():
    # 1 x 400 W x 0.26 x 10 s x 1.1 = 1144 J = 1144 / 3.6e6 kWh
    assert formulas.energy_kwh(10.0) == pytest.approx(1144 / 3.6e6)
    assert formulas.energy_kwh(10.0, 4) == pytest.approx(4 * 1144 / 3.6e6)


def test_energy_overrides_and_host_power():
    # (2 x 400 W x 0.5 + 100 W) x 3.6 s x PUE 1 = 1800 J = 5e-4 kWh
    assert formulas.energy_kwh(3.6, 2, utilization=0.5, pue=1.0, host_w=100.0) == pytest.approx(5e-4)
    # PUE scales everything: 300 W x 12 s x 1.5 = 5400 J
    assert formulas.energy_kwh(12, 1, tdp_w=300, utilization=1.0, pue=1.5) == pytest.approx(5400 / 3.6e6)


def test_e2e_latency_eq1():
    # 0.05 s prompt + (10 - 1) x 0.02 s = 0.23 s
    assert formulas.e2e_latency_s(0.05, 0.02, 10) == pytest.approx(0.23)
    assert formulas.e2e_latency_s(0.05, 0.02, 1) == pytest.approx(0.05)
    assert formulas.e2e_latency_s(0.05, 0.02, 0) == pytest.approx(0.05)


def test_weights_flops_and_min_devices():
    assert formulas.weight_bytes(7e9, 4) == pytest.approx(3.5e9)
    assert formulas.prefill_flops(7e9, 100) == pytest.approx(1.4e12)
    # 80 GiB = 85.9e9 bytes: 14e9 bytes fit on one, 140e9 need two, 140e9 at half usable need four
    assert formulas.min_devices_for_memory(7e9, 16) == 1
    assert formulas.min_devices_for_memory(70e9, 16) == 2
    assert formulas.min_devices_for_memory(70e9, 16, usable_fraction=0.5) == 4
    assert formulas.min_devices_for_memory(1e6, 4) == 1


def test_llm_perf_host_power_is_codecarbons_cpu_and_ram_rule():
    # 50 % of a 225 W EPYC 7742 + 3 W per 8 GiB of 540,671.627264 MB RAM
    assert hardware.LLM_PERF_HOST_W == pytest.approx(112.5 + 3 / 8 * 540671.627264e6 / 2**30)
    assert 300 < hardware.LLM_PERF_HOST_W < 302


def test_profiles_keep_paper_defaults_and_allow_overrides():
    helm = hardware.PROFILES["a100-helm"]
    assert (helm.tdp_w, helm.utilization, helm.pue, helm.host_w) == (400.0, 0.26, 1.1, 0.0)
    changed = helm.with_overrides(pue=1.3, utilization=None)
    assert changed.pue == 1.3 and changed.utilization == 0.26
    assert helm.peak_flops(16) == 312e12 and helm.peak_flops(32) == 19.5e12 and helm.peak_flops(4) == 312e12
