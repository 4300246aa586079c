"""The report as CSV (for spreadsheets and scripts) and Markdown (for papers and
pull requests). Pure: a report dict in, text out.

CSV keeps full precision in base units, the unit in each column's name, one
row per variant. Markdown shows the same tables as the terminal (tables.py).
"""
from __future__ import annotations

import csv
import io

from greenctl.report import tables

QUALITY = ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted",
           "precision_macro", "recall_macro", "f1_macro")

# Per-variant report keys in CSV column order; the unit is part of each name.
CSV_FIELDS = [
    "model", "variant", "engine", "is_baseline", "status", "n", "n_failed", "n_unparsed",
    "accuracy", "precision_weighted", "recall_weighted", "f1_weighted",
    "precision_macro", "recall_macro", "f1_macro",
    "energy_kwh_per_inference", "energy_kwh_ci95_low", "energy_kwh_ci95_high",
    "co2_kg_per_inference", "co2_kg_ci95_low", "co2_kg_ci95_high",
    "latency_s_mean", "latency_s_ci95_low", "latency_s_ci95_high",
    "prompt_s_mean", "decode_s_mean",
    "prompt_tokens_mean", "prompt_tokens_uncached_mean", "output_tokens_mean",
    "energy_prompt_kwh_per_inference_estimate", "energy_decode_kwh_per_inference_estimate",
    "energy_kwh_total", "co2_kg_total", "energy_method", "energy_measured",
    "carbon_intensity_kg_per_kwh", "pue",
    "co2_change_vs_baseline", "energy_change_vs_baseline",
    "f1_weighted_change_vs_baseline", "f1_macro_change_vs_baseline", "on_pareto_front",
    # issue 12: intervals, flags, provenance, the paired comparison with the baseline (added, never renamed)
    *[f"{m}_ci95_{end}" for m in QUALITY for end in ("low", "high")],
    "dominant_answer", "dominant_answer_share", "constant_answer", "constant_answer_reasons",
    "weights_from", "upcast", "weights_origin",
    "vs_baseline", "n_paired",
    *[f"{m}_delta{part}" for m in ("f1_macro", "f1_weighted") for part in ("", "_ci95_low", "_ci95_high")],
    "f1_macro_verdict", "f1_weighted_verdict", "mcnemar_pvalue",
    *[f"{c}_ratio{part}" for c in ("energy", "co2", "latency") for part in ("", "_ci95_low", "_ci95_high")],
    "verdict",
]
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A value as a CSV cell: None empty, text that a spreadsheet would run as a formula prefixed
    with a quote (OWASP). Numbers are left alone (a negative number is not a formula)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_row(report: dict, v: dict) -> dict:
    split = v.get("energy_split") or {}
    row = {k: v.get(k) for k in CSV_FIELDS}
    for key in ("energy_kwh", "co2_kg", "latency_s"):
        row[f"{key}_ci95_low"], row[f"{key}_ci95_high"] = v[f"{key}_ci95"]
    for m in QUALITY:
        row[f"{m}_ci95_low"], row[f"{m}_ci95_high"] = v.get(f"{m}_ci95") or (None, None)
    row["constant_answer_reasons"] = "; ".join(v.get("constant_answer_reasons") or []) or None
    row["failure_reasons"] = "; ".join(f"{f['tasks']} failed: {f['reason']}" for f in v.get("failures", [])) or None
    comp = v.get("vs_baseline") or {}
    row |= {"vs_baseline": comp.get("baseline"), "n_paired": comp.get("n_paired"),
            "mcnemar_pvalue": (comp.get("mcnemar") or {}).get("pvalue")}
    for m in ("f1_macro", "f1_weighted"):
        row[f"{m}_delta"] = comp.get(f"{m}_delta")
        row[f"{m}_delta_ci95_low"], row[f"{m}_delta_ci95_high"] = comp.get(f"{m}_delta_ci95") or (None, None)
        row[f"{m}_verdict"] = comp.get(f"{m}_verdict")
    for c in ("energy", "co2", "latency"):
        row[f"{c}_ratio"] = comp.get(f"{c}_ratio")
        row[f"{c}_ratio_ci95_low"], row[f"{c}_ratio_ci95_high"] = comp.get(f"{c}_ratio_ci95") or (None, None)
    row["energy_prompt_kwh_per_inference_estimate"] = split.get("prompt_kwh_per_inference")
    row["energy_decode_kwh_per_inference_estimate"] = split.get("decode_kwh_per_inference")
    exp = report["experiment"]
    out = {"experiment_id": exp["id"], "experiment_name": exp["name"], "partial": exp["partial"], **row}
    # Confusion counts, flattened: confusion_<true label>_<predicted label>.
    c = v["confusion"]
    for label, counts in zip(c["labels"], c["matrix"] or [[0] * len(c["columns"])] * len(c["labels"])):
        for col, count in zip(c["columns"], counts):
            out[f"confusion_{label}_{col}"] = count
    return out


def as_csv(report: dict) -> str:
    rows = [csv_row(report, v) for v in report["variants"]]
    fields: list[str] = []
    for row in rows:   # variants may differ in confusion columns (an unparsed answer adds one)
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields or ["experiment_id"], restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(x) for k, x in row.items()})
    return buf.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")


def md_table(spec: tables.TableSpec) -> str:
    lines = [f"**{_md_escape(spec.title)}**", "",
             "| " + " | ".join(_md_escape(c.header) for c in spec.columns) + " |",
             "|" + "|".join(":---" if c.left else "---:" for c in spec.columns) + "|"]
    lines += ["| " + " | ".join(_md_escape(cell.text) for cell in row) + " |" for row in spec.rows]
    legend = [f"{c.header}: {c.help}" for c in spec.columns if c.help]
    if legend:
        lines += ["", _md_escape("; ".join(legend)) + "."]
    return "\n".join(lines)


def as_markdown(report: dict) -> str:
    exp = report["experiment"]
    parts = [f"# Experiment {exp['id']}: {_md_escape(exp['name'])}", "", _md_escape(tables.status_line(report))]
    empty = tables.nothing_yet(report)
    if empty:
        return "\n".join(parts + ["", _md_escape(empty), ""]
                         + [f"- {_md_escape(line)}" for line in tables.failure_notes(report)]) + "\n"
    if exp["partial"]:
        parts += ["", "> **Partial experiment:** only finished tasks are counted; "
                      f"the {tables.not_counted(exp)} tasks are not in these numbers."]
    parts += ["", "## Quality and cost per variant", ""]
    for spec in (tables.quality(report), tables.quality_intervals(report), tables.cost(report),
                 tables.intervals(report), tables.work(report)):
        parts += [md_table(spec), ""]
    if tables.verdicts(report):
        parts += ["## Verdicts (each variant against its baseline, same samples)", ""]
        parts += [f"- {_md_escape(line)}" for line in tables.verdicts(report)]
        parts += ["", md_table(tables.paired_quality(report)), "", md_table(tables.paired_cost(report)), ""]
    measured = [i for i, v in enumerate(report["variants"]) if v["n"]]
    if measured:
        parts += ["## Confusion matrices (rows: true label, columns: predicted)", ""]
        for i in measured:
            parts += [md_table(tables.confusion(report, i)), ""]
    parts += ["## Totals", ""]
    parts += [f"- {what}: {_md_escape(text)}" for what, text, _, _ in tables.totals(report)]
    parts += ["", "## Notes", ""] + [f"- {_md_escape(note)}" for note in tables.notes(report)]
    return "\n".join(parts) + "\n"
