"""`greenctl report` on partial experiments, `greenctl compare` and `greenctl
recommend` (measured and estimated), through click on a real Postgres."""
from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from greenctl.cli import main
from report_fixtures import Machine, seed_experiment
from shared.db import session_scope

PI5 = Machine(profile="cpu-pi5", workers=("pi5",), threads=4, speed=1.8)


@pytest.fixture()
def run(fresh_db_url, monkeypatch):
    monkeypatch.setenv("GREENCTL_DATABASE_URL", fresh_db_url)

    def invoke(*args: str, ok: bool = True):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result
    invoke.url = fresh_db_url
    return invoke


def test_partial_experiment_reports_finished_tasks_only(run):
    exp = seed_experiment(run.url, samples=12, failed=1, unfinished=4).experiment_id
    data = json.loads(run("report", exp, "--format", "json").stdout)
    summary = data["experiment"]
    assert summary["partial"] is True and summary["n_tasks"] == 36
    assert (summary["n_done"], summary["n_failed"], summary["n_queued"], summary["n_running"]) == (21, 3, 6, 6)
    assert [(v["n"], v["n_failed"]) for v in data["variants"]] == [(7, 1)] * 3
    assert all(sum(map(sum, v["confusion"]["matrix"])) == 7 for v in data["variants"])
    assert "PARTIAL: only the finished tasks are counted, not the 6 queued, 6 running" in \
        " ".join(run("report", exp).stdout.split())
    assert "**Partial experiment:** only finished tasks are counted; the 6 queued, 6 running tasks are not" in \
        run("report", exp, "--format", "md").stdout
    rows = list(csv.DictReader(io.StringIO(run("report", exp, "--format", "csv").stdout)))
    assert {r["partial"] for r in rows} == {"True"} and [r["n"] for r in rows] == ["7"] * 3


def test_a_cancelled_experiment_is_partial_and_says_what_never_ran(run):
    exp = seed_experiment(run.url, samples=6, failed=0, unfinished=2).experiment_id
    with session_scope(run.url) as s:     # as `greenctl cancel` leaves it
        s.execute(sa.text("update task set status = 'cancelled' where experiment_id = :e and status <> 'done'"),
                  {"e": exp})
    data = json.loads(run("report", exp, "--format", "json").stdout)
    assert data["experiment"]["partial"] is True and data["experiment"]["n_cancelled"] == 6
    assert "not the 6 cancelled" in " ".join(run("report", exp).stdout.split())


def test_a_variant_with_no_finished_task_is_not_measured(run, tmp_path):
    exp = seed_experiment(run.url, samples=9, unmeasured=("q4_1",)).experiment_id
    data = json.loads(run("report", exp, "--format", "json").stdout)
    q41 = data["variants"][-1]
    assert (q41["variant"], q41["status"], q41["n"], q41["f1_weighted"], q41["co2_kg_per_inference"]) == \
        ("q4_1", "not measured", 0, None, None)
    assert q41["on_pareto_front"] is False
    assert "Not measured yet (no finished task): q4_1." in " ".join(run("report", exp).stdout.split())
    assert run("report", exp, "--format", "html", "-o", tmp_path / "r.html").exit_code == 0
    assert run("report", exp, "--format", "png", "-o", tmp_path / "figs").stdout.count("wrote") == 3


def test_unknown_experiment_is_a_clear_error(run):
    result = run("report", 999, ok=False)
    assert result.exit_code == 2 and "no experiment with id 999" in result.output and "greenctl status" in result.output


def test_compare_puts_the_same_variant_side_by_side_across_experiments_and_machines(run):
    laptop = seed_experiment(run.url, name="on-laptop").experiment_id
    pi5 = seed_experiment(run.url, name="on-pi5", machine=PI5, seed=2).experiment_id
    # Half of the laptop experiment's q4_0 results came from another kind of machine.
    with session_scope(run.url) as s:
        s.execute(sa.text("""update result set hardware_profile = 'cpu-other' where id in (
            select r.id from result r join variant v on v.id = r.variant_id
            where r.experiment_id = :e and v.variant = 'q4_0' and r.id % 2 = 0)"""), {"e": laptop})
    data = json.loads(run("compare", laptop, pi5, "--json").stdout)
    assert [e["id"] for e in data["experiments"]] == [laptop, pi5]
    by_variant = {v["variant"]: v["runs"] for v in data["variants"]}
    assert [(r["experiment_id"], r["hardware_profile"]) for r in by_variant["f16"]] == \
        [(laptop, "cpu-test-2c"), (pi5, "cpu-pi5")]
    assert [(r["experiment_id"], r["hardware_profile"]) for r in by_variant["q4_0"]] == \
        [(laptop, "cpu-other"), (laptop, "cpu-test-2c"), (pi5, "cpu-pi5")]
    reports = {e: json.loads(run("report", e, "--format", "json").stdout) for e in (laptop, pi5)}
    f16_pi5 = next(v for v in reports[pi5]["variants"] if v["variant"] == "f16")
    first, second = by_variant["f16"]
    assert second["co2_kg_per_inference"] == pytest.approx(f16_pi5["co2_kg_per_inference"])
    assert second["f1_weighted"] == pytest.approx(f16_pi5["f1_weighted"])
    assert second["co2_change_vs_first"] == pytest.approx(
        second["co2_kg_per_inference"] / first["co2_kg_per_inference"] - 1)
    assert second["co2_change_vs_first"] > 0.3          # the slower machine emits more per inference
    assert sum(r["n"] for r in by_variant["q4_0"][:2]) == 28
    table = run("compare", laptop, pi5, "--wide").stdout     # names in full
    assert "cpu-pi5" in table and "cpu-other" in table and "on-laptop" in table and "CO2e µg" in table


def _recommend(run, exp, *args):
    return json.loads(run("recommend", exp, *args, "--json").stdout)


def test_recommend_picks_the_least_co2_whose_f1_lower_bound_meets_the_floor(run):
    """300 samples: intervals narrow enough to decide. The oracle is the F1 intervals of the report."""
    exp = seed_experiment(run.url, samples=300).experiment_id
    variants = {v["variant"]: v for v in json.loads(run("report", exp, "--format", "json").stdout)["variants"]}
    low = {name: v["f1_weighted_ci95"][0] for name, v in variants.items()}
    loose = _recommend(run, exp, "--min-f1", f"{min(low.values()) - 0.01:.4f}")
    assert loose["decided"] is True and loose["recommended"]["variant"] == "q4_0"
    assert loose["recommended"]["co2_source"] == "measured"
    assert [c["variant"] for c in loose["candidates"]] == ["q4_0", "q8_0", "f16"]      # the green ranking
    # A floor between q4_0's lower bound and q8_0's: q4_0's interval straddles it, and q4_0 emits less.
    between = (low["q4_0"] + variants["q4_0"]["f1_weighted"]) / 2
    straddle = _recommend(run, exp, "--min-f1", f"{between:.4f}")
    assert straddle["decided"] is False and straddle["recommended"] is None
    assert straddle["provisional"]["variant"] in ("q8_0", "f16") and straddle["samples_to_decide"] > 300
    assert any("q4_0 emits less and might meet the floor" in why for why in straddle["undecided_because"])
    none = _recommend(run, exp, "--min-f1", "0.99")
    assert none["decided"] is True and none["recommended"] is None
    assert "no measured variant reaches f1_weighted >= 0.99" in none["reason"]
    text = " ".join(run("recommend", exp, "--min-f1", f"{min(low.values()) - 0.01:.4f}").stdout.split())
    assert "Recommended: smollm2:135m-instruct q4_0" in text and "is an estimate, not a power reading" in text
    assert "lower bound" in text


def test_recommend_is_undecided_when_the_interval_straddles_the_floor(run):
    exp = seed_experiment(run.url, samples=30).experiment_id
    data = json.loads(run("report", exp, "--format", "json").stdout)
    f16 = next(v for v in data["variants"] if v["variant"] == "f16")
    low, high = f16["f1_macro_ci95"]
    assert high - low > 0.2                                   # 28 samples: a wide interval
    result = _recommend(run, exp, "--min-f1", f"{f16['f1_macro'] - 0.02:.4f}", "--metric", "f1_macro")
    assert result["decided"] is False and result["recommended"] is None
    assert "with confidence" in result["reason"] and result["samples_to_decide"] > 28
    text = " ".join(run("recommend", exp, "--min-f1", f"{f16['f1_macro'] - 0.02:.4f}", "--metric",
                        "f1_macro").stdout.split())
    assert text.startswith("Undecided") and "samples per variant would decide" in text


def test_a_constant_answer_is_flagged_and_never_recommended(run, tmp_path):
    exp = seed_experiment(run.url, samples=300, constant=("q4_0",)).experiment_id
    data = json.loads(run("report", exp, "--format", "json").stdout)
    q4 = next(v for v in data["variants"] if v["variant"] == "q4_0")
    assert q4["constant_answer"] is True and q4["dominant_answer"] == "neutral" and q4["dominant_answer_share"] == 1
    assert [v["constant_answer"] for v in data["variants"]] == [False, False, True]
    assert any("q4_0: no better than a constant answer" in line for line in data["verdicts"])
    for fmt in ("table", "md"):
        assert "no better than a constant answer" in " ".join(run("report", exp, "--format", fmt).stdout.split())
    rows = list(csv.DictReader(io.StringIO(run("report", exp, "--format", "csv").stdout)))
    assert [r["constant_answer"] for r in rows] == ["False", "False", "True"]
    run("report", exp, "--format", "html", "-o", tmp_path / "r.html")
    assert "no better than a constant answer" in (tmp_path / "r.html").read_text()
    # Its weighted F1 is the lowest of all, so any floor is met by a cheaper-looking q4_0 only at 0.
    result = _recommend(run, exp, "--min-f1", "0.0")
    assert result["recommended"]["variant"] == "q8_0" and [e["variant"] for e in result["excluded"]] == ["q4_0"]
    assert "q4_0 not considered: no better than a constant answer" in run("recommend", exp, "--min-f1", "0").stdout


def test_recommend_estimates_a_variant_not_measured_yet(run):
    seed_experiment(run.url, name="earlier-run")           # measurements the estimator learns from
    exp = seed_experiment(run.url, samples=15, unmeasured=("q4_1",), seed=4).experiment_id
    before = _recommend(run, exp, "--min-f1", "0.5")
    q41 = next(c for c in before["candidates"] if c["variant"] == "q4_1")
    assert q41["status"] == "not measured" and q41["co2_source"] is None
    assert "greenctl estimator fit --hardware cpu-test-2c" in q41["estimate"]["reason"]
    assert "q4_1: not measured, and no estimate" in run("recommend", exp, "--min-f1", "0.5").stdout

    assert json.loads(run("estimator", "fit", "--hardware", "cpu-test-2c", "--json").stdout)["status"] == "fitted"
    after = _recommend(run, exp, "--min-f1", "0.5")
    q41 = next(c for c in after["candidates"] if c["variant"] == "q4_1")
    measured = {c["variant"]: c for c in after["candidates"] if c["status"] == "measured"}
    assert q41["status"] == "not measured" and q41["co2_source"] == "estimated" and q41["f1_weighted"] is None
    assert q41["meets_floor"] is None and q41["interval"].startswith("80 %")
    assert q41["estimate"]["inputs"]["bits"] == 5.0 and q41["estimate"]["fit_energy_methods"] == ["estimated"]
    # 5 bits per weight: between the 4.5-bit and 8.5-bit variants measured beside it.
    assert measured["q4_0"]["co2_kg_per_inference"] * 0.9 < q41["co2_kg_per_inference"] \
        < measured["q8_0"]["co2_kg_per_inference"] * 1.1
    # F1 unknown: never recommended unmeasured (13 samples: the pick may be only provisional)
    assert (after["recommended"] or after["provisional"])["status"] == "measured"
    unreachable = _recommend(run, exp, "--min-f1", "0.99")
    assert unreachable["recommended"] is None and unreachable["worth_measuring"] == ["q4_1"]
    text = " ".join(run("recommend", exp, "--min-f1", "0.5").stdout.split())
    assert "q4_1: not measured; the estimator puts it at" in text and "estimated" in text and "measured" in text
