"""`greenctl compare EXP` of one experiment whose results came from two hosts (issue 16 item 3:
the same model on different edge devices), through click on a real Postgres.

Rows are written as a worker writes them (worker "HOST:queue", its worker_node row with the CPU
model). The truth is seeded and recomputed here, independently of greenctl: host B takes exactly
twice host A's time and three times its energy on every sample; host A's energy is read from
RAPL, host B's estimated; f16 answers every sample right on A and WRONG_ON_B samples wrong on B;
q4_0 answers "neutral" everywhere on both (a constant answer).
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from greenctl.cli import main
from report_fixtures import LABELS, MODEL, seed_experiment
from shared.db import session_scope
from shared.models import Experiment, Result, Task, TaskStatus, Variant, WorkerNode

SAMPLES = 40
WRONG_ON_B = 12                      # f16 samples host B answers wrong (the first ones)
TIME_FACTOR, ENERGY_FACTOR = 2.0, 3.0
CPU = {"a": "Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz", "b": "AMD Ryzen 7 PRO 4750U with Radeon Graphics"}
WIDTH = 80


def _truth(i: int) -> str:
    return LABELS[i % len(LABELS)]


def _wrong(label: str) -> str:
    return LABELS[(LABELS.index(label) + 1) % len(LABELS)]


def _e2e_a(i: int) -> float:
    return 0.08 + 0.004 * (i % 7) + 0.001 * i          # seconds: varies from sample to sample


def seed_hosts(url: str, *, shared: int = SAMPLES, tag: str = "") -> dict:
    """One experiment, f16 (baseline) and q4_0, SAMPLES samples: the first `shared` samples ran on
    both hosts (repeat 0 on A, repeat 1 on B), the others on one host only (even: A, odd: B).
    Returns the experiment id, the host names and the truth rows [(variant, host, i, label, pred, e2e, kWh)]."""
    suffix = tag or uuid.uuid4().hex[:6]
    host = {"a": f"laptop-a-{suffix}", "b": f"laptop-b-{suffix}"}
    clock = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)
    truth = []
    with session_scope(url) as s:
        for k in ("a", "b"):
            s.add(WorkerNode(hostname=host[k], queue="edge", cpu_model=CPU[k], cores=4, energy_method="rapl",
                             hardware_profile="cpu-same-profile"))
        exp = Experiment(name="across-hosts", status=TaskStatus.DONE, n_tasks=0, created_at=clock,
                         finished_at=clock + timedelta(hours=1),
                         spec={"name": "across-hosts", "dataset": {"labels": LABELS, "sample": SAMPLES},
                               "carbon": {"country_iso_code": "CAN", "pue": 1.0}, "repeats": 2})
        s.add(exp)
        s.flush()
        n_tasks = 0
        for name in ("f16", "q4_0"):
            v = Variant(experiment_id=exp.id, model=MODEL, engine="embedded", variant=name,
                        is_baseline=name == "f16", queue="edge", params={"temperature": 0.0})
            s.add(v)
            s.flush()
            for i in range(SAMPLES):
                runs = [("a", 0), ("b", 1)] if i < shared else [("a" if i % 2 == 0 else "b", 0)]
                for k, repeat in runs:
                    label = _truth(i)
                    if name == "q4_0":
                        pred = "neutral"
                    else:
                        pred = _wrong(label) if k == "b" and i < WRONG_ON_B else label
                    e2e = _e2e_a(i) * (TIME_FACTOR if k == "b" else 1.0)
                    kwh = _e2e_a(i) * 14.0 / 3.6e6 * (ENERGY_FACTOR if k == "b" else 1.0)
                    task = Task(experiment_id=exp.id, variant_id=v.id, sample_index=i, repeat=repeat,
                                text=f"sentence {i}", label=label, status=TaskStatus.DONE, attempts=1,
                                worker=f"{host[k]}:edge")
                    s.add(task)
                    s.flush()
                    clock += timedelta(seconds=e2e + 0.05)
                    s.add(Result(task_id=task.id, experiment_id=exp.id, variant_id=v.id, worker=f"{host[k]}:edge",
                                 hardware_profile="cpu-same-profile", prediction=pred, raw_output=pred,
                                 e2e_s=e2e, energy_kwh=kwh, co2_kg=kwh * 0.12,
                                 energy_method="rapl" if k == "a" else "estimated",
                                 energy_detail="cpu=rapl" if k == "a" else "cpu=estimated",
                                 energy_measured_kwh=kwh if k == "a" else 0.0,
                                 carbon_intensity_kg_per_kwh=0.12, created_at=clock))
                    truth.append((name, k, i, label, pred, e2e, kwh))
                    n_tasks += 1
        exp.n_tasks = n_tasks
    return {"id": exp.id, "host": host, "truth": truth}


@pytest.fixture(scope="module")
def env(db_url):
    mp = pytest.MonkeyPatch()
    mp.setenv("GREENCTL_DATABASE_URL", db_url)
    yield db_url
    mp.undo()


def run(*args, code: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def both(env):
    """The experiment where every sample ran on both hosts, its JSON and its default table."""
    seeded = seed_hosts(env)
    seeded["json"] = json.loads(run("compare", seeded["id"], "--json").stdout)
    seeded["table"] = run("compare", seeded["id"]).stdout
    return seeded


def _rows(seeded, variant, k):
    return [t for t in seeded["truth"] if t[0] == variant and t[1] == k]


def _variant(data, name):
    return next(v for v in data["by_host"]["variants"] if v["variant"] == name)


def test_per_host_rows_carry_f1_interval_latency_energy_method_and_cpu(both):
    hosts = both["json"]["by_host"]
    a, b = both["host"]["a"], both["host"]["b"]
    assert hosts["baseline_host"] == a and [h["host"] for h in hosts["hosts"]] == [a, b]
    assert [h["cpu_model"] for h in hosts["hosts"]] == [CPU["a"], CPU["b"]]
    for name in ("f16", "q4_0"):
        rows = {h["host"]: h for h in _variant(both["json"], name)["hosts"]}
        for k in ("a", "b"):
            truth, row = _rows(both, name, k), rows[both["host"][k]]
            f1 = f1_score([t[3] for t in truth], [t[4] for t in truth], labels=LABELS, average="weighted",
                          zero_division=0)
            assert row["n"] == SAMPLES and row["f1_weighted"] == pytest.approx(f1)
            lo, hi = row["f1_weighted_ci95"]
            assert lo <= f1 <= hi
            assert row["latency_s_mean"] == pytest.approx(np.mean([t[5] for t in truth]))
            assert row["energy_kwh_per_inference"] == pytest.approx(np.mean([t[6] for t in truth]))
            assert row["energy_method"] == ("rapl" if k == "a" else "estimated")
            assert row["energy_measured_share"] == pytest.approx(1.0 if k == "a" else 0.0)
            assert row["cpu_model"] == CPU[k] and row["hardware_profiles"] == ["cpu-same-profile"]
        assert all(r["constant_answer"] for r in rows.values()) == (name == "q4_0")


def test_host_b_is_paired_on_every_sample_with_the_seeded_ratios_and_f1_difference(both):
    f16 = _variant(both["json"], "f16")
    (vs,) = f16["versus_baseline_host"]
    assert vs["host"] == both["host"]["b"] and vs["n_paired"] == vs["n_samples"] == SAMPLES
    for key, factor in (("latency", TIME_FACTOR), ("energy", ENERGY_FACTOR)):
        lo, hi = vs[f"{key}_ratio_ci95"]
        assert vs[f"{key}_ratio"] == pytest.approx(factor) and lo <= factor <= hi and lo > 1
    truth_a, truth_b = _rows(both, "f16", "a"), _rows(both, "f16", "b")
    y = [t[3] for t in truth_a]
    delta = (f1_score(y, [t[4] for t in truth_b], labels=LABELS, average="weighted")
             - f1_score(y, [t[4] for t in truth_a], labels=LABELS, average="weighted"))
    lo, hi = vs["f1_weighted_delta_ci95"]
    assert vs["f1_weighted_delta"] == pytest.approx(delta) and lo <= delta <= hi < 0
    assert vs["f1_weighted_verdict"] == "worse"
    assert vs["mcnemar"]["pvalue"] == pytest.approx(binomtest(0, WRONG_ON_B, 0.5).pvalue)
    (same,) = _variant(both["json"], "q4_0")["versus_baseline_host"]
    assert same["f1_weighted_delta"] == 0 and same["f1_weighted_verdict"] == "equivalent"


def test_the_verdict_reads_ratio_interval_f1_and_sample_count(both):
    text = " ".join(both["table"].split())
    b = both["host"]["b"]
    m = re.search(rf"f16: {b} vs {both['host']['a']} on the same (\d+) samples: {b} is ([\d.]+)× slower "
                  r"\(([\d.]+)–([\d.]+)\); uses ([\d.]+)× the energy \(([\d.]+)–([\d.]+); estimated energy, "
                  r"driven by time\); F1 lower \(ΔF1 −[\d.]+, −[\d.]+..−[\d.]+, worse\); McNemar p < 0.001\.", text)
    assert m, text
    n, r, lo, hi, er, elo, ehi = (float(g) for g in m.groups())
    assert n == SAMPLES and lo <= TIME_FACTOR <= hi and lo > 1 and r == pytest.approx(TIME_FACTOR, abs=0.01)
    assert elo <= ENERGY_FACTOR <= ehi and er == pytest.approx(ENERGY_FACTOR, abs=0.01)
    assert "F1 the same within ±0.03" in text
    assert f"on {both['host']['a']} and {b} no better than a constant answer" in text
    assert f"{both['host']['a']}: {CPU['a']}" in text and f"{b}: {CPU['b']}" in text


def test_the_default_view_fits_80_columns_and_wide_shows_every_paired_figure(both):
    lines = both["table"].splitlines()
    assert max(len(line) for line in lines) <= WIDTH, "\n".join(line for line in lines if len(line) > WIDTH)
    assert "95 %" in both["table"] and "meas." in both["table"]
    wide = run("compare", both["id"], "--wide").stdout
    assert "McNemar p" in wide and "ΔF1 macro [95 %]" in wide and "CPU model" in wide
    assert CPU["b"] in wide                                  # in full, in its row
    row = next(line for line in wide.splitlines() if line.split()[:1] == ["f16"] and "/40" in line)
    assert f"{SAMPLES}/{SAMPLES}" in row and "yes" in row.split()


def test_baseline_host_flag_turns_the_comparison_round_and_bad_flags_exit_2(both):
    a, b = both["host"]["a"], both["host"]["b"]
    data = json.loads(run("compare", both["id"], "--baseline-host", b, "--json").stdout)
    (vs,) = _variant(data, "f16")["versus_baseline_host"]
    assert vs["host"] == a and vs["latency_ratio"] == pytest.approx(1 / TIME_FACTOR)
    text = " ".join(run("compare", both["id"], "--baseline-host", b).stdout.split())
    m = re.search(rf"{a} is ([\d.]+)× faster \(([\d.]+)–([\d.]+)\)", text)
    assert m and float(m[2]) <= TIME_FACTOR <= float(m[3])
    bad = run("compare", both["id"], "--baseline-host", "no-such-host", code=2)
    assert bad.output.count("Error:") == 1 and "--baseline-host" in bad.output and a in bad.output
    two = run("compare", both["id"], both["id"], "--baseline-host", a, code=2)
    assert "give one EXPERIMENT_ID" in two.output


def test_few_common_samples_are_undecided_and_name_the_count(env):
    few = seed_hosts(env, shared=6)
    data = json.loads(run("compare", few["id"], "--json").stdout)
    (vs,) = _variant(data, "f16")["versus_baseline_host"]
    assert (vs["n_paired"], vs["n_samples"], vs["decided"]) == (6, SAMPLES, False)
    text = " ".join(run("compare", few["id"]).stdout.split())
    assert f"undecided: only 6 of the {SAMPLES} samples ran on both hosts" in text
    none = seed_hosts(env, shared=0)
    (vs,) = _variant(json.loads(run("compare", none["id"], "--json").stdout), "f16")["versus_baseline_host"]
    assert vs["n_paired"] == 0 and vs["decided"] is False
    assert "undecided: no sample ran on both hosts" in " ".join(run("compare", none["id"]).stdout.split())


def test_across_experiments_each_run_carries_its_f1_interval(env):
    first = seed_experiment(env, name="exp-one", samples=30).experiment_id
    second = seed_experiment(env, name="exp-two", samples=30, seed=3).experiment_id
    data = json.loads(run("compare", first, second, "--json").stdout)
    assert data["by_host"] is None
    runs = [r for v in data["variants"] for r in v["runs"]]
    assert len(runs) == 6
    for r in runs:
        lo, hi = r["f1_weighted_ci95"]
        assert 0 <= lo <= r["f1_weighted"] <= hi <= 1 and hi - lo > 0.05     # 28 samples: a real width
    table = run("compare", first, second).stdout
    assert max(map(len, table.splitlines())) <= WIDTH and "95 %" in table
    f16 = next(r for r in runs if r["experiment_id"] == first)
    lo, hi = (f"{x:.2f}".lstrip("0") for x in f16["f1_weighted_ci95"])
    assert f"{f16['f1_weighted']:.2f} {lo}–{hi}" in " ".join(table.split())


# -- the same spec submitted once per host: `compare A B` pairs the experiments ---------------------
#
# Truth, seeded here: experiment A ran on host A, B on host B, the same SAMPLES texts at the same
# sample indices; B takes TIME_FACTOR x A's time and ENERGY_FACTOR x its energy on every sample;
# f16 answers WRONG_ON_B samples wrong on B only; q4_0 answers "neutral" everywhere.

PROFILE = {"a": "cpu-i5-8250u-4c", "b": "cpu-ryzen-4750u-8c"}


def seed_run(url: str, host: str, k: str, *, samples: int = SAMPLES, index_offset: int = 0,
             text=lambda i: f"sentence {i}", name: str = "same-spec") -> dict:
    """One experiment of the shared spec, every task run on `host` (machine kind k: "a" or "b").
    Returns the experiment id and its truth rows [(variant, i, label, pred, e2e, kWh)]."""
    clock = datetime(2026, 6, 2, 9, 0, tzinfo=timezone.utc)
    truth = []
    with session_scope(url) as s:
        exp = Experiment(name=name, status=TaskStatus.DONE, n_tasks=0, created_at=clock,
                         finished_at=clock + timedelta(hours=1),
                         spec={"name": name, "dataset": {"labels": LABELS, "sample": samples},
                               "carbon": {"country_iso_code": "CAN", "pue": 1.0}})
        s.add(exp)
        s.flush()
        for variant in ("f16", "q4_0"):
            v = Variant(experiment_id=exp.id, model=MODEL, engine="embedded", variant=variant,
                        is_baseline=variant == "f16", queue=host, params={"temperature": 0.0})
            s.add(v)
            s.flush()
            for i in range(samples):
                label = _truth(i)
                pred = ("neutral" if variant == "q4_0" else
                        _wrong(label) if k == "b" and i < WRONG_ON_B else label)
                e2e = _e2e_a(i) * (TIME_FACTOR if k == "b" else 1.0)
                kwh = _e2e_a(i) * 14.0 / 3.6e6 * (ENERGY_FACTOR if k == "b" else 1.0)
                task = Task(experiment_id=exp.id, variant_id=v.id, sample_index=i + index_offset, repeat=0,
                            text=text(i), label=label, status=TaskStatus.DONE, attempts=1, worker=f"{host}:{host}")
                s.add(task)
                s.flush()
                clock += timedelta(seconds=e2e + 0.05)
                s.add(Result(task_id=task.id, experiment_id=exp.id, variant_id=v.id, worker=f"{host}:{host}",
                             hardware_profile=PROFILE[k], prediction=pred, raw_output=pred, e2e_s=e2e,
                             energy_kwh=kwh, co2_kg=kwh * 0.12, energy_method="rapl" if k == "a" else "estimated",
                             energy_detail="cpu=rapl" if k == "a" else "cpu=estimated",
                             energy_measured_kwh=kwh if k == "a" else 0.0, carbon_intensity_kg_per_kwh=0.12,
                             created_at=clock))
                truth.append((variant, i, label, pred, e2e, kwh))
        exp.n_tasks = 2 * samples
    return {"id": exp.id, "truth": truth}


@pytest.fixture(scope="module")
def spec_hosts(env):
    """Host names (registered as workers with their CPU model) and the two experiments of one spec."""
    suffix = uuid.uuid4().hex[:6]
    host = {"a": f"edge-a-{suffix}", "b": f"edge-b-{suffix}"}
    with session_scope(env) as s:
        for k in ("a", "b"):
            s.add(WorkerNode(hostname=host[k], queue=host[k], cpu_model=CPU[k], cores=4,
                             energy_method="rapl", hardware_profile=PROFILE[k]))
    a, b = seed_run(env, host["a"], "a"), seed_run(env, host["b"], "b")
    out = {"host": host, "a": a, "b": b}
    out["json"] = json.loads(run("compare", a["id"], b["id"], "--json").stdout)
    out["table"] = run("compare", a["id"], b["id"]).stdout
    return out


def _paired(data, name):
    return next(v for v in data["by_experiment"]["variants"] if v["variant"] == name)


def test_two_experiments_of_one_spec_pair_on_every_sample_with_the_seeded_ratios(spec_hosts):
    a, b = spec_hosts["a"], spec_hosts["b"]
    data = spec_hosts["json"]["by_experiment"]
    assert data["baseline_experiment"] == a["id"] and [e["id"] for e in data["experiments"]] == [a["id"], b["id"]]
    assert [e["hosts"] for e in data["experiments"]] == [[{"host": spec_hosts["host"][k], "cpu_model": CPU[k]}]
                                                         for k in ("a", "b")]
    f16 = _paired(spec_hosts["json"], "f16")
    assert [r["hosts"] for r in f16["runs"]] == [[spec_hosts["host"]["a"]], [spec_hosts["host"]["b"]]]
    assert [r["cpu_models"] for r in f16["runs"]] == [[CPU["a"]], [CPU["b"]]]
    assert [r["hardware_profiles"] for r in f16["runs"]] == [[PROFILE["a"]], [PROFILE["b"]]]
    (vs,) = f16["versus_baseline"]
    assert (vs["experiment_id"], vs["baseline_experiment_id"]) == (b["id"], a["id"])
    assert (vs["n_paired"], vs["n_samples"], vs["n_samples_other"], vs["paired_on"]) == (
        SAMPLES, SAMPLES, SAMPLES, "sample_index")
    assert vs["same_index_other_text"] == 0
    for key, factor in (("latency", TIME_FACTOR), ("energy", ENERGY_FACTOR), ("co2", ENERGY_FACTOR)):
        lo, hi = vs[f"{key}_ratio_ci95"]
        assert vs[f"{key}_ratio"] == pytest.approx(factor) and 1 < lo <= factor <= hi
    y = [t[2] for t in a["truth"] if t[0] == "f16"]
    delta = (f1_score(y, [t[3] for t in b["truth"] if t[0] == "f16"], labels=LABELS, average="weighted")
             - f1_score(y, [t[3] for t in a["truth"] if t[0] == "f16"], labels=LABELS, average="weighted"))
    lo, hi = vs["f1_weighted_delta_ci95"]
    assert vs["f1_weighted_delta"] == pytest.approx(delta) and lo <= delta <= hi < 0
    assert vs["f1_weighted_verdict"] == "worse" and vs["decided"] is True
    assert vs["mcnemar"]["pvalue"] == pytest.approx(binomtest(0, WRONG_ON_B, 0.5).pvalue)
    (same,) = _paired(spec_hosts["json"], "q4_0")["versus_baseline"]
    assert same["f1_weighted_delta"] == 0 and same["f1_weighted_verdict"] == "equivalent"


def test_the_paired_verdict_names_each_machine_and_fits_80_columns(spec_hosts):
    a, b, ha, hb = spec_hosts["a"]["id"], spec_hosts["b"]["id"], spec_hosts["host"]["a"], spec_hosts["host"]["b"]
    lines = spec_hosts["table"].splitlines()
    assert max(len(line) for line in lines) <= WIDTH, "\n".join(line for line in lines if len(line) > WIDTH)
    text = " ".join(spec_hosts["table"].split())
    m = re.search(rf"f16: exp {b} \({hb}\) vs exp {a} \({ha}\) on the same (\d+) samples: exp {b} is ([\d.]+)× "
                  r"slower \(([\d.]+)–([\d.]+)\); uses ([\d.]+)× the energy \(([\d.]+)–([\d.]+); estimated "
                  r"energy, driven by time\); F1 lower \(ΔF1 −[\d.]+, −[\d.]+..−[\d.]+, worse\); McNemar p < 0.001\.",
                  text)
    assert m, text
    n, r, lo, hi, er, elo, ehi = (float(g) for g in m.groups())
    assert n == SAMPLES and lo <= TIME_FACTOR <= hi and r == pytest.approx(TIME_FACTOR, abs=0.01)
    assert elo <= ENERGY_FACTOR <= ehi and er == pytest.approx(ENERGY_FACTOR, abs=0.01)
    for exp, k in ((a, "a"), (b, "b")):
        assert f"exp {exp} same-spec: {spec_hosts['host'][k]} ({CPU[k]}); profile {PROFILE[k]}" in text
    assert "q4_0: " in text and "F1 the same within ±0.03" in text and "no better than a constant answer" in text
    wide = run("compare", a, b, "--wide").stdout
    row = next(line for line in wide.splitlines() if line.split()[:1] == ["f16"] and f"{SAMPLES}/" in line)
    assert f"exp {b} ({hb})" in row and f"{SAMPLES}/{SAMPLES}" in row and "yes" in row.split()
    assert "McNemar p" in wide and "ΔF1 macro [95 %]" in wide
    (vs,) = _paired(spec_hosts["json"], "f16")["versus_baseline"]
    shown = [f"{vs[f'{m}_delta']:+.2f} [{vs[f'{m}_delta_ci95'][0]:+.2f}, {vs[f'{m}_delta_ci95'][1]:+.2f}]"
             .replace("-", "−") for m in ("f1_weighted", "f1_macro")]
    assert shown[0] != shown[1] and row.index(shown[0]) < row.index(shown[1])     # under their own headers


def test_baseline_flag_turns_the_pairing_round_and_bad_values_exit_2(spec_hosts):
    a, b = spec_hosts["a"]["id"], spec_hosts["b"]["id"]
    data = json.loads(run("compare", a, b, "--baseline", b, "--json").stdout)["by_experiment"]
    (vs,) = next(v for v in data["variants"] if v["variant"] == "f16")["versus_baseline"]
    assert vs["baseline_experiment_id"] == b and vs["latency_ratio"] == pytest.approx(1 / TIME_FACTOR)
    text = " ".join(run("compare", a, b, "--baseline", b).stdout.split())
    m = re.search(rf"exp {a} is ([\d.]+)× faster \(([\d.]+)–([\d.]+)\)", text)
    assert m and float(m[2]) <= TIME_FACTOR <= float(m[3])
    bad = run("compare", a, b, "--baseline", 999_999, code=2)
    assert bad.output.count("Error:") == 1 and "--baseline: 999999 is not one of" in bad.output
    one = run("compare", a, "--baseline", a, code=2)
    assert "give two or more EXPERIMENT_IDs" in one.output


def test_experiments_of_different_samples_say_so_and_rows_sampled_elsewhere_pair_on_text(spec_hosts, env):
    a, hb = spec_hosts["a"], spec_hosts["host"]["b"]
    other = seed_run(env, hb, "b", text=lambda i: f"another sentence {i}")
    data = json.loads(run("compare", a["id"], other["id"], "--json").stdout)
    (vs,) = _paired(data, "f16")["versus_baseline"]
    assert (vs["n_paired"], vs["paired_on"], vs["same_index_other_text"], vs["decided"]) == (0, "text", SAMPLES, False)
    text = " ".join(run("compare", a["id"], other["id"]).stdout.split())
    assert (f"f16: exp {other['id']} ({hb}) vs exp {a['id']} ({spec_hosts['host']['a']}): undecided: they ran "
            f"different samples (matched on the text: {SAMPLES} of the {SAMPLES} (sample_index, repeat) both have "
            "carry different texts, and no text is in both)") in text
    # The same texts drawn at other row numbers (another sample seed or file order): paired on the text.
    shifted = seed_run(env, hb, "b", index_offset=1000)
    (vs,) = _paired(json.loads(run("compare", a["id"], shifted["id"], "--json").stdout), "f16")["versus_baseline"]
    assert (vs["n_paired"], vs["paired_on"], vs["same_index"]) == (SAMPLES, "text", 0)
    assert vs["latency_ratio"] == pytest.approx(TIME_FACTOR) and vs["f1_weighted_verdict"] == "worse"
    text = " ".join(run("compare", a["id"], shifted["id"]).stdout.split())
    assert (f"on the same {SAMPLES} samples (matched on the text: no sample_index in common: the experiments "
            "sampled different rows)") in text


def test_fewer_than_ten_matched_samples_are_undecided_and_name_the_count(spec_hosts, env):
    a, hb = spec_hosts["a"], spec_hosts["host"]["b"]
    few = seed_run(env, hb, "b", samples=6)
    data = json.loads(run("compare", a["id"], few["id"], "--json").stdout)
    (vs,) = _paired(data, "f16")["versus_baseline"]
    assert (vs["n_paired"], vs["n_samples"], vs["n_samples_other"], vs["decided"]) == (6, SAMPLES, 6, False)
    text = " ".join(run("compare", a["id"], few["id"]).stdout.split())
    assert (f"exp {few['id']} ({hb}) vs exp {a['id']} ({spec_hosts['host']['a']}): undecided: only 6 samples in "
            f"common (matched on (sample_index, repeat), texts equal; of {SAMPLES} and 6); a paired verdict needs "
            "10 or more.") in text
