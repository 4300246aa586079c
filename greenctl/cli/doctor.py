"""`greenctl doctor`: what this machine's energy figures will be, and how to make them better."""
from __future__ import annotations

import json

import click

from greenctl.cli import common


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def doctor(as_json: bool) -> None:
    """Energy method per component (CPU, RAM, GPU) and why, what would make it better,
    CPU model, governor/turbo, other workers on this host, VM or not."""
    from worker import doctor as probes

    settings = common.settings()
    plan = probes.plan(probes.probe(cpu_watts=settings.cpu_watts, ram_watts=settings.ram_watts,
                                    exclude_ram=settings.exclude_ram))
    if as_json:
        click.echo(json.dumps(plan))
        return
    click.echo("\n".join(probes.summary_lines(plan)))


commands = [doctor]
