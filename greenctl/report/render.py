"""The report in a terminal (rich tables) and as JSON.

What the tables hold is decided in tables.py, shared with Markdown and HTML;
this module only lays them out.
"""
from __future__ import annotations

import json

from rich import box
from rich.columns import Columns
from rich.console import Console
from rich.table import Table

from greenctl.report import estimate_check, tables, units

# Kept for callers of the first version of this module.
fmt_co2 = units.co2
fmt_energy = units.energy


def rich_table(spec: tables.TableSpec) -> Table:
    t = Table(title=spec.title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              collapse_padding=True)
    for i, col in enumerate(spec.columns):
        # the first column names the row: never truncate it
        t.add_column(col.header, justify="left" if col.left else "right", min_width=len(col.header) if i == 0 else None)
    for row in spec.rows:
        t.add_row(*(cell.text for cell in row))
    return t


def table(report: dict, console: Console | None = None) -> None:
    console = console or Console()
    console.print(tables.status_line(report), style="bold yellow" if report["experiment"]["partial"] else "bold")
    empty = tables.nothing_yet(report)
    if empty:
        console.print(empty, highlight=False)
        for line in tables.failure_notes(report):
            console.print(line, highlight=False)
        return
    for spec in (tables.quality(report), tables.quality_intervals(report), tables.cost(report),
                 tables.intervals(report), tables.work(report)):
        console.print(rich_table(spec))
        console.print()
    if tables.verdicts(report):
        console.print("Verdicts (each variant against its baseline, same samples):", style="bold")
        for line in tables.verdicts(report):
            console.print("- " + line, highlight=False)
        console.print()
        for spec in (tables.paired_quality(report), tables.paired_cost(report)):
            console.print(rich_table(spec))
            console.print()
    measured = [i for i, v in enumerate(report["variants"]) if v["n"]]
    if measured:
        console.print(Columns([rich_table(tables.confusion(report, i)) for i in measured], padding=(1, 3)))
    console.print("Totals: " + "; ".join(f"{what} {text}" for what, text, _, _ in tables.totals(report)))
    for note in tables.notes(report):
        console.print(note, style="yellow" if "estimate" in note else None)
    for line in estimate_check.lines(report):   # estimated vs measured: grades the estimator
        console.print(line, highlight=False)
    if report.get("stop"):
        from shared.sequential import outcome_line
        console.print(outcome_line(report["stop"]))


def as_json(report: dict) -> str:
    return json.dumps(report, indent=2, default=str)
