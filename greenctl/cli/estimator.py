"""Estimate before inference: `estimate`, and `estimator fit|validate|list`."""
from __future__ import annotations

import json

import click

from greenctl.cli import common

from estimator.hardware import PROFILES as GPU_PROFILES   # light: formulas only, no fitting libraries


def _db_url() -> str:
    return common.database_url()


def _resolve_model(model: str | None, params: float | None, layers: int | None) -> tuple[str, float, int | None]:
    from estimator import datasets

    if (model is None) == (params is None):
        raise common.BadInput("--model/--params: give exactly one of --model NAME or --params COUNT (e.g. --params 7e9)")
    if params is not None:
        return f"{params:.3g} parameters", params, layers
    name = datasets.card_name(model)      # a card's name, or an Ollama tag it answers to
    if name is None:
        raise common.BadInput(f"--model: unknown model {model!r}; pass --params COUNT instead "
                                   f"(see `greenctl estimator list --models`)")
    card = datasets.model_cards().loc[name]
    return (model if model == name else f"{model} ({name})"), float(card["params"]), layers or int(card["layers"])


def _gpu_fit() -> tuple[dict, str]:
    """The stored HELM fit when the database has one, else a fresh fit of the bundled data."""
    from estimator import estimate as est, reproduce, store

    # A stored fit only from a database the user configured: a GPU estimate starts no server.
    url = common.settings().database_url
    try:
        row = store.latest_fit(url, est.FIT_PROFILE, est.LATENCY) if url else None
    except Exception:  # an unreachable database: the bundled data still answers
        row = None
    if row:
        return row["model"], f"{row['hardware_profile']}/{row['target']} v{row['version']} ({row['kind']}, stored)"
    return reproduce.fit_helm(), "bundled HELM fit (not stored; `greenctl estimator fit` stores it)"


@click.command()
@click.option("--model", help="Model name with a known parameter count, e.g. facebook/opt-6.7b.")
@click.option("--params", type=click.FloatRange(min=1e6), help="Parameter count, e.g. 7e9.")
@click.option("--bits", type=click.FloatRange(1, 32), default=16.0, show_default=True,
              help="Bits per weight (4 for a 4-bit quantization, 32 for fp32).")
@click.option("--prompt-tokens", type=click.IntRange(1), required=True, help="Prompt tokens (uncached).")
@click.option("--output-tokens", type=click.IntRange(1), required=True, help="Generated tokens.")
@click.option("--hardware", "profile", default="a100-helm", show_default=True,
              help="a100-helm, a100-llm-perf, or a worker's hardware profile refitted from measurements.")
@click.option("--devices", type=click.IntRange(1), help="Accelerators serving the model (default: fewest that hold it).")
@click.option("--layers", type=click.IntRange(1), help="Transformer layers (default: model card, else from params).")
@click.option("--threads", type=click.IntRange(1), help="CPU threads, for measured profiles (default: most seen).")
@click.option("--pue", type=click.FloatRange(1.0, 3.0), help="Data-centre PUE (default: the profile's; 1 for measured).")
@click.option("--utilization", type=click.FloatRange(0.01, 1.0), help="GPU utilization, fraction of TDP (default 0.26).")
@click.option("--carbon-intensity", type=click.FloatRange(0.0, 2.0), default=0.475, show_default=True,
              help="Grid carbon intensity, kg CO2e per kWh.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def estimate(model, params, bits, prompt_tokens, output_tokens, profile, devices, layers, threads,
             pue, utilization, carbon_intensity, as_json) -> None:
    """Estimate one request's latency (s), energy (kWh) and CO2 (kg) before running it."""
    from estimator import estimate as est, hardware, store

    name, n_params, n_layers = _resolve_model(model, params, layers)
    req = est.Request(params=n_params, bits=bits, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                      layers=n_layers, devices=devices, threads=threads)
    if profile in hardware.PROFILES:
        fit_json, fit_used = _gpu_fit()
        prof = hardware.PROFILES[profile].with_overrides(pue=pue, utilization=utilization)
        result = est.gpu(fit_json, prof, req, carbon_intensity=carbon_intensity)
    else:
        url = _db_url()
        latency_fit = store.latest_fit(url, profile, est.LATENCY)
        if latency_fit is None:
            raise common.BadInput(
                f"--hardware: no fit for profile {profile!r}; use {' or '.join(GPU_PROFILES)}, or run "
                f"`greenctl estimator fit --hardware {profile}` after an experiment on that machine")
        energy_fit = store.latest_fit(url, profile, est.ENERGY)
        result = est.measured(latency_fit["model"], energy_fit["model"] if energy_fit else None, req,
                              pue=pue or 1.0, carbon_intensity=carbon_intensity)
        fit_used = f"{profile}/latency_s v{latency_fit['version']}" + (
            f", energy_kwh v{energy_fit['version']}" if energy_fit else ", no energy fit") + " (measurements)"
    payload = {"model": name, "params": n_params, "bits": bits, "prompt_tokens": prompt_tokens,
               "output_tokens": output_tokens, "hardware": profile, "fit": fit_used,
               "carbon_intensity_kg_per_kwh": carbon_intensity, "interval": "80 %", **result}
    if as_json:
        click.echo(json.dumps(payload))
        return
    _print_estimate(payload)


def _fmt(triple: dict | None, unit: str, digits: str = ".3g") -> str:
    if triple is None:
        return "unknown (no energy fit for this profile)"
    return (f"{triple['value']:{digits}} {unit}   (80 %: {triple['low']:{digits}} – "
            f"{triple['high']:{digits}})")


def _print_estimate(p: dict) -> None:
    click.echo(f"{p['model']} · {p['bits']:g} bits · prompt {p['prompt_tokens']} · output "
               f"{p['output_tokens']} · hardware {p['hardware']}")
    click.echo(f"  latency  {_fmt(p['latency_s'], 's')}")
    click.echo(f"  energy   {_fmt(p['energy_kwh'], 'kWh')}")
    click.echo(f"  CO2      {_fmt(p['co2_kg'], 'kg')}   at {p['carbon_intensity_kg_per_kwh']:g} kg/kWh")
    click.echo(f"  fit      {p['fit']}")
    extrapolating = p["detail"].get("extrapolating")
    if extrapolating:
        click.echo(f"  note     outside the measured range of: {', '.join(extrapolating)}")


@click.group()
def estimator() -> None:
    """Fit, validate and list the latency/energy estimator (R-ICE reproduced and improved)."""


@estimator.command()
@click.option("--hardware", "profile", default="a100-helm", show_default=True,
              help="a100-helm fits on the bundled HELM data; a worker's profile refits from its measurements.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def fit(profile, as_json) -> None:
    """Fit the estimator for a hardware profile and store it as the next version."""
    from estimator import estimate as est, hardware, reproduce, store

    url = common.database_url(start=True)     # a fit is stored: the one estimator command that writes
    if profile in hardware.PROFILES:
        fit_json = reproduce.fit_helm()
        metrics = {"mape": fit_json["interval"]["e2e_mape"],
                   "basis": "e2e latency, leave-one-Megatron-profile-out on HELM",
                   "per_token_mape": fit_json["cv"]["per_token_mape"][fit_json["cv"]["selected"]["per_token"]],
                   "prompt_encoding_mape": fit_json["cv"]["prompt_encoding_mape"][fit_json["cv"]["selected"]["prompt_encoding"]],
                   "llm_perf_validation_mape": reproduce.validate_physical(fit_json)}
        saved = store.save_fit(url, hardware_profile=est.FIT_PROFILE, target=est.LATENCY, kind=fit_json["kind"],
                               model=fit_json, features=[f"{part}:{name}" for part in ("per_token", "prompt_encoding")
                                                         for name in fit_json[part]["features"]],
                               n_train=fit_json["n_train"]["prompt_rows"] + fit_json["n_train"]["models"],
                               metrics=metrics, source="helm-a100")
        summary = {"hardware_profile": est.FIT_PROFILE, "status": "fitted",
                   "fits": {est.LATENCY: {"status": "stored", "version": saved["version"], "metrics": metrics}}}
    else:
        from estimator.tasks import refit

        summary = refit(profile, url, force=True)
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{summary['hardware_profile']}: {summary['status']}")
    for target, info in summary["fits"].items():
        if info["status"] == "stored":
            click.echo(f"  {target} v{info['version']}: held-out MAPE {info['metrics']['mape']:.1%}")
        else:
            click.echo(f"  {target}: {info['status']} ({info.get('detail', '')})")


@estimator.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--wide", **common.WIDE_OPTION)
def validate(as_json, wide) -> None:
    """Score the paper's R-ICE and the improved estimator on LLM-Perf A100 (MAPE per model and overall)."""
    from estimator import reproduce

    report = reproduce.run_validation()
    if as_json:
        click.echo(json.dumps(report))
        return
    _print_validation(report, wide)


@estimator.command(name="list")
@click.option("--hardware", "profile", help="Only this hardware profile.")
@click.option("--models", "show_models", is_flag=True, help="List the model names --model accepts instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("--wide", **common.WIDE_OPTION)
def list_(profile, show_models, as_json, wide) -> None:
    """Stored fits: version, training size, held-out MAPE and whether it is in use."""
    if show_models:
        from estimator import datasets

        cards = datasets.model_cards().reset_index()[["model", "params", "layers", "aliases"]].to_dict("records")
        click.echo(json.dumps({"models": cards}) if as_json else "\n".join(
            f"{c['model']:40s} {c['params']:.3g} params, {c['layers']} layers"
            + (f"; Ollama {', '.join(c['aliases'].split())}" if c["aliases"] else "") for c in cards))
        return
    from estimator import store

    url = _db_url()
    fits = store.list_fits(url, profile)
    live = store.live_accuracy(url)     # on rows each fit estimated before they ran (never trained on)
    for f in fits:
        f.pop("model")
        f["live"] = live.get(f["id"])
    if as_json:
        click.echo(json.dumps({"fits": fits}))
        return
    _print_fits(fits, wide)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _print_validation(r: dict, wide: bool = False) -> None:
    from rich import box
    from rich.table import Table

    console = common.table_console(wide)
    proto = r["protocol"]
    t = Table(title=f"MAPE on {proto['validation']} ({proto['rows']} rows, {proto['models']} models; "
                    f"{proto['prompt_tokens']}-token prompt, {proto['output_tokens']} new tokens); "
                    "R-ICE: the paper's estimator, ours: the improved one",
              title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True)
    columns = ["model"] + (["params", "rows"] if wide else []) + ["lat R-ICE", "lat ours", "kWh R-ICE", "kWh ours"]
    for col in columns:
        t.add_column(col, justify="left" if col == "model" else "right", overflow="fold")

    def row(name, params, rows, *cells, **style):
        t.add_row(name, *([params, rows] if wide else []), *cells, **style)

    paper = r["paper_reproduction"]["per_model"]
    for model, m in r["per_model"].items():
        p = paper[model]
        row(model, f"{m['params']:.3g}", str(m["rows"]), _pct(p["latency_s"]), _pct(m["latency_s"]),
            _pct(p["energy_kwh"]), _pct(m["energy_kwh"]))
    t.add_section()
    pr, im, rep = r["paper_reproduction"]["mape"], r["mape"], r["paper_reported"]
    row("overall", "", str(proto["rows"]), _pct(pr["latency_s"]), _pct(im["latency_s"]),
        _pct(pr["energy_kwh"]), _pct(im["energy_kwh"]), style="bold")
    row("paper reported (Table IV)", "", "46", _pct(rep["latency_s"]), "", _pct(rep["energy_kwh"]), "")
    console.print(t)
    a = Table(title="ablations (all fitted on HELM only)", title_justify="left", box=box.SIMPLE_HEAD,
              collapse_padding=True)
    for col in ("estimator", "layers", "devices", "energy accounting", "latency", "energy"):
        a.add_column(col, overflow="fold")
    for row in r["ablations"]:
        a.add_row(row["estimator"], row["layers"], row["devices"], row["accounting"],
                  _pct(row["mape"]["latency_s"]), _pct(row["mape"]["energy_kwh"]))
    console.print(a)
    cov = r["interval_coverage"]
    console.print(f"improved = {r['estimator']['name']}: layers from {r['estimator']['layers']}, devices "
                  f"{r['estimator']['devices']}, accounting {r['estimator']['accounting']}; 80 % interval "
                  f"covers {cov['observed']:.0%} of rows. Without the MoE model: latency "
                  f"{_pct(r['dense_only']['physical']['latency_s'])}, energy "
                  f"{_pct(r['dense_only']['physical']['energy_kwh'])}.")


def _print_fits(fits: list[dict], wide: bool = False) -> None:
    from rich import box
    from rich.table import Table

    in_use = {}
    for f in fits:   # newest first per (profile, target)
        if f["is_good"]:
            in_use.setdefault((f["hardware_profile"], f["target"]), f["id"])
    t = Table(title="estimator fits (MAPE held out at fit time; live: on rows it estimated before they ran; "
                    "* in use; UTC)", title_justify="left", box=box.SIMPLE_HEAD,
              collapse_padding=True)
    # At 80 columns the fit's kind gives way to its live accuracy (--wide shows both).
    columns = ["profile", "target", "v"] + (["kind"] if wide else []) + \
        ["train", "test", "MAPE", "live", "good", "use"] + (["live cover", "source", "created"] if wide else ["created"])
    for col in columns:
        t.add_column(col, overflow="fold",
                     justify="right" if col in ("v", "train", "test", "MAPE", "live", "live cover") else "left")
    for f in fits:
        live = f.get("live")
        t.add_row(f["hardware_profile"], f["target"], str(f["version"]), *([f["kind"]] if wide else []),
                  str(f["n_train"]),
                  str(f["n_test"]), _pct(f["metrics"].get("mape")),
                  f"{_pct(live['mape'])} n={live['rows']}" if live else "–", "yes" if f["is_good"] else "no",
                  "*" if in_use.get((f["hardware_profile"], f["target"])) == f["id"] else "",
                  *([f"{live['coverage']:.0%}" if live else "–"] if wide else []),
                  *([f["source"]] if wide else []), common.short_time(f["created_at"]))
    if not fits:
        common.table_console(wide).print("no fits stored yet: `greenctl estimator fit` stores the HELM fit")
        return
    common.table_console(wide).print(t)


commands = [estimate, estimator]
