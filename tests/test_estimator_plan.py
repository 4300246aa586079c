"""`greenctl plan` and `submit --dry-run` on a real Postgres: a cost preview that writes nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from estimator.tasks import refit
from greenctl.cli import main
from shared.db import session_scope
from shared.models import Experiment, Task, WorkerNode
from test_estimator_store import add_results

DATA = Path(__file__).parents[1] / "greenctl" / "data"


def _spec(tmp_path: Path, **changes) -> Path:
    spec = yaml.safe_load((DATA / "demo.yaml").read_text())
    spec["dataset"]["path"] = str(DATA / "financial_sentiment.csv")
    spec.pop("stop")
    spec["dataset"]["sample"] = 40
    spec["carbon"] = {"country_iso_code": "CAN", "pue": 1.5, "carbon_intensity_g_per_kwh": 100.0}
    spec.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture()
def run(fresh_db_url, monkeypatch):
    monkeypatch.setenv("GREENCTL_DATABASE_URL", fresh_db_url)
    # A broker that does not exist: a plan must not need (or touch) one.
    monkeypatch.setenv("GREENCTL_BROKER_URL", "redis://127.0.0.1:1/0")
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    invoke.db_url = fresh_db_url
    return invoke


def _rows(db: str) -> tuple[int, int]:
    with session_scope(db) as s:
        return (s.execute(sa.select(sa.func.count()).select_from(Experiment)).scalar_one(),
                s.execute(sa.select(sa.func.count()).select_from(Task)).scalar_one())


def _worker(db: str, hostname: str, queue: str, profile: str) -> None:
    with session_scope(db) as s:
        s.add(WorkerNode(hostname=hostname, queue=queue, hardware_profile=profile, threads=2))


def test_without_a_local_fit_the_plan_is_the_helm_prior_and_says_so(run, tmp_path):
    result = run("plan", str(_spec(tmp_path)), "--json")
    assert result.exit_code == 0, result.output
    p = json.loads(result.stdout)
    assert p["tasks"] == 80 and _rows(run.db_url) == (0, 0)
    for v in p["variants"]:
        assert v["status"] == "estimated" and v["fit"]["calibrated"] is False
        assert "not calibrated for this machine" in v["fit"]["label"]
        lat = v["per_inference"]["latency_s"]
        assert lat["low"] <= lat["value"] <= lat["high"]
    # CO2e = energy at the wall x the forced 100 g/kWh, for the whole experiment.
    t = p["totals"]
    assert t["co2_kg"]["value"] == pytest.approx(t["energy_kwh"]["value"] * 0.1)
    text = run("plan", str(_spec(tmp_path))).stdout
    assert "not calibrated for this machine" in text and "held-out MAPE" in text and "no worker online" in text


def test_a_local_fit_answers_for_the_queue_and_two_workers_halve_the_wall_time(run, tmp_path):
    add_results(run.db_url, "cpu-plan", 80)
    assert refit("cpu-plan", run.db_url, force=True)["status"] == "fitted"
    _worker(run.db_url, "host-a", "demo", "cpu-plan")
    before = _rows(run.db_url)
    one = json.loads(run("plan", str(_spec(tmp_path)), "--json").stdout)
    fit = one["variants"][0]["fit"]
    assert fit["kind"] == "local" and fit["hardware_profile"] == "cpu-plan" and fit["calibrated"]
    assert "trained on" in fit["label"] and fit["held_out_mape"]["latency_s"] is not None
    _worker(run.db_url, "host-b", "demo", "cpu-plan")
    two = json.loads(run("plan", str(_spec(tmp_path)), "--json").stdout)
    assert two["totals"]["queues"]["demo"]["online_workers"] == 2
    assert two["totals"]["wall_s"]["value"] == pytest.approx(one["totals"]["wall_s"]["value"] / 2)
    # Energy does not depend on how many workers share the queue.
    assert two["totals"]["energy_kwh"]["value"] == pytest.approx(one["totals"]["energy_kwh"]["value"])
    # 40 samples x 2 variants: the total is the per-inference mean times the tasks.
    per = sum(v["per_inference"]["energy_kwh"]["value"] * v["tasks"] for v in two["variants"])
    assert two["totals"]["energy_kwh"]["value"] == pytest.approx(per)
    assert _rows(run.db_url) == before


def test_submit_dry_run_is_the_plan_and_writes_nothing(run, tmp_path):
    path = str(_spec(tmp_path))
    dry = run("submit", path, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["variants"] == json.loads(run("plan", path, "--json").stdout)["variants"]
    assert _rows(run.db_url) == (0, 0)


def test_bad_input_exits_2_like_submit_and_writes_nothing(run, tmp_path):
    bad = _spec(tmp_path, models=[{"name": "smollm2:135m-instruct", "engine": "embedded", "variants": ["q3"]}])
    for args in (("plan", str(bad)), ("submit", str(bad), "--dry-run")):
        result = run(*args)
        assert result.exit_code == 2
        assert "models[0]: " in result.output and "unknown quantization 'q3'" in result.output
    missing = run("plan", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "no such file" in missing.output
    assert _rows(run.db_url) == (0, 0)


def test_the_seed_models_are_known_to_plan(run, tmp_path):
    models = [{"name": "llama3.2:1b-instruct", "engine": "ollama", "variants": ["q4_K_M", "fp16"]},
              {"name": "mistral:7b-instruct", "engine": "ollama", "variants": ["q4_0"]},
              {"name": "some/unknown:1b", "engine": "ollama", "variants": ["q4_0"]}]
    p = json.loads(run("plan", str(_spec(tmp_path, models=models)), "--json").stdout)
    by = {(v["model"], v["variant"]): v for v in p["variants"]}
    assert by[("llama3.2:1b-instruct", "q4_K_M")]["params"] == pytest.approx(1.24e9, rel=0.01)
    assert by[("mistral:7b-instruct", "q4_0")]["params"] == pytest.approx(7.25e9, rel=0.01)
    unknown = by[("some/unknown:1b", "q4_0")]
    assert unknown["status"] == "unavailable" and "parameter count" in unknown["reason"]
    assert p["totals"]["complete"] is False
    text = run("plan", str(_spec(tmp_path, models=models))).stdout
    assert "no estimate: parameter count of 'some/unknown:1b' unknown" in text and "partial" in text


@pytest.mark.parametrize("name, params, layers", [
    ("llama3.2:1b-instruct-q4_K_M", 1.24e9, 16),   # Llama-3.2-1B config: 16 layers, 1.24 B parameters
    ("phi3:mini", 3.82e9, 32),                     # Phi-3-mini: 32 layers, 3.8 B
    ("qwen2:7b-instruct", 7.62e9, 28),             # Qwen2-7B: 28 layers, 7.6 B
    ("mistral", 7.25e9, 32),                       # mistral:latest is the 7B: 32 layers
    ("llava-llama3:8b", 8.03e9, 32),               # its language model, Llama-3-8B: 32 layers
])
def test_estimate_knows_the_seed_models_by_their_ollama_tags(run, name, params, layers):
    out = json.loads(run("estimate", "--model", name, "--prompt-tokens", "100", "--output-tokens", "4",
                         "--json").stdout)
    assert out["params"] == pytest.approx(params, rel=0.01) and out["detail"]["layers"] == layers


def test_a_bare_tag_that_means_another_size_is_not_guessed(run):
    # llama3.2:latest is the 3B model, not the 1B the cards know: refused, with the fix.
    result = run("estimate", "--model", "llama3.2", "--prompt-tokens", "1", "--output-tokens", "1")
    assert result.exit_code == 2 and "--params" in result.output


def test_a_local_fit_too_poor_to_use_is_named_and_the_prior_answers(run, tmp_path):
    from estimator import store

    store.save_fit(run.db_url, hardware_profile="cpu-poor", target="latency_s", kind="local-nnls",
                   model={"coef": [1.0]}, features=["one"], n_train=40, n_test=10, metrics={"mape": 0.6},
                   is_good=False)
    _worker(run.db_url, "host-p", "demo", "cpu-poor")
    p = json.loads(run("plan", str(_spec(tmp_path)), "--json").stdout)
    assert {v["fit"]["kind"] for v in p["variants"]} == {"prior"}
    assert any("cpu-poor's local fit v1 is not used: held-out MAPE 60%" in n for n in p["notes"])


def test_a_variant_never_measured_is_flagged_as_an_interpolation_across_kernels(run, tmp_path):
    # Trained on two variants at 4.5 and 8.5 bits per weight (add_results); q4_1 has 5 bits: the fit
    # would interpolate, though llama.cpp's CPU speed follows the quantization type's kernel.
    add_results(run.db_url, "cpu-plan", 80)
    assert refit("cpu-plan", run.db_url, force=True)["status"] == "fitted"
    _worker(run.db_url, "host-a", "demo", "cpu-plan")
    spec = yaml.safe_load(_spec(tmp_path).read_text())
    spec["models"][0]["variants"] = ["q4_0", "q4_1"]
    path = tmp_path / "q41.yaml"
    path.write_text(yaml.safe_dump(spec))
    p = json.loads(run("plan", str(path), "--json").stdout)
    flagged = {v["variant"]: v["unmeasured_quantization"] for v in p["variants"]}
    assert flagged == {"q4_0": False, "q4_1": True}
    text = run("plan", str(path)).stdout
    assert "q4_1 (5 bits per weight) was never measured on this machine" in text
    assert "q4_0 (4.5 bits per weight) was never measured" not in text
