"""`greenctl report ID` in every format agrees with a fresh scikit-learn
computation over the stored rows of a three-variant experiment (real Postgres,
rows written as a worker writes them; no model runs)."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
from click.testing import CliRunner

from greenctl.cli import main
from report_fixtures import LABELS, UNIT_FACTORS, seed_with_truth

VARIANTS = ("f16", "q8_0", "q4_0")
SCORES = ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "precision_macro", "recall_macro",
          "f1_macro")
# What a reader sees is rounded: scores to 2 decimals, the rest to 3 significant digits.
SCORE_ABS, SIG3_REL = 0.005 + 1e-9, 6e-3
# Marks after a variant's name: * baseline, † upcast, ‡ re-quantized from the source file, ! constant answer.
MARKS = "*†‡!"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from conftest import drop_database, make_database
    from shared.db import migrate

    url = make_database()
    migrate(url)
    experiment_id, truth = seed_with_truth(url, variants=VARIANTS, samples=30, failed=2)
    yield {"url": url, "id": experiment_id, "truth": truth}
    drop_database(url)


@pytest.fixture()
def report(experiment, monkeypatch):
    monkeypatch.setenv("GREENCTL_DATABASE_URL", experiment["url"])

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, ["report", str(experiment["id"]), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout
    return run


def test_the_fixture_is_realistic(experiment):
    truth = experiment["truth"]
    assert all(t["n"] == 28 and t["n_failed"] == 2 and t["n_unparsed"] >= 1 for t in truth.values())
    # f16 is the most accurate and the most costly; every inference is below a milligram of CO2e.
    assert truth["f16"]["f1_weighted"] > truth["q4_0"]["f1_weighted"]
    assert truth["f16"]["co2_kg_per_inference"] > truth["q4_0"]["co2_kg_per_inference"]
    assert all(t["co2_kg_per_inference"] < 1e-6 for t in truth.values())


def test_json_agrees_with_scikit_learn(experiment, report):
    data = json.loads(report("--format", "json"))
    assert data["experiment"]["n_done"] == 84 and data["experiment"]["partial"] is False
    # The contract of issue 2: every key is still there.
    assert {"id", "name", "status", "n_tasks", "n_done", "n_failed"} <= set(data["experiment"])
    contract = {"model", "variant", "engine", "n", "n_failed", *SCORES, "energy_kwh_per_inference",
                "co2_kg_per_inference", "latency_s_mean", "prompt_tokens_mean", "output_tokens_mean", "energy_method"}
    assert [v["variant"] for v in data["variants"]] == list(VARIANTS)
    for v in data["variants"]:
        assert contract <= set(v)
        truth = experiment["truth"][v["variant"]]
        for key in ("n", "n_failed", "n_unparsed"):
            assert v[key] == truth[key], key
        for key in (*SCORES, "energy_kwh_per_inference", "co2_kg_per_inference", "latency_s_mean",
                    "prompt_tokens_mean", "prompt_tokens_uncached_mean", "output_tokens_mean"):
            assert v[key] == pytest.approx(truth[key], rel=1e-9), key
        assert v["confusion"]["matrix"] == truth["confusion"]
        assert v["confusion"]["labels"] == LABELS
        assert v["energy_method"] == "estimated" and v["energy_measured"] is False
        low, high = v["co2_kg_ci95"]
        assert low < v["co2_kg_per_inference"] < high
    base = experiment["truth"]["f16"]
    q4 = next(v for v in data["variants"] if v["variant"] == "q4_0")
    assert q4["co2_change_vs_baseline"] == pytest.approx(
        q4["co2_kg_per_inference"] / base["co2_kg_per_inference"] - 1)
    assert q4["f1_weighted_change_vs_baseline"] == pytest.approx(q4["f1_weighted"] - base["f1_weighted"])
    totals = data["totals"]
    assert totals["energy_kwh"] == pytest.approx(sum(t["energy_kwh_per_inference"] * t["n"]
                                                     for t in experiment["truth"].values()))
    assert totals["workers"] == ["edge-a", "edge-b"] and 0 < totals["worker_hours"] * 3600 <= 2 * totals["wall_s"]


def test_csv_agrees_with_scikit_learn(experiment, report):
    rows = list(csv.DictReader(io.StringIO(report("--format", "csv"))))
    assert [r["variant"] for r in rows] == list(VARIANTS)
    for row in rows:
        truth = experiment["truth"][row["variant"]]
        assert int(row["n"]) == truth["n"] and int(row["n_failed"]) == truth["n_failed"]
        for key in (*SCORES, "energy_kwh_per_inference", "co2_kg_per_inference", "latency_s_mean"):
            assert float(row[key]) == pytest.approx(truth[key], rel=1e-9), key
        for i, true_label in enumerate(LABELS):
            for j, predicted in enumerate(LABELS):
                assert int(row[f"confusion_{true_label}_{predicted}"]) == truth["confusion"][i][j]
        assert row["energy_method"] == "estimated"
        assert float(row["energy_prompt_kwh_per_inference_estimate"]) > 0


def _md_tables(text: str) -> dict[str, list[dict]]:
    """Markdown tables by their bold title: one dict per row, keyed by header."""
    out, title, lines = {}, None, text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("**") and i + 2 < len(lines) and lines[i + 2].startswith("|"):
            title = line.strip("*")
            header = [h.strip() for h in lines[i + 2].strip("|").split("|")]
            out[title] = []
            for row in lines[i + 4:]:
                if not row.startswith("|"):
                    break
                out[title].append(dict(zip(header, (c.strip().replace("\\*", "*") for c in row.strip("|").split("|")))))
    return out


def _value(text: str, unit: str = "") -> float:
    """A number a reader sees, in base units: '0.724' with unit 'mWh', or '257 ms'."""
    number, _, own_unit = text.partition(" ")
    return float(number) * UNIT_FACTORS.get(own_unit or unit, 1.0)


def test_markdown_agrees_with_scikit_learn(experiment, report):
    text = report("--format", "md")
    tables = _md_tables(text)
    quality = next(rows for title, rows in tables.items() if title.startswith("Quality"))
    cost = tables["Cost per inference (mean)"]
    for q, c in zip(quality, cost):
        truth = experiment["truth"][q["variant"].rstrip(MARKS)]
        assert int(q["n"]) == truth["n"] and int(q["fail"]) == truth["n_failed"]
        for header, key in (("acc", "accuracy"), ("P w", "precision_weighted"), ("R w", "recall_weighted"),
                            ("F1 w", "f1_weighted"), ("P mac", "precision_macro"), ("F1 mac", "f1_macro")):
            assert float(q[header]) == pytest.approx(truth[key], abs=SCORE_ABS), header
        energy_col = next(h for h in c if h.startswith("energy "))
        co2_col = next(h for h in c if h.startswith("CO2e ") and "vs" not in h)
        assert _value(c[energy_col], energy_col.split()[1]) == pytest.approx(truth["energy_kwh_per_inference"],
                                                                             rel=SIG3_REL)
        assert _value(c[co2_col], co2_col.split()[1]) == pytest.approx(truth["co2_kg_per_inference"], rel=SIG3_REL)
        assert _value(c["latency"]) == pytest.approx(truth["latency_s_mean"], rel=SIG3_REL)
        assert co2_col.split()[1] in ("mg", "µg")            # never kg printed as 0.000
    for name in VARIANTS:
        matrix = next(rows for title, rows in tables.items() if title.startswith(f"{name}") and "confusion" in title)
        assert [[int(r[p]) for p in LABELS] for r in matrix] == [row[:3] for row in experiment["truth"][name]["confusion"]]
    assert "Energy method 'estimated': estimate, not a measurement" in text


def test_terminal_table_agrees_with_scikit_learn(experiment, report):
    lines = report().splitlines()          # the default: rich tables, 80 columns when piped

    def table_after(title: str) -> tuple[str, dict[str, list[str]]]:
        """(header line, variant -> cells) of the table under the line starting with `title`."""
        start = next(i for i, line in enumerate(lines) if line.startswith(title))
        body = lines[start:lines.index("", start)]
        header = next(line for line in body if line.startswith("variant"))
        return header, {line.split()[0].rstrip(MARKS): line.split() for line in body
                        if line.split() and line.split()[0].rstrip(MARKS) in VARIANTS}
    _, quality = table_after("Quality")
    header, cost = table_after("Cost per inference")
    energy_unit, co2_unit = re.search(r"energy (\S+)", header)[1], re.search(r"CO2e (\S+)", header)[1]
    for name in VARIANTS:
        truth = experiment["truth"][name]
        _, n, fail, unparsed, acc, p, r, f1, *_ = quality[name]
        assert (int(n), int(fail), int(unparsed)) == (truth["n"], truth["n_failed"], truth["n_unparsed"])
        for shown, key in ((acc, "accuracy"), (p, "precision_weighted"), (r, "recall_weighted"), (f1, "f1_weighted")):
            assert float(shown) == pytest.approx(truth[key], abs=SCORE_ABS), key
        _, energy, co2, *_ = cost[name]
        assert _value(energy, energy_unit) == pytest.approx(truth["energy_kwh_per_inference"], rel=SIG3_REL)
        assert _value(co2, co2_unit) == pytest.approx(truth["co2_kg_per_inference"], rel=SIG3_REL)
    text = "\n".join(lines)
    assert "Totals: energy" in text and "worker hours" in text and "kWh" in text and " kg (" in text
    assert "estimate, not a measurement" in text


def test_output_files_and_figures(experiment, report, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert report("--format", "html").strip() == f"wrote report-{experiment['id']}.html (3 figures embedded)"
    assert (tmp_path / f"report-{experiment['id']}.html").stat().st_size > 10_000
    written = report("--format", "png", "--output", "figs").splitlines()
    assert sorted(written) == [f"wrote figs/{n}.png" for n in ("co2_vs_f1", "confusion_matrices", "energy_by_phase")]
    assert all((tmp_path / "figs" / f"{n}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
               for n in ("co2_vs_f1", "confusion_matrices", "energy_by_phase"))
    assert report("--format", "csv", "-o", "out/r.csv").strip() == "wrote out/r.csv"
    assert (tmp_path / "out" / "r.csv").read_text().startswith("experiment_id,")
    report("--format", "table", "-o", "r.txt")
    assert "Cost per inference" in (tmp_path / "r.txt").read_text()


def test_json_carries_intervals_baselines_provenance_and_paired_verdicts(experiment, report):
    from scipy.stats import binomtest
    from sklearn.metrics import f1_score

    from report_fixtures import stored_rows

    data = json.loads(report("--format", "json"))
    stats = data["statistics"]
    assert "stratified" in stats["quality_interval"] and stats["n_boot"] >= 1000 and stats["level"] == 0.95
    by_name = {v["variant"]: v for v in data["variants"]}
    for v in data["variants"]:
        for key in SCORES:
            low, high = v[f"{key}_ci95"]
            assert low <= v[key] <= high and high - low > 0.05, key   # 28 samples: never a point
        assert v["constant_answer"] is False
    # The demo model's file is 4-bit q4_1: f16 and q8_0 are upcast from it, q4_0 re-quantized.
    assert (by_name["f16"]["weights_from"], by_name["f16"]["upcast"]) == ("q4_1", True)
    assert (by_name["q4_0"]["upcast"], by_name["q4_0"]["weights_origin"]) == (False, "requantized")
    # Baselines on the same samples, from scikit-learn.
    rows = stored_rows(experiment["url"], experiment["id"])
    y = [r["label"] for r in rows["f16"]]
    majority = data["baselines"]["majority"]
    assert majority["f1_weighted"] == pytest.approx(f1_score(y, [majority["answer"]] * len(y), labels=LABELS,
                                                             average="weighted", zero_division=0))
    assert data["baselines"]["uniform_random"]["accuracy"] == pytest.approx(1 / 3, abs=0.02)
    # Paired with f16 on the same 28 samples (the failed tasks are the same samples in every variant).
    assert by_name["f16"]["vs_baseline"] is None
    for name in ("q8_0", "q4_0"):
        comp = by_name[name]["vs_baseline"]
        truth, base = experiment["truth"][name], experiment["truth"]["f16"]
        assert comp["baseline"] == "f16" and comp["n_paired"] == 28
        assert comp["f1_macro_delta"] == pytest.approx(truth["f1_macro"] - base["f1_macro"])
        low, high = comp["f1_macro_delta_ci95"]
        assert low <= comp["f1_macro_delta"] <= high
        right_a = [r["prediction"] == r["label"] for r in rows["f16"]]
        right_b = [r["prediction"] == r["label"] for r in rows[name]]
        only_a = sum(a and not b for a, b in zip(right_a, right_b))
        only_b = sum(b and not a for a, b in zip(right_a, right_b))
        expected_p = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
        assert comp["mcnemar"]["pvalue"] == pytest.approx(expected_p)
        ratio = truth["energy_kwh_per_inference"] / base["energy_kwh_per_inference"]
        assert comp["energy_ratio"] == pytest.approx(ratio)
        assert comp["energy_ratio_ci95"][0] <= ratio <= comp["energy_ratio_ci95"][1]
    verdicts = " ".join(data["verdicts"])
    assert "estimated energy, driven by time" in verdicts
    assert "effect of re-quantizing the q4_1 weights to q4_0" in verdicts
    assert "16-bit vs 4-bit" not in verdicts


def test_every_format_shows_intervals_verdicts_and_provenance(experiment, report, tmp_path):
    rows = list(csv.DictReader(io.StringIO(report("--format", "csv"))))
    data = {v["variant"]: v for v in json.loads(report("--format", "json"))["variants"]}
    for row in rows:
        v = data[row["variant"]]
        assert float(row["f1_macro_ci95_low"]) == pytest.approx(v["f1_macro_ci95"][0])
        assert row["weights_from"] == "q4_1" and row["upcast"] == str(v["upcast"])
    q4 = next(r for r in rows if r["variant"] == "q4_0")
    assert q4["vs_baseline"] == "f16" and float(q4["f1_macro_delta"]) < 0 and "re-quantizing" in q4["verdict"]
    md = report("--format", "md")
    assert "Quality: 95 % intervals (stratified bootstrap over samples)" in md and "## Verdicts" in md
    assert "f16\\*†" in md and "† f16: made from q4_1" in md and "always neutral" in md
    text = " ".join(report().split())
    assert "Verdicts" in text and "Quality: 95 % intervals" in text and "effect of re-quantizing" in text
    report("--format", "html", "-o", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert 'id="verdicts"' in page and 'id="quality-intervals"' in page and "effect of re-quantizing" in page


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(fresh_db_url, monkeypatch):
    """OWASP CSV injection: text starting with = + - @ tab or CR gets a leading quote; numbers stay numbers."""
    from greenctl.report.export import csv_cell
    from report_fixtures import seed_experiment

    assert [csv_cell(x) for x in ("=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "ok", -0.25, None)] == \
        ["'=1+2", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "ok", -0.25, ""]
    name = "=HYPERLINK(\"http://example.com\",\"x\")"
    exp = seed_experiment(fresh_db_url, name=name).experiment_id
    monkeypatch.setenv("GREENCTL_DATABASE_URL", fresh_db_url)
    result = CliRunner().invoke(main, ["report", str(exp), "--format", "csv"], catch_exceptions=False)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["experiment_name"] for r in rows} == {"'" + name}
    assert float(rows[2]["f1_weighted_change_vs_baseline"]) < 0     # a negative number is not quoted
