"""Reports: report, compare, recommend. Reading rows and writing files happen
here; what the reports say is decided in greenctl.report."""
from __future__ import annotations

import json
from pathlib import Path

import click

from greenctl.cli import common

FORMATS = ("table", "json", "csv", "md", "html", "png", "table3")


def _build(db: str, experiment_id: int) -> dict:
    from greenctl.report.build import ReportError, build_report

    try:
        return build_report(db, experiment_id)
    except ReportError:
        raise common.unknown_experiment(experiment_id) from None


def _wide_console():
    from rich.console import Console

    console = Console()
    # Piped output has no width: give wide tables room instead of 80 columns.
    return console if console.is_terminal else Console(width=160)


def _write(path: Path, data: str | bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"--output: cannot write {path}: {exc.strerror}") from None


def _text(data: dict, fmt: str) -> str:
    from greenctl.report import export, render

    if fmt == "json":
        return render.as_json(data) + "\n"
    if fmt == "csv":
        return export.as_csv(data)
    if fmt == "md":
        return export.as_markdown(data)
    if fmt == "table3":
        from greenctl.report.table3 import table3
        return table3(data)
    import io

    from rich.console import Console

    buf = io.StringIO()
    render.table(data, Console(file=buf, width=100))   # not a terminal: plain text, no colour codes
    return buf.getvalue()


@click.command()
@click.argument("experiment_id", type=int)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table/json/csv/md print to stdout (or --output); html writes one self-contained file, "
                   "png a directory of figures.")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Where to write: a file (html default: report-ID.html here), or a directory for png "
                   "(default: report-ID-figures).")
def report(experiment_id: int, fmt: str, output: Path | None) -> None:
    """Accuracy, precision/recall/F1, energy and CO2 per inference, per variant (finished tasks only)."""
    from greenctl.report import figures, html_page, render

    data = _build(common.database_url(), experiment_id)
    if fmt == "html":
        path = output or Path(f"report-{experiment_id}.html")
        pngs = figures.all_figures(data)
        _write(path, html_page.page(data, pngs))
        click.echo(f"wrote {path} ({len(pngs)} figures embedded)")
    elif fmt == "png":
        folder = output or Path(f"report-{experiment_id}-figures")
        for name, png in figures.all_figures(data).items():
            _write(folder / f"{name}.png", png)
            click.echo(f"wrote {folder / f'{name}.png'}")
    elif output is not None:
        _write(output, _text(data, fmt))
        click.echo(f"wrote {output}")
    elif fmt == "table":
        render.table(data)
    else:
        click.echo(_text(data, fmt), nl=False)


@click.command()
@click.argument("experiment_ids", type=int, nargs=-1, required=True)
@click.option("--baseline-host", metavar="HOST",
              help="One experiment across hosts: the host the others are compared with (default: the first "
                   "by name).")
@click.option("--baseline", "baseline_exp", type=int, metavar="EXP",
              help="Several experiments: the one each other experiment's run is paired with (default: "
                   "the first given).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--wide", **common.WIDE_OPTION)
def compare(experiment_ids: tuple[int, ...], baseline_host: str | None, baseline_exp: int | None, as_json: bool,
            wide: bool) -> None:
    """The same model and variant across experiments (or machines) side by side. Several
    experiments of the same samples (one spec submitted once per host): each run against the
    first experiment's (or --baseline), paired on the samples both ran, as a verdict, with the
    machine of each run. With one experiment whose results came from several hosts: per variant
    and host, F1 with its interval, latency, energy (method, measured share) and CPU model, and
    each host against the first (or --baseline-host), paired on the samples both ran."""
    from greenctl import queries
    from greenctl.report import compare as comparing

    if baseline_host is not None and len(experiment_ids) != 1:
        raise common.BadInput("--baseline-host: compares the hosts of one experiment: give one EXPERIMENT_ID, "
                              "or drop --baseline-host")
    if baseline_exp is not None and baseline_exp not in experiment_ids:
        raise common.BadInput(f"--baseline: {baseline_exp} is not one of the experiments given "
                              f"({', '.join(map(str, experiment_ids))}): use one of them")
    if baseline_exp is not None and len(set(experiment_ids)) < 2:
        raise common.BadInput("--baseline: pairs several experiments: give two or more EXPERIMENT_IDs "
                              "(for the hosts of one experiment: --baseline-host)")
    db = common.database_url()
    reports = [_build(db, i) for i in experiment_ids]
    rows = {i: queries.host_rows(db, i) for i in experiment_ids}
    data = comparing.comparison(reports, rows)
    data["by_host"] = data["by_experiment"] = None
    if len(set(experiment_ids)) > 1:
        data["by_experiment"] = comparing.experiment_comparison(
            reports, rows, {i: queries.sample_texts(db, i) for i in set(experiment_ids)}, queries.cpu_models(db),
            baseline_exp)
    if len(experiment_ids) == 1:
        present = comparing.hosts_in(rows[experiment_ids[0]])
        if baseline_host is not None and baseline_host not in present:
            raise common.BadInput(f"--baseline-host: no result of experiment {experiment_ids[0]} came from "
                                  f"{baseline_host!r}: use one of {', '.join(present) or '(no host yet)'}")
        if len(present) > 1:
            data["by_host"] = comparing.host_comparison(reports[0], rows[experiment_ids[0]],
                                                        queries.cpu_models(db), baseline_host)
    if as_json:
        click.echo(json.dumps(data, default=str))
        return
    console = common.table_console(wide)
    hosts = data["by_host"]
    missing = comparing.not_run(data)
    if hosts is not None:
        console.print(comparing.host_table(hosts, wide))
        if wide:
            console.print(comparing.versus_table(hosts))
        for line in comparing.cpu_lines(hosts):
            console.print(line, highlight=False)
        console.print(f"Same model on different machines (vs {hosts['baseline_host']}; "
                      f"{hosts['pairing']}):", highlight=False)
        for line in comparing.verdict_lines(hosts):
            console.print(f"  {line}", highlight=False)
        if not wide:
            console.print("95 %: the F1's interval; * no better than a constant answer; meas.: share of the "
                          "energy read from a power meter; `--wide` shows every paired figure with its interval, "
                          "CO2e, macro F1 and the CPU per row.", highlight=False)
        if missing:
            console.print(f"No finished task in this experiment: {', '.join(missing)}", highlight=False)
        return
    console.print(comparing.table(data, wide))
    if not wide:
        console.print("exp: experiment id (* partial); vs 1st: CO2e change vs the variant's first row; "
                      "`--wide` shows accuracy, macro F1, energy, the energy method and every paired "
                      "figure with its interval.", highlight=False)
    runs = data["by_experiment"]
    if runs is not None:
        if wide and runs["variants"]:
            console.print(comparing.versus_table(runs, "versus_baseline", "experiment"))
        for line in comparing.machine_lines(runs):
            console.print(line, highlight=False)
        if runs["variants"]:
            console.print(f"Same model on different machines (each run vs exp {runs['baseline_experiment']}, "
                          "paired on the samples both ran):", highlight=False)
        else:
            console.print("No variant ran in two of these experiments: nothing to pair.", highlight=False)
        for line in comparing.verdict_lines(runs, "versus_baseline"):
            console.print(f"  {line}", highlight=False)
    if len(experiment_ids) == 1 and len(present) == 1:
        console.print(f"All results came from one host ({present[0]}): nothing to compare across hosts.",
                      highlight=False)
    if missing:
        console.print(f"No finished task in these experiments: {', '.join(missing)}", highlight=False)


@click.command()
@click.argument("experiment_id", type=int)
@click.option("--min-f1", type=click.FloatRange(0.0, 1.0), required=True, help="The F1 a variant must reach, e.g. 0.6.")
@click.option("--metric", type=click.Choice(["f1_weighted", "f1_macro"]), default="f1_weighted", show_default=True,
              help="Which F1 the floor applies to.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def recommend(experiment_id: int, min_f1: float, metric: str, as_json: bool) -> None:
    """The variant with the least CO2 per inference whose F1 meets --min-f1 (measured rows;
    the estimator's CO2 for variants not measured yet, labelled as such)."""
    from greenctl.report import estimates, recommend as ranking

    db = common.database_url()
    data = _build(db, experiment_id)
    result = ranking.recommend(data, estimates.estimate_unmeasured(db, data), metric, min_f1)
    if as_json:
        click.echo(json.dumps(result, default=str))
        return
    console = _wide_console()
    for line in ranking.verdict_lines(result):
        console.print(line, highlight=False)
    console.print(ranking.table(result))


commands = [report, compare, recommend]
