"""The `greenctl` command: noun groups and verb commands, one file per group."""
from __future__ import annotations

import importlib

import click

# Each module exposes `commands`: a list of click commands/groups to register.
COMMAND_MODULES = [
    "greenctl.cli.experiments",   # submit, status
    "greenctl.cli.demo",          # demo
    "greenctl.cli.reports",       # report, compare, recommend
    "greenctl.cli.workers",       # worker, workers
    "greenctl.cli.doctor",        # doctor
    "greenctl.cli.models",        # models list|pull|quantize
    "greenctl.cli.estimator",     # estimate, estimator fit|validate|list
    "greenctl.cli.plan",          # plan
    "greenctl.cli.cluster",       # up, down, ps, scheduler, cancel, resume
    "greenctl.cli.db",            # db roles
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="greenctl")
def main() -> None:
    """Run LLM classification experiments on edge machines and report, per
    inference, what they cost in time, energy and CO2."""


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(_name).commands:
        main.add_command(_command)
