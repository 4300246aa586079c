"""The estimate on every row: fits graded on later runs, energy as time x power, calibrated
intervals, and the worker's pre-inference estimate graded by its measurement (real Postgres)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from estimator import local, store
from estimator.tasks import refit
from greenctl.cli import main
from shared.db import session_scope
from shared.models import Experiment, Result, Task, Variant
from test_estimator_store import add_results
from worker import expect
from worker.engines import InferenceRequest

N = 134.5e6


def _law(p, o, threads, bits=4.5, params=N):
    """The CPU law add_results follows (s)."""
    return 0.02 + 0.003 * o + 2.0 * params * p / threads / 1e12 + 40.0 * params * bits / 8 * o / 1e12


def _rows(n: int, seed: int, *, noise: float = 0.1, attention: float = 0.0, watts=(6.0, 4.0)) -> pd.DataFrame:
    """Synthetic measurements in time order: latency from the law (+ attention x sqrt(N) p^2 / threads),
    lognormal noise, and energy = time x (base + per-thread W)."""
    rng = np.random.default_rng(seed)
    params = rng.choice([135e6, 270e6, 1.1e9], n)
    bits = rng.choice([4.5, 8.5], n)
    p = rng.integers(20, 1500, n)
    o = rng.integers(1, 64, n)
    threads = rng.choice([1, 2], n)
    t = _law(p, o, threads, bits, params) + attention * np.sqrt(params) * p ** 2 / threads / 1e12
    t = t * np.exp(rng.normal(0, noise, n))
    return pd.DataFrame({"result_id": np.arange(1, n + 1), "params": params, "bits": bits,
                         "prompt_tokens": p, "prompt_tokens_uncached": p, "output_tokens": o, "threads": threads,
                         "e2e_s": t, "energy_kwh": t * (watts[0] + watts[1] * threads) / 3.6e6})


def test_the_nominal_80_percent_interval_covers_about_80_percent_of_new_rows():
    # One fit's coverage varies with its 100 calibration rows (sd ~4 points): average eight fits.
    new = _rows(3000, seed=4)
    covered = []
    for seed in range(10, 18):
        fit_json = local.fit(_rows(500, seed=seed), "latency_s")
        pred = local.predict(fit_json, params=new["params"], bits=new["bits"],
                             prompt_tokens_uncached=new["prompt_tokens"], output_tokens=new["output_tokens"],
                             threads=new["threads"])
        covered.append(np.mean((new["e2e_s"] >= pred["low"]) & (new["e2e_s"] <= pred["high"])))
        assert fit_json["interval"]["calibration_rows"] == fit_json["n_test"] == 100
    assert 0.75 <= np.mean(covered) <= 0.85


def test_held_out_rows_are_the_newest_so_a_slowdown_shows_in_the_fit_metrics():
    rows = _rows(200, seed=5, noise=0.02)
    rows.loc[rows.index[-40:], "e2e_s"] *= 2.0           # the machine got twice as slow for the last runs
    fit_json = local.fit(rows, "latency_s")
    assert fit_json["metrics"]["mape"] == pytest.approx(0.5, abs=0.05)   # a random split would hide half of it
    assert not local.is_good(fit_json)


def test_energy_is_time_times_power_so_more_threads_do_not_divide_it():
    fit_json = local.fit(_rows(300, seed=6, noise=0.02), "energy_kwh")
    kw = dict(params=1.1e9, bits=4.5, prompt_tokens_uncached=800, output_tokens=4)
    one, two = (local.predict(fit_json, threads=t, **kw)["value"][0] for t in (1, 2))
    truth = [_law(800, 4, t, 4.5, 1.1e9) * (6.0 + 4.0 * t) / 3.6e6 for t in (1, 2)]
    assert one == pytest.approx(truth[0], rel=0.1) and two == pytest.approx(truth[1], rel=0.1)
    assert "power_coef" in fit_json


def test_a_long_prompt_costs_its_quadratic_attention():
    fit_json = local.fit(_rows(300, seed=7, noise=0.02, attention=3.0), "latency_s")
    pred = local.predict(fit_json, params=1.1e9, bits=4.5, prompt_tokens_uncached=1500, output_tokens=1,
                         threads=1)["value"][0]
    truth = _law(1500, 1, 1, 4.5, 1.1e9) + 3.0 * np.sqrt(1.1e9) * 1500 ** 2 / 1e12
    assert pred == pytest.approx(truth, rel=0.1)


def test_a_fit_stored_before_this_format_still_answers():
    legacy = {"features": ["one", "output_tokens", "prefill_work_per_thread", "decode_bytes",
                           "decode_work_per_thread"], "coef": [0.02, 0.003, 2.0, 40.0, 0.0],
              "interval": {"low_factor": 0.9, "high_factor": 1.1}}
    out = local.predict(legacy, params=N, bits=4.5, prompt_tokens_uncached=100, output_tokens=3, threads=2)
    assert out["value"][0] == pytest.approx(_law(100, 3, 2))


def _variant(db: str, model_info: dict | None) -> tuple[int, int]:
    with session_scope(db) as s:
        exp = Experiment(name="loop", spec={"dataset": {"labels": ["positive", "negative", "neutral"]}})
        s.add(exp)
        s.flush()
        v = Variant(experiment_id=exp.id, model="smollm2:135m-instruct", engine="embedded", variant="q4_0",
                    queue="default", model_info=model_info)
        s.add(v)
        s.flush()
        return exp.id, v.id


def _text(chars: int, seed: int) -> str:
    """Random letters: consecutive prompts share no prefix (nothing for a prefix cache)."""
    return "".join(np.random.default_rng(seed).choice(list("abcdefghij"), chars))


def _request(text: str) -> InferenceRequest:
    return InferenceRequest(messages=[{"role": "user", "content": text}], max_tokens=3)


def _tokens(text: str) -> int:
    from shared.predict import approx_tokens
    from shared.prompts import render_plain

    return approx_tokens(render_plain([{"role": "user", "content": text}]))


def test_the_worker_expects_nothing_without_a_fit_then_the_fits_figure(fresh_db_url):
    expect._fits.clear()
    _, vid = _variant(fresh_db_url, {"parameter_count": int(N), "bits_per_weight": 4.5})
    none = expect.expected(fresh_db_url, "cpu-loop", vid, _request(_text(400, 0)), 2, 1.2)
    assert set(none.values()) == {None}
    add_results(fresh_db_url, "cpu-loop", 80)
    assert refit("cpu-loop", fresh_db_url, force=True)["status"] == "fitted"
    expect._fits.clear()
    got = expect.expected(fresh_db_url, "cpu-loop", vid, _request(_text(400, 1)), 2, 1.2)
    t = _law(_tokens(_text(400, 1)), 3, 2)                   # about 100 tokens, none cached
    assert got["estimate_e2e_s"] == pytest.approx(t, rel=0.15)
    # add_results' machine draws 15 W; PUE 1.2 at the wall.
    assert got["estimate_energy_kwh"] == pytest.approx(t * 15 * 1.2 / 3.6e6, rel=0.15)
    fits = {f["target"]: f["id"] for f in store.list_fits(fresh_db_url, "cpu-loop")}
    assert got["estimate_fit_id"] == fits["latency_s"] and got["estimate_energy_fit_id"] == fits["energy_kwh"]


def test_live_accuracy_and_the_report_grade_estimates_by_their_measurements(fresh_db_url):
    expect._fits.clear()
    add_results(fresh_db_url, "cpu-live", 80)
    refit("cpu-live", fresh_db_url, force=True)
    exp_id, vid = _variant(fresh_db_url, {"parameter_count": int(N), "bits_per_weight": 4.5})
    rng = np.random.default_rng(9)
    with session_scope(fresh_db_url) as s:
        for i in range(40):
            text = _text(int(rng.integers(100, 1200)), 100 + i)
            est = expect.expected(fresh_db_url, "cpu-live", vid, _request(text), 2, 1.2)
            # measured: the law at the prompt's tokens, 30 % slower (a drift the fit has not seen)
            p = _tokens(text)
            e2e = _law(p, 3, 2) * 1.3
            task = Task(experiment_id=exp_id, variant_id=vid, sample_index=i, text="t", label="neutral")
            s.add(task)
            s.flush()
            s.add(Result(task_id=task.id, experiment_id=exp_id, variant_id=vid, worker="w", hardware_profile="cpu-live",
                         prompt_tokens=p, prompt_tokens_uncached=p, output_tokens=3, threads=2, e2e_s=e2e,
                         energy_kwh=e2e * 15 * 1.2 / 3.6e6, pue=1.2, energy_method="estimated", **est))
    live = store.live_accuracy(fresh_db_url)
    fits = {f["target"]: f for f in store.list_fits(fresh_db_url, "cpu-live")}
    lat = live[fits["latency_s"]["id"]]
    assert lat["rows"] == 40
    assert lat["mape"] == pytest.approx(1 - 1 / 1.3, abs=0.06)      # estimates ~1/1.3 of the measurement
    assert lat["mape_ci95"][0] <= lat["mape"] <= lat["mape_ci95"][1]
    assert lat["bias"] == pytest.approx(1 / 1.3 - 1, abs=0.06)
    from greenctl.report.build import build_report

    report = build_report(fresh_db_url, exp_id)
    row = report["estimated_vs_measured"][0]
    assert row["rows"] == 40 and row["latency_s"]["mape"] == pytest.approx(lat["mape"])
    assert row["by_host"][0]["hardware_profile"] == "cpu-live"
    json.dumps(report, default=str)
    from greenctl.report import estimate_check

    (line,) = estimate_check.lines(report)
    assert "smollm2:135m-instruct q4_0 (cpu-live)" in line and "of 40" in line


def test_estimator_list_shows_live_accuracy(fresh_db_url, monkeypatch):
    monkeypatch.setenv("GREENCTL_DATABASE_URL", fresh_db_url)
    add_results(fresh_db_url, "cpu-ls", 60)
    refit("cpu-ls", fresh_db_url, force=True)
    out = json.loads(CliRunner().invoke(main, ["estimator", "list", "--json"]).stdout)
    assert all(f["live"] is None for f in out["fits"])        # no row estimated by them yet
    text = CliRunner().invoke(main, ["estimator", "list"]).stdout
    assert "live" in text and "cpu-ls" in text


def test_bandwidth_power_model_by_hand():
    from estimator import formulas

    # 0.1 s prefill at 400 W; 1.0 s of decode at 60 W idle + 340 W x half busy; 300 W host for 1.1 s
    kwh = formulas.bandwidth_energy_kwh(0.1, 1.1, 0.5, 1, tdp_w=400, idle_fraction=0.15, host_w=300, pue=1.0)
    assert kwh * 3.6e6 == pytest.approx(0.1 * 400 + 1.0 * (60 + 340 * 0.5) + 300 * 1.1)


def test_llm_perf_energy_from_the_bandwidth_model_beats_a_fixed_utilization():
    from estimator import datasets, hardware, physical, reproduce, validation

    rows = datasets.llm_perf_validation()
    fit_json = reproduce.fit_helm()
    prof = hardware.PROFILES["a100-llm-perf"]
    kw = dict(params=rows["params"], bits=rows["bits"], prompt_tokens=rows["prompt_tokens"],
              output_tokens=rows["output_tokens"], layers=rows["layers"], devices=rows["gpu_count"])
    bandwidth = validation.mape(rows, physical.predict(fit_json, prof, **kw))["energy_kwh"]
    fixed = validation.mape(rows, physical.predict(fit_json, prof.with_overrides(power_model="utilization"),
                                                   **kw))["energy_kwh"]
    assert bandwidth < 0.22 and bandwidth < fixed - 0.05
