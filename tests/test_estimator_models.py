"""The fitted estimators: paper reproduction, the physical HELM fit, local refits."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from estimator import datasets, hardware, local, physical, reproduce


@pytest.fixture(scope="module")
def helm_fit() -> dict:
    return reproduce.fit_helm()


@pytest.fixture(scope="module")
def report() -> dict:
    return reproduce.run_validation()


def test_validation_set_is_llm_perf_and_training_is_helm_only():
    rows = datasets.llm_perf_validation()
    assert len(rows) == 171 and rows["model"].nunique() == 35
    assert set(rows["prompt_tokens"]) == {256} and set(rows["output_tokens"]) == {64}
    # energy from tokens/kWh equals the metered prefill + decode energy
    np.testing.assert_allclose(rows["energy_kwh"], rows["prefill_energy_kwh"] + rows["decode_energy_kwh"], rtol=1e-4)
    helm = datasets.helm_models()
    assert not set(helm["model"]) & set(rows["model"])
    assert len(datasets.helm_prompt_encoding()) == 19 * 27


def test_table_iii_ranks_forests_over_linear(report):
    table = {r["algorithm"]: r for r in report["table_iii"]}
    assert table["Random Forest"]["r2"] > 0.97 and table["Random Forest"]["mape"] < 0.10
    assert table["Linear Reg."]["r2"] < 0.85 and table["Linear Reg."]["mape"] > 0.4
    assert {"r2", "mse", "mape"} <= set(table["SVR (RBF kernel)"])


def test_paper_regressors_match_the_papers_fit_quality(report):
    r2 = report["paper_reproduction"]["fit_r2"]
    assert r2["devices"] == pytest.approx(0.99, abs=0.01)      # paper: 0.99
    assert 0.85 < r2["per_token"] < 0.97                        # paper: 0.94


def test_validation_reports_per_target_mape(report):
    for section in (report, report["paper_reproduction"]):
        assert set(section["mape"]) == {"latency_s", "energy_kwh"}
        assert all(0 < v < 5 for v in section["mape"].values())
        some_model = next(iter(section["per_model"].values()))
        assert {"latency_s", "energy_kwh", "rows", "params"} <= set(some_model)
    assert len(report["per_model"]) == 35
    json.dumps(report)   # plain JSON


def test_reproduction_lands_in_range_and_improved_beats_it(report):
    paper, improved = report["paper_reproduction"]["mape"], report["mape"]
    assert 0.3 < paper["latency_s"] < 0.8 and 0.4 < paper["energy_kwh"] < 0.9
    assert improved["latency_s"] < 0.30 and improved["energy_kwh"] < 0.35
    assert improved["latency_s"] < paper["latency_s"] and improved["energy_kwh"] < paper["energy_kwh"]


def test_physical_fit_is_plain_json_and_predicts_the_same_after_a_round_trip(helm_fit):
    restored = json.loads(json.dumps(helm_fit))
    kwargs = dict(params=[7e9, 70e9], bits=[16, 4], prompt_tokens=192, output_tokens=250)
    before = physical.latency(helm_fit, **kwargs)["e2e_s"]
    after = physical.latency(restored, **kwargs)["e2e_s"]
    np.testing.assert_allclose(before, after)
    assert helm_fit["cv"]["selected"]["per_token"] in physical.PER_TOKEN_CANDIDATES


def test_physical_latency_obeys_the_memory_floor_and_grows_with_tokens(helm_fit):
    bw = helm_fit["hardware"]["bandwidth_gb_s"] * 1e9
    out = physical.latency(helm_fit, params=30e9, bits=[16, 32], prompt_tokens=256, output_tokens=64,
                           devices=1, layers=48)
    assert out["per_token_s"][1] >= 30e9 * 4 / bw          # fp32 weights streamed once per token
    assert out["per_token_s"][1] > out["per_token_s"][0]    # so bits matter where memory binds
    longer = physical.latency(helm_fit, params=7e9, prompt_tokens=[64, 1024], output_tokens=[10, 100])
    assert np.all(np.diff(longer["e2e_s"]) > 0)


def test_physical_prediction_interval_brackets_the_estimate(helm_fit):
    df = physical.predict(helm_fit, hardware.PROFILES["a100-helm"], params=7e9, prompt_tokens=192,
                          output_tokens=250)
    row = df.iloc[0]
    assert row["e2e_low_s"] <= row["e2e_s"] <= row["e2e_high_s"]
    assert row["energy_low_kwh"] <= row["energy_kwh"] <= row["energy_high_kwh"]
    assert row["co2_kg"] == pytest.approx(row["energy_kwh"] * 0.475)


def _cpu_rows(n: int, seed: int = 1) -> pd.DataFrame:
    """Synthetic CPU measurements from a known law plus 3 % noise."""
    rng = np.random.default_rng(seed)
    params = rng.choice([135e6, 270e6, 1.1e9], n)
    bits = rng.choice([4.5, 8.5, 16.0], n)
    p = rng.integers(20, 400, n)
    o = rng.integers(1, 20, n)
    threads = rng.choice([1, 2], n)
    e2e = 0.05 + 0.004 * o + 2.0 * params * p / threads / 1e12 + 40.0 * params * bits / 8 * o / 1e12
    return pd.DataFrame({"params": params, "bits": bits, "prompt_tokens_uncached": p, "output_tokens": o,
                         "threads": threads, "e2e_s": e2e * rng.normal(1, 0.03, n),
                         "energy_kwh": e2e * 20.0 / 3.6e6})


def test_local_fit_recovers_a_physical_law():
    fit_json = local.fit(_cpu_rows(120), "latency_s")
    assert fit_json["metrics"]["mape"] < 0.08 and local.is_good(fit_json)
    assert fit_json["n_train"] + fit_json["n_test"] == 120
    json.dumps(fit_json)
    pred = local.predict(fit_json, params=270e6, bits=4.5, prompt_tokens_uncached=200, output_tokens=5, threads=2)
    truth = 0.05 + 0.004 * 5 + 2.0 * 270e6 * 200 / 2 / 1e12 + 40.0 * 270e6 * 4.5 / 8 * 5 / 1e12
    assert pred["value"][0] == pytest.approx(truth, rel=0.1)


def test_local_fit_needs_a_minimum_of_usable_rows():
    rows = _cpu_rows(local.MIN_ROWS - 1)
    with pytest.raises(local.NotEnoughRows, match="need at least"):
        local.fit(rows, "latency_s")
    rows = _cpu_rows(local.MIN_ROWS + 5)
    rows.loc[:10, "energy_kwh"] = 0.0          # unmeasured energy is not a zero-energy inference
    with pytest.raises(local.NotEnoughRows):
        local.fit(rows, "energy_kwh")
