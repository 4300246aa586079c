"""The same (model, variant) across experiments and machines, side by side. Pure:
report dicts in, a comparison dict and its table out.

A run is one variant of one experiment on one hardware profile (a report's
`by_machine` entry), so one experiment that ran a variant on two kinds of
machine gives two runs. Changes are against the first run of each variant, in
the order the experiments were given.
"""
from __future__ import annotations

from rich import box
from rich.table import Table

from greenctl.report import metrics, units

RUN_KEYS = ("n", "accuracy", "f1_weighted", "f1_macro", "energy_kwh_per_inference", "co2_kg_per_inference",
            "latency_s_mean", "energy_method", "workers")


def comparison(reports: list[dict]) -> dict:
    variants: dict[tuple[str, str, str], dict] = {}
    for report in reports:
        exp = report["experiment"]
        for v in report["variants"]:
            key = (v["model"], v["engine"], v["variant"])
            entry = variants.setdefault(key, {"model": v["model"], "engine": v["engine"], "variant": v["variant"],
                                              "runs": []})
            for machine in v.get("by_machine", []):
                entry["runs"].append({"experiment_id": exp["id"], "experiment_name": exp["name"],
                                      "partial": exp["partial"], "hardware_profile": machine["hardware_profile"],
                                      **{k: machine.get(k) for k in RUN_KEYS}})
    for entry in variants.values():
        first = entry["runs"][0] if entry["runs"] else None
        for run in entry["runs"]:
            run["co2_change_vs_first"] = metrics.relative_change(run["co2_kg_per_inference"],
                                                                 first["co2_kg_per_inference"])
            run["f1_weighted_change_vs_first"] = (None if run["f1_weighted"] is None or first["f1_weighted"] is None
                                                  else run["f1_weighted"] - first["f1_weighted"])
    return {
        "experiments": [{**r["experiment"], "totals": r["totals"]} for r in reports],
        "variants": list(variants.values()),
    }


def table(data: dict, wide: bool = False) -> Table:
    """The comparison; fits 80 columns unless `wide` (then every column, names in full)."""
    runs = [run for v in data["variants"] for run in v["runs"]]
    e_unit, e_f = units.pick_unit([r["energy_kwh_per_inference"] for r in runs], units.ENERGY_UNITS)
    c_unit, c_f = units.pick_unit([r["co2_kg_per_inference"] for r in runs], units.CO2_UNITS)
    several_models = len({v["model"] for v in data["variants"]}) > 1
    t = Table(title="the same variant across experiments and machines (changes vs its first row)",
              title_justify="left", box=box.SIMPLE_HEAD,
              collapse_padding=True)
    columns = (("variant", "experiment", "machine", "n", "acc", "F1 w", "F1 mac", f"energy {e_unit}",
                f"CO2e {c_unit}", "CO2e vs first", "ΔF1 w", "latency", "energy method") if wide else
               ("variant", "exp", "machine", "n", "F1 w", f"CO2e {c_unit}", "vs 1st", "ΔF1 w", "latency"))
    for col in columns:
        t.add_column(col, justify="left" if col in ("variant", "experiment", "exp", "machine", "energy method")
                     else "right", no_wrap=wide and col in ("variant", "experiment", "machine"),
                     overflow="fold")
    for v in [v for v in data["variants"] if v["runs"]]:
        name = f"{v['model']} {v['variant']}" if several_models else v["variant"]
        for i, run in enumerate(v["runs"]):
            first = "first" if i == 0 else units.percent_change(run["co2_change_vs_first"])
            df1 = "" if i == 0 else units.delta(run["f1_weighted_change_vs_first"])
            if wide:
                t.add_row(name if i == 0 else "",
                          f"{run['experiment_id']} {run['experiment_name']}" + (" (partial)" if run["partial"] else ""),
                          run["hardware_profile"], str(run["n"]), units.ratio(run["accuracy"]),
                          units.ratio(run["f1_weighted"]), units.ratio(run["f1_macro"]),
                          units.scaled(run["energy_kwh_per_inference"], e_f),
                          units.scaled(run["co2_kg_per_inference"], c_f), first, df1,
                          units.seconds(run["latency_s_mean"]), run["energy_method"] or units.DASH)
            else:
                t.add_row(name if i == 0 else "", str(run["experiment_id"]) + ("*" if run["partial"] else ""),
                          run["hardware_profile"], str(run["n"]), units.ratio(run["f1_weighted"]),
                          units.scaled(run["co2_kg_per_inference"], c_f), first, df1,
                          units.seconds(run["latency_s_mean"]))
        t.add_section()
    return t


def not_run(data: dict) -> list[str]:
    """Variants that no given experiment has a finished task of."""
    return [f"{v['model']} {v['variant']}" for v in data["variants"] if not v["runs"]]
