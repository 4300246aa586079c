"""`greenctl plan FILE`: what an experiment will cost, before it runs (also `submit --dry-run`).

Validates exactly like submit (the same spec and dataset checks, exit 2 on bad
input) and then writes and sends nothing, and starts no server: the database is
read only if it is configured or its embedded server already runs. Each figure
names the fit it comes from: a hardware profile's local fit (trained on its own
measurements) or the HELM prior, which is not calibrated for this machine.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from greenctl.cli import common
from greenctl.cli.common import BadInput

PRIOR_LABEL = "HELM prior (A100, Megatron-LM fp16): not calibrated for this machine"
UNMEASURED_NOTE = ("{variant} ({bits:.2g} bits per weight) was never measured on this machine: the fit interpolates "
                   "between the bits it measured, but CPU speed follows each quantization type's kernel (llama.cpp "
                   "repacks some types, such as q4_0 and q8_0, for its SIMD kernels, not others), so expect an "
                   "error well above the held-out one (bench/RESULTS.md, A2b: 54 % for q4_1); run a few samples "
                   "of it first to calibrate")


def _database() -> tuple[str | None, str | None]:
    """(URL, None) of a database that is configured or already running, else (None, why not)."""
    try:
        db, _ = common.urls(need_broker=False, start=False)
    except click.ClickException as exc:
        return None, exc.format_message()
    return db, None


def _read(db: str, what, *args, default):
    """A read from Postgres; `default` (and no exception) when it is unreachable or unmigrated."""
    try:
        return what(db, *args), None
    except Exception as exc:   # noqa: BLE001 - a plan still answers from the prior
        return default, str(exc).splitlines()[0]


def _machines(db: str | None, heartbeat_s: float) -> tuple[dict[str, list[str]], dict[str, list[str]], str | None]:
    """(queue -> online workers' hardware profiles, queue -> every registered worker's profiles, problem)."""
    if db is None:
        return {}, {}, None
    from greenctl import queries

    online, problem = _read(db, queries.online_workers, 4 * heartbeat_s, default={})
    nodes, problem2 = _read(db, queries.worker_nodes, default=[])
    profile = {(n.queue, n.hostname): n.hardware_profile for n in nodes}
    on = {q: [profile.get((q, h), "") for h in hosts] for q, hosts in online.items()}
    every: dict[str, list[str]] = {}
    for n in nodes:
        every.setdefault(n.queue, []).append(n.hardware_profile)
    return on, every, problem or problem2


def _local_fit(db: str | None, profiles: list[str]) -> tuple[str, dict, dict | None] | None:
    """(profile, latency fit row, energy fit row) of the most common profile that has a good fit."""
    if db is None:
        return None
    from estimator import estimate as est, store

    for profile in sorted(set(profiles), key=lambda p: -profiles.count(p)):
        if not profile:
            continue
        lat, _ = _read(db, store.latest_fit, profile, est.LATENCY, default=None)
        if lat is not None:
            energy, _ = _read(db, store.latest_fit, profile, est.ENERGY, default=None)
            return profile, lat, energy
    return None


def _unused_fits(db: str | None, profiles: list[str]) -> list[str]:
    """Why a profile's own fit is not answering: it exists, but its held-out error is too large."""
    if db is None:
        return []
    from estimator import estimate as est, local, store

    out = []
    for profile in sorted(set(p for p in profiles if p)):
        row, _ = _read(db, store.latest_fit, profile, est.LATENCY, False, default=None)
        if row is not None:
            out.append(f"{profile}'s local fit v{row['version']} is not used: held-out MAPE "
                       f"{row['metrics'].get('mape', float('nan')):.0%} is above {local.GOOD_MAPE:.0%} "
                       "(see `greenctl estimator list`); the HELM prior answers instead")
    return out


def _intensity(carbon) -> tuple[float, str]:
    """(kg CO2e per kWh, where it comes from), as the worker looks it up."""
    from worker.energy import grid_intensity_kg_per_kwh

    try:
        value = grid_intensity_kg_per_kwh(carbon.country_iso_code, carbon.carbon_intensity_g_per_kwh)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    source = ("carbon.carbon_intensity_g_per_kwh" if carbon.carbon_intensity_g_per_kwh is not None
              else f"CodeCarbon's energy mix for {carbon.country_iso_code}")
    return value, source


def _size(card: str | None, info: dict) -> tuple[float | None, int | None]:
    """(parameter count, layers) from the model card, else from what a worker recorded."""
    from estimator import datasets

    if card is not None:
        row = datasets.model_cards().loc[card]
        return float(row["params"]), int(row["layers"])
    count = info.get("parameter_count")
    return (float(count), None) if count else (None, None)


def _prompts(spec, samples, examples) -> list[str]:
    from shared.prompts import build_messages, render_plain

    labels = spec.dataset.labels
    return [render_plain(build_messages(spec.prompt.template, s.text, labels, examples)) for s in samples]


def build_plan(spec, samples, examples) -> dict:
    """The plan as a JSON-able dict; reads fits and workers, writes nothing."""
    import numpy as np

    from estimator import datasets, hardware, plan, reproduce, store
    from shared.prompts import display_label
    from shared.variants import nominal_bits

    s = common.settings()
    db, db_note = _database()
    online, registered, problem = _machines(db, s.heartbeat_seconds)
    intensity, intensity_source = _intensity(spec.carbon)
    prompts = _prompts(spec, samples, examples)
    full = np.array([plan.approx_tokens(p) for p in prompts])
    shared_prefix = plan.common_prefix_tokens(prompts)
    n_tasks_per_variant = len(samples) * spec.repeats
    notes = []
    if db is None:
        notes.append(f"no database to read fits from ({db_note}): every figure is the HELM prior")
    elif problem:
        notes.append(f"database unreadable ({problem}): figures fall back to the HELM prior")
    notes.append(f"prompt tokens approximated as characters / {plan.CHARS_PER_TOKEN:g} (no tokenizer is loaded); "
                 f"mean {full.mean():.0f} per prompt, {shared_prefix} shared by all (cached after a worker's first task)")
    if spec.stop is not None:
        notes.append(f"stop: when decided: totals are for stop.max_samples ({spec.stop.max_samples}); the rule "
                     f"may stop after {spec.stop.min_samples}")
    prior_fit, prior_error = None, None
    variants, queues = [], {}
    for m in spec.models:
        queue = m.queue or spec.placement.queue
        card = datasets.card_name(m.name)
        out_tokens = plan.output_tokens(m.params.max_tokens, [display_label(x) for x in spec.dataset.labels],
                                        spec.prompt.output == "label")
        for v in m.variants:
            row = {"model": m.name, "variant": v, "engine": m.engine, "queue": queue, "tasks": n_tasks_per_variant,
                   "prompt_tokens_mean": float(full.mean()), "output_tokens": out_tokens}
            info = _read(db, store.model_info, m.name, v, default={})[0] if db else {}
            bits = info.get("bits_per_weight") or nominal_bits(v)     # effective when measured before
            bits_source = "effective (recorded by a worker)" if info.get("bits_per_weight") else "nominal"
            params, layers = _size(card, info)
            if params is None or bits is None:
                row.update(status="unavailable", reason=(
                    f"parameter count of {m.name!r} unknown: no model card answers to it and no worker "
                    "has loaded it (see `greenctl estimator list --models`)" if params is None else
                    f"bits per weight of variant {v!r} unknown (not a GGUF quantization name)"))
                variants.append(row)
                queues.setdefault(queue, []).append(row)
                continue
            row.update(card=card, params=params, bits=bits, bits_source=bits_source)
            on_queue = online.get(queue, [])
            chosen = _local_fit(db, on_queue or registered.get(queue, []))
            if chosen is not None:
                profile, lat_fit, energy_fit = chosen
                uncached = np.maximum(full - shared_prefix, 1)
                uncached[:1] = full[:1]
                figures = plan.measured(lat_fit["model"], energy_fit["model"] if energy_fit else None,
                                        params=params, bits=bits, prompt_tokens=full,
                                        prompt_tokens_uncached=uncached,
                                        output_tokens=out_tokens, threads=None, pue=spec.carbon.pue,
                                        carbon_intensity=intensity)
                row["fit"] = {"kind": "local", "hardware_profile": profile, "calibrated": True,
                              "label": f"local fit of {profile} v{lat_fit['version']}, trained on "
                                       f"{lat_fit['n_train']} rows",
                              "held_out_mape": {"latency_s": lat_fit["metrics"].get("mape"),
                                                "energy_kwh": (energy_fit or {}).get("metrics", {}).get("mape")},
                              "held_out_rows": lat_fit["n_test"],
                              "energy_fit": f"v{energy_fit['version']}" if energy_fit else None}
            else:
                for note in _unused_fits(db, on_queue or registered.get(queue, [])):
                    if note not in notes:
                        notes.append(note)
                if prior_fit is None:
                    prior_fit = reproduce.fit_helm()
                    prior_error = reproduce.validate_physical(prior_fit)
                profile = hardware.PROFILES[hardware.DEFAULT_PROFILE].with_overrides(pue=spec.carbon.pue)
                figures = plan.prior(prior_fit, profile, params=params, layers=layers, bits=bits,
                                     prompt_tokens=full, output_tokens=out_tokens, carbon_intensity=intensity)
                row["fit"] = {"kind": "prior", "calibrated": False, "label": PRIOR_LABEL,
                              "held_out_mape": prior_error,
                              "held_out_basis": "unseen models on LLM-Perf 1xA100 (another software stack)"}
            row.update(status="estimated", **figures)
            row["online_workers"] = len(on_queue)
            variants.append(row)
            queues.setdefault(queue, []).append(row)
    return {"experiment": spec.name, "interval": "80 %", "tasks": n_tasks_per_variant * len(variants),
            "carbon_intensity_kg_per_kwh": intensity, "carbon_intensity_source": intensity_source,
            "pue": spec.carbon.pue, "variants": variants, "totals": _totals(queues, online), "notes": notes,
            "writes": "nothing (a plan writes and sends nothing)"}


def _totals(queues: dict[str, list[dict]], online: dict[str, list[str]]) -> dict:
    from estimator import plan

    per_queue = {}
    for queue, rows in queues.items():
        ok = [r for r in rows if r["status"] == "estimated"]
        seconds = plan.add([r["total"]["task_seconds"] for r in ok])
        workers = len(online.get(queue, []))
        per_queue[queue] = {"online_workers": workers, "variants_estimated": len(ok), "variants": len(rows),
                            "wall_s": plan.wall_seconds(seconds, workers) if seconds else None}
    estimated = [r for rows in queues.values() for r in rows if r["status"] == "estimated"]
    complete = len(estimated) == sum(len(rows) for rows in queues.values())
    walls = [q["wall_s"] for q in per_queue.values() if q["wall_s"]]
    return {"complete": complete, "queues": per_queue, "wall_s": plan.longest(walls),
            "energy_kwh": plan.add([r["total"]["energy_kwh"] for r in estimated]),
            "co2_kg": plan.add([r["total"]["co2_kg"] for r in estimated]),
            "excludes": "model loads and downloads"}


def checked_spec(spec_path: Path):
    """The spec, its samples and few-shot examples, checked exactly as submit checks them
    (experiments.read_spec and submit_spec's checks; not imported from there, which imports this)."""
    from scheduler.dataset import load_samples
    from scheduler.spec import SpecError, load_spec
    from scheduler.submit import check_task_count

    limits = common.settings()
    try:
        spec = load_spec(spec_path)
        samples, examples = load_samples(spec.dataset, spec.prompt.few_shot, limits.max_dataset_bytes)
        check_task_count(len(samples), spec, limits.max_tasks)
    except SpecError as exc:
        raise BadInput(str(exc)) from None
    return spec, samples, examples


def run_plan(spec_path: Path, as_json: bool) -> None:
    spec, samples, examples = checked_spec(spec_path)
    report = build_plan(spec, samples, examples)
    if as_json:
        click.echo(json.dumps(report))
    else:
        print_plan(report)
    _missing_pulls(spec)


def _missing_pulls(spec) -> None:
    """On stderr, the `ollama pull` lines online Ollama workers lack (greenctl.ollama_pulls), when a
    database is reachable."""
    from greenctl import ollama_pulls, queries

    required = ollama_pulls.required_tags(spec)
    db, _ = _database() if required else (None, None)
    if db is not None:
        workers, _ = _read(db, queries.online_ollama_workers, 4 * common.settings().heartbeat_seconds, default=None)
        for line in ollama_pulls.missing_lines(required, workers) if workers is not None else []:
            click.echo(line, err=True)


def _t(t: dict | None, unit: str, scale: float = 1.0) -> str:
    if t is None:
        return "unknown"
    return f"{t['value'] * scale:.3g} {unit} ({t['low'] * scale:.3g}–{t['high'] * scale:.3g})"


def _duration(t: dict | None) -> str:
    if t is None:
        return "unknown"

    def one(x: float) -> str:
        return f"{x:.0f} s" if x < 120 else f"{x / 60:.1f} min" if x < 7200 else f"{x / 3600:.1f} h"
    return f"{one(t['value'])} ({one(t['low'])}–{one(t['high'])})"


def _pct(x) -> str:
    return "–" if x is None else f"{x:.0%}"


def print_plan(p: dict) -> None:
    echo = click.echo
    echo(f"plan for {p['experiment']!r}: {p['tasks']} tasks; nothing written or sent; intervals {p['interval']}")
    for r in p["variants"]:
        head = f"{r['model']} {r['variant']} (queue {r['queue']}, {r['tasks']} tasks)"
        if r["status"] != "estimated":
            echo(f"  {head}: no estimate: {r['reason']}")
            continue
        per = r["per_inference"]
        echo(f"  {head}")
        echo(f"    per inference: latency {_t(per['latency_s'], 's')}, energy {_t(per['energy_kwh'], 'Wh', 1e3)}, "
             f"CO2e {_t(per['co2_kg'], 'g', 1e3)}")
        fit, err = r["fit"], r["fit"]["held_out_mape"]
        echo(f"    fit: {fit['label']}; held-out MAPE latency {_pct(err.get('latency_s'))}, "
             f"energy {_pct(err.get('energy_kwh'))}" + (f" ({fit['held_out_basis']})" if "held_out_basis" in fit
                                                        else f" on {fit['held_out_rows']} rows"))
        if r.get("extrapolating"):
            echo(f"    note: outside the fit's measured range of {', '.join(r['extrapolating'])}")
        if r.get("unmeasured_quantization"):
            echo(f"    note: {UNMEASURED_NOTE.format(variant=r['variant'], bits=r['bits'])}")
    t = p["totals"]
    for queue, q in t["queues"].items():
        workers = (f"{q['online_workers']} online worker{'s' * (q['online_workers'] != 1)}" if q["online_workers"]
                   else "no worker online: wall time for one worker")
        echo(f"  queue {queue}: {workers}; wall time {_duration(q['wall_s'])}")
    partial = "" if t["complete"] else " (partial: variants without an estimate are left out)"
    echo(f"  total{partial}: wall time {_duration(t['wall_s'])}, energy {_t(t['energy_kwh'], 'kWh')}, "
         f"CO2e {_t(t['co2_kg'], 'kg')} at {p['carbon_intensity_kg_per_kwh']:.3g} kg/kWh "
         f"({p['carbon_intensity_source']}), PUE {p['pue']:g}; excludes {t['excludes']}")
    for note in p["notes"]:
        echo(f"  note: {note}")


@click.command()
@click.argument("spec_path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def plan(spec_path: Path, as_json: bool) -> None:
    """Estimate SPEC_PATH's latency, energy and CO2e before running it; writes and sends nothing."""
    run_plan(spec_path, as_json)


commands = [plan]
