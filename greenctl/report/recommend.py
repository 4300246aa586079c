"""The green ranking: the variant with the least CO2e per inference whose F1
meets a floor. Pure: report dict and estimates in, a recommendation out.

Only a measured variant can be recommended: its F1 comes from its stored
rows. A variant with no finished task has no F1; the estimator can still say
what it would emit, so it is listed (labelled "estimated") and flagged as worth
measuring when it might beat the pick.
"""
from __future__ import annotations

from rich import box
from rich.table import Table

from greenctl.report import tables, units

METRICS = ("f1_weighted", "f1_macro")


def candidates(report: dict, estimates: dict[int, dict], metric: str, floor: float) -> list[dict]:
    """Every variant with its score, CO2e per inference, where that CO2e comes from, and whether it meets the floor."""
    out = []
    for i, v in enumerate(report["variants"]):
        base = {"model": v["model"], "engine": v["engine"], "variant": v["variant"], "is_baseline": v["is_baseline"],
                "n": v["n"], "energy_method": v["energy_method"]}
        if v["n"]:
            score = v[metric]
            out.append({**base, "status": "measured", metric: score, "co2_source": "measured",
                        "co2_kg_per_inference": v["co2_kg_per_inference"], "co2_kg_interval": v["co2_kg_ci95"],
                        "interval": "95 % of the mean", "energy_measured": v["energy_measured"],
                        "meets_floor": score is not None and score >= floor})
            continue
        est = estimates.get(i, {"status": "unavailable", "reason": "not estimated"})
        co2 = est.get("co2_kg")
        out.append({**base, "status": "not measured", metric: None,
                    "co2_source": "estimated" if co2 else None,
                    "co2_kg_per_inference": co2["value"] if co2 else None,
                    "co2_kg_interval": [co2["low"], co2["high"]] if co2 else [None, None],
                    "interval": est.get("interval"), "energy_measured": False, "meets_floor": None,
                    "estimate": est})
    # The ranking: known CO2e first, least first; a tie goes to the better score.
    return sorted(out, key=lambda c: (c["co2_kg_per_inference"] is None, c["co2_kg_per_inference"] or 0.0,
                                      -(c[metric] or 0.0)))


def recommend(report: dict, estimates: dict[int, dict], metric: str = "f1_weighted", floor: float = 0.6) -> dict:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    ranked = candidates(report, estimates, metric, floor)
    eligible = [c for c in ranked if c["meets_floor"] and c["co2_kg_per_inference"] is not None]
    pick = eligible[0] if eligible else None
    measured = [c for c in ranked if c["status"] == "measured" and c[metric] is not None]
    if pick:
        reason = None
    elif measured:
        best = max(measured, key=lambda c: c[metric])
        reason = (f"no measured variant reaches {metric} >= {floor:g}: the best is {best['variant']} "
                  f"with {best[metric]:.3f}")
    else:
        reason = "no variant has finished a task yet: nothing measured to recommend"
    worth_measuring = [c for c in ranked if c["co2_source"] == "estimated"
                       and (pick is None or c["co2_kg_per_inference"] < pick["co2_kg_per_inference"])]
    return {"experiment": report["experiment"], "metric": metric, "min_score": floor,
            "partial": report["experiment"]["partial"], "recommended": pick, "reason": reason,
            "worth_measuring": [c["variant"] for c in worth_measuring], "candidates": ranked}


def table(result: dict) -> Table:
    metric = result["metric"]
    ranked = result["candidates"]
    c_unit, c_f = units.pick_unit([c["co2_kg_per_inference"] for c in ranked], units.CO2_UNITS)
    several = len({c["model"] for c in ranked}) > 1
    t = Table(title=f"green ranking: least CO2e per inference first; floor {metric} >= {result['min_score']:g}",
              title_justify="left", box=box.SIMPLE_HEAD,
              collapse_padding=True)
    for col in ("variant", "status", metric, f"CO2e {c_unit}", "interval", "CO2e from", "meets floor"):
        t.add_column(col, justify="right" if col in (metric, f"CO2e {c_unit}", "interval") else "left")
    for c in ranked:
        low, high = c["co2_kg_interval"]
        t.add_row(tables.variant_name(c, several), c["status"] + (f" (n={c['n']})" if c["n"] else ""),
                  units.ratio(c[metric]), units.scaled(c["co2_kg_per_inference"], c_f),
                  units.DASH if low is None else f"{units.scaled(low, c_f)} – {units.scaled(high, c_f)} "
                                                 f"({c['interval'].split(' ')[0]} %)",
                  c["co2_source"] or "can't estimate",
                  {True: "yes", False: "no", None: "unknown"}[c["meets_floor"]])
    return t


def verdict_lines(result: dict) -> list[str]:
    """The answer in words, then what its numbers are (measured or estimated)."""
    metric, pick = result["metric"], result["recommended"]
    lines = []
    if result["partial"]:
        lines.append("Partial experiment: only finished tasks are counted.")
    if pick:
        how = "measured" + ("" if pick["energy_measured"] else
                            f" rows; energy method '{pick['energy_method']}' is an estimate, not a power reading")
        lines.append(f"Recommended: {pick['model']} {pick['variant']}: {units.co2(pick['co2_kg_per_inference'])} "
                     f"CO2e per inference, {metric} {pick[metric]:.3f} (n={pick['n']}; {how}).")
    else:
        lines.append(f"No recommendation: {result['reason']}.")
    for c in result["candidates"]:
        if c["status"] != "not measured":
            continue
        est = c.get("estimate", {})
        if c["co2_source"] == "estimated":
            lines.append(f"{c['variant']}: not measured; the estimator puts it at {units.co2(c['co2_kg_per_inference'])} "
                         f"CO2e per inference ({est.get('fit')}), F1 unknown"
                         + (": worth measuring." if c["variant"] in result["worth_measuring"] else "."))
        else:
            lines.append(f"{c['variant']}: not measured, and no estimate: {est.get('reason')}.")
    return lines
