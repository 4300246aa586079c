"""The report as one self-contained HTML file: figures embedded as base64 PNG,
no script, no external resource, so it opens offline and mails as one file.

Every number cell carries the report key and raw value it was printed from
(data-variant, data-key, data-value) and every unit column its unit
(data-unit): a reader sees rounded numbers, a checker compares them with the
JSON, which is embedded too (script type="application/json", never executed).
Pure: report and PNG bytes in, text out.
"""
from __future__ import annotations

import base64
import html
import json

from greenctl.report import tables

FIGURE_CAPTIONS = {
    "co2_vs_f1": "CO2e per inference against weighted F1, one point per variant, with 95 % intervals on both "
                 "axes; filled points are on the Pareto front (no other variant has both less CO2e and a higher "
                 "F1); the dotted and dash-dot lines are the F1 of always answering the majority label and of a "
                 "uniform random answer.",
    "energy_by_phase": "Energy per inference; the split into prompt and decode is an estimate, in proportion "
                       "to each task's prompt and decode time.",
    "confusion_matrices": "Confusion matrices: rows are true labels, columns predicted ones; "
                          "'no label' counts answers that named none.",
}

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.partial { background: #fff3cd; border: 1px solid #e0b000; padding: .6rem .9rem; border-radius: 4px; }
table { border-collapse: collapse; margin: .4rem 0 1.2rem; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #ddd; }
th { background: #f3f5f3; } td.num, th.num { text-align: right; }
th[title] { text-decoration: underline dotted; cursor: help; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
.notes li { margin: .2rem 0; } .estimate { color: #8a5a00; }
dl.totals { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dl.totals dt { font-weight: 600; }
.matrices { display: flex; flex-wrap: wrap; gap: 0 2rem; }
"""


def _attr(value) -> str:
    return html.escape(str(value), quote=True)


def table_html(spec: tables.TableSpec, table_id: str) -> str:
    head = "".join(
        f'<th class="{"" if c.left else "num"}" data-unit="{_attr(c.unit)}"'
        + (f' title="{_attr(c.help)}"' if c.help else "") + f">{html.escape(c.header)}</th>"
        for c in spec.columns)
    body = []
    for row, variant in zip(spec.rows, spec.row_variants):
        cells = []
        for col, cell in zip(spec.columns, row):
            data = "" if cell.key is None else (
                f' data-variant="{variant}" data-key="{_attr(cell.key)}" data-value="{_attr(json.dumps(cell.value))}"')
            cells.append(f'<td class="{"" if col.left else "num"}"{data}>{html.escape(cell.text)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table id="{table_id}"><caption>{html.escape(spec.title)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def figure_html(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    caption = FIGURE_CAPTIONS.get(name, name)
    return (f'<figure id="figure-{name}"><img alt="{_attr(caption)}" data-figure="{name}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _json_script(report: dict) -> str:
    # "</" would end the script element early; JSON allows "<\/" for it.
    text = json.dumps(report, default=str).replace("</", "<\\/")
    return f'<script type="application/json" id="report-json">{text}</script>'


def page(report: dict, figures: dict[str, bytes]) -> str:
    exp = report["experiment"]
    parts = [f"<h1>Experiment {exp['id']}: {html.escape(exp['name'])}</h1>",
             f'<p class="status" id="status">{html.escape(tables.status_line(report))}</p>']
    empty = tables.nothing_yet(report)
    if empty:
        parts.append(f'<p class="partial" id="nothing-yet">{html.escape(empty)}</p><ul id="failures">')
        parts += [f"<li>{html.escape(line)}</li>" for line in tables.failure_notes(report)]
        parts += ["</ul>", _json_script(report)]
        return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
                f"greenctl report: experiment {exp['id']}</title><style>{STYLE}</style></head>\n<body>\n"
                + "\n".join(parts) + "\n</body></html>\n")
    if exp["partial"]:
        parts.append(f'<p class="partial" id="partial">Partial experiment: only finished tasks are counted; '
                     f"the {html.escape(tables.not_counted(exp))} tasks are not in these numbers.</p>")
    estimates = {m: note for m, note in report.get("energy_methods", {}).items() if note.startswith("estimate")}
    if estimates:   # energy honesty: say it before the first number
        parts.append('<p class="estimate" id="energy-note">Energy: '
                     + html.escape("; ".join(f"'{m}' is an {note}" for m, note in estimates.items())) + ".</p>")
    if "co2_vs_f1" in figures:
        parts += ["<h2>CO2e per inference vs F1</h2>", figure_html("co2_vs_f1", figures["co2_vs_f1"])]
    if tables.verdicts(report):
        parts.append('<h2>Verdicts</h2><ul class="verdicts" id="verdicts">')
        parts += [f"<li>{html.escape(line)}</li>" for line in tables.verdicts(report)]
        parts.append("</ul>")
        parts.append(table_html(tables.paired_quality(report), "paired-quality"))
        parts.append(table_html(tables.paired_cost(report), "paired-cost"))
    parts.append("<h2>Quality and cost per variant</h2>")
    for table_id, spec in (("quality", tables.quality(report)),
                           ("quality-intervals", tables.quality_intervals(report)), ("cost", tables.cost(report)),
                           ("intervals", tables.intervals(report)), ("work", tables.work(report))):
        parts.append(table_html(spec, table_id))
    if "energy_by_phase" in figures:
        parts += ["<h2>Energy per inference by phase</h2>", figure_html("energy_by_phase", figures["energy_by_phase"])]
    measured = [i for i, v in enumerate(report["variants"]) if v["n"]]
    if measured:
        parts.append("<h2>Confusion matrices</h2>")
        if "confusion_matrices" in figures:
            parts.append(figure_html("confusion_matrices", figures["confusion_matrices"]))
        parts += ['<div class="matrices">'] + [table_html(tables.confusion(report, i), f"confusion-{i}")
                                               for i in measured] + ["</div>"]
    parts.append('<h2>Totals</h2><dl class="totals" id="totals">')
    parts += [f'<dt>{html.escape(what)}</dt><dd data-key="totals.{key}" data-value="{_attr(json.dumps(value))}">'
              f"{html.escape(text)}</dd>" for what, text, key, value in tables.totals(report)]
    parts.append('</dl><h2>Notes</h2><ul class="notes" id="notes">')
    parts += [f'<li class="{"estimate" if "estimate" in n else ""}">{html.escape(n)}</li>' for n in tables.notes(report)]
    parts += ["</ul>", f'<p><small>Generated {html.escape(report.get("generated_at", ""))} by greenctl '
                       f'from the stored rows of experiment {exp["id"]}.</small></p>', _json_script(report)]
    title = f"greenctl report: experiment {exp['id']} {exp['name']}"
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")
