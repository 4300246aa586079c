"""`greenctl estimate` and `greenctl estimator fit|validate|list` through click, on a real Postgres."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from greenctl.cli import main
from test_estimator_store import add_results


@pytest.fixture()
def run(fresh_db_url, monkeypatch):
    monkeypatch.setenv("GREENCTL_DATABASE_URL", fresh_db_url)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    invoke.db_url = fresh_db_url
    return invoke


def test_validate_json_is_one_object_with_per_target_mape(run):
    result = run("estimator", "validate", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)            # exactly one JSON document on stdout
    assert set(report["mape"]) == {"latency_s", "energy_kwh"}
    assert set(report["paper_reproduction"]["mape"]) == {"latency_s", "energy_kwh"}
    assert report["paper_reported"] == {"latency_s": 0.229, "energy_kwh": 0.153}
    assert "facebook/opt-6.7b" in report["per_model"]


def test_validate_prints_a_table(run):
    result = run("estimator", "validate")
    assert result.exit_code == 0
    assert "overall" in result.stdout and "facebook/opt-6.7b" in result.stdout


def test_estimate_from_params_and_from_a_model_card(run):
    by_params = json.loads(run("estimate", "--params", "7e9", "--prompt-tokens", "192",
                               "--output-tokens", "250", "--json").stdout)
    assert by_params["fit"].startswith("bundled HELM fit")
    lat, energy, co2 = by_params["latency_s"], by_params["energy_kwh"], by_params["co2_kg"]
    assert lat["low"] <= lat["value"] <= lat["high"] and 1 < lat["value"] < 30
    assert co2["value"] == pytest.approx(energy["value"] * 0.475)
    by_model = json.loads(run("estimate", "--model", "facebook/opt-6.7b", "--prompt-tokens", "192",
                              "--output-tokens", "250", "--hardware", "a100-llm-perf", "--json").stdout)
    assert by_model["detail"]["layers"] == 32 and by_model["detail"]["pue"] == 1.0
    text = run("estimate", "--params", "7e9", "--bits", "4", "--prompt-tokens", "10", "--output-tokens", "5").stdout
    assert "latency" in text and "kWh" in text and "CO2" in text


def test_estimate_user_errors_name_the_option(run):
    both = run("estimate", "--params", "7e9", "--model", "facebook/opt-6.7b", "--prompt-tokens", "1",
               "--output-tokens", "1")
    assert both.exit_code == 2 and "--params" in both.output
    unknown = run("estimate", "--model", "nope/nope", "--prompt-tokens", "1", "--output-tokens", "1")
    assert unknown.exit_code == 2 and "--model" in unknown.output and "--params" in unknown.output
    no_fit = run("estimate", "--params", "1e8", "--prompt-tokens", "1", "--output-tokens", "1",
                 "--hardware", "my-laptop")
    assert no_fit.exit_code == 2 and "--hardware" in no_fit.output and "estimator fit" in no_fit.output


def test_fit_stores_versions_that_estimate_then_uses(run):
    first = json.loads(run("estimator", "fit", "--json").stdout)
    second = json.loads(run("estimator", "fit", "--json").stdout)
    assert [first["fits"]["latency_s"]["version"], second["fits"]["latency_s"]["version"]] == [1, 2]
    assert 0 < first["fits"]["latency_s"]["metrics"]["mape"] < 0.5
    fits = json.loads(run("estimator", "list", "--json").stdout)["fits"]
    assert [(f["hardware_profile"], f["version"]) for f in fits] == [("a100-helm", 2), ("a100-helm", 1)]
    used = json.loads(run("estimate", "--params", "7e9", "--prompt-tokens", "10", "--output-tokens", "5",
                          "--json").stdout)
    assert used["fit"].startswith("a100-helm/latency_s v2")
    assert "a100-helm" in run("estimator", "list").stdout


def test_fit_on_measurements_then_estimate_on_that_profile(run):
    add_results(run.db_url, "cpu-cli", 40)
    summary = json.loads(run("estimator", "fit", "--hardware", "cpu-cli", "--json").stdout)
    assert summary["status"] == "fitted"
    out = json.loads(run("estimate", "--model", "smollm2:135m-instruct", "--bits", "4.5", "--prompt-tokens",
                         "100", "--output-tokens", "3", "--hardware", "cpu-cli", "--json").stdout)
    assert out["fit"].startswith("cpu-cli/latency_s v1") and out["energy_kwh"]["value"] > 0
    assert out["latency_s"]["value"] > 0


def test_a_gpu_estimate_starts_no_database(tmp_path):
    """No GREENCTL_DATABASE_URL: the bundled HELM data answers and no embedded server is started."""
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GREENCTL_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run([sys.executable, "-m", "greenctl", "estimate", "--params", "7e9", "--prompt-tokens",
                           "200", "--output-tokens", "10", "--hardware", "a100-helm", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["latency_s"]
    state = tmp_path / "state"
    assert not state.exists() or not any(state.iterdir()), sorted(p.name for p in state.rglob("*"))
