"""Turning a report dict into what a person reads. Units are always shown,
and small masses/energies get the unit that keeps digits visible."""
from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table


def fmt_co2(kg: float | None) -> str:
    """kg CO2e with a readable unit: kg, g, mg or µg."""
    if kg is None:
        return "–"
    for factor, unit in ((1.0, "kg"), (1e3, "g"), (1e6, "mg"), (1e9, "µg")):
        if abs(kg) * factor >= 1 or unit == "µg":
            return f"{kg * factor:.3g} {unit}"
    return f"{kg:.3g} kg"


def fmt_energy(kwh: float | None) -> str:
    """kWh with a readable unit: kWh, Wh, mWh or µWh."""
    if kwh is None:
        return "–"
    for factor, unit in ((1.0, "kWh"), (1e3, "Wh"), (1e6, "mWh"), (1e9, "µWh")):
        if abs(kwh) * factor >= 1 or unit == "µWh":
            return f"{kwh * factor:.3g} {unit}"
    return f"{kwh:.3g} kWh"


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:+.0f} %"


def table(report: dict, console: Console | None = None) -> None:
    """Two tables that fit 80 columns: what each variant got right, and what it cost."""
    console = console or Console()
    exp = report["experiment"]
    state = "PARTIAL: only finished tasks are counted" if exp["partial"] else exp["status"]
    console.print(f"[bold]Experiment {exp['id']} '{exp['name']}'[/bold]: {exp['n_done']}/{exp['n_tasks']} "
                  f"done, {exp['n_failed']} failed ({state})")
    quality = Table(title="quality (weighted P/R/F1 as in the seed paper)", title_justify="left")
    for col in ("model", "variant", "n", "fail", "acc", "P", "R", "F1", "F1 macro"):
        quality.add_column(col, justify="left" if col in ("model", "variant") else "right")
    cost = Table(title="cost per inference", title_justify="left")
    for col in ("variant", "energy", "CO2e", "vs base", "latency", "tok in (new)", "tok out", "method"):
        cost.add_column(col, justify="left" if col in ("variant", "method") else "right")
    for v in report["variants"]:
        name = v["variant"] + ("*" if v["is_baseline"] else "")
        quality.add_row(v["model"], name, str(v["n"]), str(v["n_failed"]), _num(v["accuracy"], 2),
                        _num(v["precision_weighted"], 2), _num(v["recall_weighted"], 2),
                        _num(v["f1_weighted"], 2), _num(v["f1_macro"], 2))
        cost.add_row(
            name, fmt_energy(v["energy_kwh_per_inference"]), fmt_co2(v["co2_kg_per_inference"]),
            _pct(v.get("co2_change_vs_baseline")),
            "–" if v["latency_s_mean"] is None else f"{v['latency_s_mean']:.3f} s",
            "–" if v["prompt_tokens_mean"] is None else
            f"{v['prompt_tokens_mean']:.0f} ({v['prompt_tokens_uncached_mean']:.0f})",
            "–" if v["output_tokens_mean"] is None else f"{v['output_tokens_mean']:.1f}",
            v["energy_method"] or "–",
        )
    console.print(quality)
    console.print(cost)
    tot = report["totals"]
    console.print(f"* baseline variant. Totals: {fmt_energy(tot['energy_kwh'])}, "
                  f"{fmt_co2(tot['co2_kg'])} CO2e, {tot['inference_s']:.1f} s of inference, "
                  f"{tot['wall_s']:.1f} s wall.")
    methods = {m for v in report["variants"] for m in (v["energy_method"] or "").split("+") if m}
    if "estimated" in methods:
        console.print("[yellow]energy method 'estimated': CodeCarbon's TDP x CPU-load model, "
                      "not a measurement of this machine's power.[/yellow]")


def as_json(report: dict) -> str:
    return json.dumps(report, indent=2, default=str)
