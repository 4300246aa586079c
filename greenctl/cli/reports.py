"""Reports: report (compare and recommend to come)."""
from __future__ import annotations

import click

from greenctl.cli import common


@click.command()
@click.argument("experiment_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def report(experiment_id: int, fmt: str) -> None:
    """Accuracy, precision/recall/F1, energy and CO2 per inference, per variant."""
    from greenctl.report import render
    from greenctl.report.build import ReportError, build_report

    db = common.database_url()
    try:
        data = build_report(db, experiment_id)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "json":
        click.echo(render.as_json(data))
    else:
        render.table(data)


commands = [report]
