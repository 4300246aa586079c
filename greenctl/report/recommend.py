"""The green ranking: the variant with the least CO2e per inference whose F1
meets a floor with confidence (the lower bound of its 95 % interval), never a
variant that is no better than a constant answer. When the intervals do not
settle it, the answer is "undecided", with why and the samples that would
decide. Pure: report dict and estimates in, a recommendation out.

Only a measured variant can be recommended: its F1 comes from its stored
rows. A variant with no finished task has no F1; the estimator can still say
what it would emit, so it is listed (labelled "estimated") and flagged as worth
measuring when it might beat the pick.
"""
from __future__ import annotations

from rich import box
from rich.table import Table

from greenctl.report import tables, units
from shared import verdicts as stats

METRICS = ("f1_weighted", "f1_macro")


def candidates(report: dict, estimates: dict[int, dict], metric: str, floor: float) -> list[dict]:
    """Every variant with its score and its 95 % interval, CO2e per inference, where that CO2e comes
    from, and whether it meets the floor with confidence (the interval's lower bound >= floor, and
    not a constant answer)."""
    out = []
    for i, v in enumerate(report["variants"]):
        base = {"model": v["model"], "engine": v["engine"], "variant": v["variant"], "is_baseline": v["is_baseline"],
                "n": v["n"], "energy_method": v["energy_method"], "weights_from": v.get("weights_from"),
                "upcast": v.get("upcast"), "weights_origin": v.get("weights_origin"),
                "constant_answer": bool(v.get("constant_answer")),
                "constant_answer_reasons": v.get("constant_answer_reasons") or []}
        if v["n"]:
            score = v[metric]
            low, high = v.get(f"{metric}_ci95") or (None, None)
            out.append({**base, "status": "measured", metric: score, f"{metric}_ci95": [low, high],
                        "co2_source": "measured",
                        "co2_kg_per_inference": v["co2_kg_per_inference"], "co2_kg_interval": v["co2_kg_ci95"],
                        "interval": "95 % of the mean", "energy_measured": v["energy_measured"],
                        "meets_floor": (score is not None and low is not None and low >= floor
                                        and not base["constant_answer"]),
                        "meets_floor_at_point": score is not None and score >= floor})
            continue
        est = estimates.get(i, {"status": "unavailable", "reason": "not estimated"})
        co2 = est.get("co2_kg")
        out.append({**base, "status": "not measured", metric: None, f"{metric}_ci95": [None, None],
                    "co2_source": "estimated" if co2 else None,
                    "co2_kg_per_inference": co2["value"] if co2 else None,
                    "co2_kg_interval": [co2["low"], co2["high"]] if co2 else [None, None],
                    "interval": est.get("interval"), "energy_measured": False, "meets_floor": None,
                    "meets_floor_at_point": None, "estimate": est})
    # The ranking: known CO2e first, least first; a tie goes to the better score.
    return sorted(out, key=lambda c: (c["co2_kg_per_inference"] is None, c["co2_kg_per_inference"] or 0.0,
                                      -(c[metric] or 0.0)))


def _samples_for_floor(c: dict, metric: str, floor: float) -> int | None:
    """Samples per variant at which c's F1 interval would clear or miss the floor, if its point held."""
    low, high = c[f"{metric}_ci95"]
    gap = abs(c[metric] - floor)
    if gap < 1e-3:
        return None                               # on the floor: no sample size decides
    return stats.samples_to_resolve((high - low) / 2, c["n"], gap)


def _samples_for_order(a: dict, b: dict) -> int | None:
    """Samples per variant at which the CO2e intervals of a and b would no longer overlap."""
    gap = abs(b["co2_kg_per_inference"] - a["co2_kg_per_inference"])
    half = sum((c["co2_kg_interval"][1] - c["co2_kg_interval"][0]) / 2 for c in (a, b))
    if gap <= 0 or half <= 0:
        return None
    return stats.samples_to_resolve(half, min(a["n"], b["n"]), gap)


def _need(n: int | None) -> str:
    return "more samples than an experiment can take" if n is None else f"about {n} samples per variant"


def recommend(report: dict, estimates: dict[int, dict], metric: str = "f1_weighted", floor: float = 0.6) -> dict:
    """The least-CO2e variant whose F1 lower bound is >= floor and that is not a constant answer;
    "decided" false (and no pick) when the intervals do not settle it, with why and the samples needed."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    ranked = candidates(report, estimates, metric, floor)
    measured = [c for c in ranked if c["status"] == "measured" and c[metric] is not None]
    excluded = [c for c in measured if c["constant_answer"]]
    usable = [c for c in measured if not c["constant_answer"] and c[f"{metric}_ci95"][0] is not None]
    eligible = [c for c in usable if c["meets_floor"] and c["co2_kg_per_inference"] is not None]
    unsure = [c for c in usable if not c["meets_floor"] and c[f"{metric}_ci95"][1] >= floor]
    pick, why, need = (eligible[0] if eligible else None), [], []
    if pick:
        for c in unsure:
            if c["co2_kg_per_inference"] is not None and c["co2_kg_per_inference"] < pick["co2_kg_per_inference"]:
                n = _samples_for_floor(c, metric, floor)
                why.append(f"{c['variant']} emits less and might meet the floor too: {metric} "
                           f"{_ci(c, metric)} straddles {floor:g}; {_need(n)} would decide")
                need.append(n)
        if len(eligible) > 1 and pick["co2_kg_interval"][1] >= eligible[1]["co2_kg_interval"][0]:
            n = _samples_for_order(pick, eligible[1])
            why.append(f"the CO2e intervals of {pick['variant']} and {eligible[1]['variant']} overlap, so they do "
                       f"not order them; {_need(n)} would")
            need.append(n)
        reason = None
    elif unsure:
        for c in unsure:
            n = _samples_for_floor(c, metric, floor)
            why.append(f"{c['variant']}: {metric} {_ci(c, metric)} straddles {floor:g}; {_need(n)} would decide")
            need.append(n)
        reason = f"no variant clears {metric} >= {floor:g} with confidence (95 % lower bound)"
    elif usable:
        best = max(usable, key=lambda c: c[metric])
        reason = (f"no measured variant reaches {metric} >= {floor:g}: the best is {best['variant']} "
                  f"with {_ci(best, metric)} (the whole interval is below the floor)")
    elif excluded:
        reason = "every measured variant is no better than a constant answer"
    else:
        reason = "no variant has finished a task yet: nothing measured to recommend"
    decided = bool(measured) and not why
    worth_measuring = [c for c in ranked if c["co2_source"] == "estimated"
                       and (pick is None or c["co2_kg_per_inference"] < pick["co2_kg_per_inference"])]
    known = [n for n in need if n is not None]
    return {"experiment": report["experiment"], "metric": metric, "min_score": floor,
            "partial": report["experiment"]["partial"], "decided": decided,
            "recommended": pick if decided else None, "provisional": None if decided else pick,
            "reason": reason, "undecided_because": why,
            "samples_to_decide": max(known) if known else None,
            "excluded": [{"variant": c["variant"], "reasons": c["constant_answer_reasons"]} for c in excluded],
            "rule": (f"least CO2e per inference among variants whose {metric} 95 % lower bound is >= {floor:g} "
                     f"and that are not a constant answer"),
            "worth_measuring": [c["variant"] for c in worth_measuring], "candidates": ranked}


def _ci(c: dict, metric: str) -> str:
    low, high = c[f"{metric}_ci95"]
    return f"{c[metric]:.2f} [{low:.2f}, {high:.2f}]"


def table(result: dict) -> Table:
    metric = result["metric"]
    ranked = result["candidates"]
    c_unit, c_f = units.pick_unit([c["co2_kg_per_inference"] for c in ranked], units.CO2_UNITS)
    several = len({c["model"] for c in ranked}) > 1
    t = Table(title=f"green ranking: least CO2e per inference first; floor {metric} >= {result['min_score']:g}",
              title_justify="left", box=box.SIMPLE_HEAD,
              collapse_padding=True)
    for col in ("variant", "status", metric, "95 %", f"CO2e {c_unit}", "interval", "CO2e from", "meets floor"):
        t.add_column(col, justify="right" if col in (metric, "95 %", f"CO2e {c_unit}", "interval") else "left")
    for c in ranked:
        low, high = c["co2_kg_interval"]
        f_low, f_high = c[f"{metric}_ci95"]
        t.add_row(tables.variant_name(c, several), c["status"] + (f" (n={c['n']})" if c["n"] else ""),
                  units.ratio(c[metric]), units.DASH if f_low is None else f"{f_low:.2f}–{f_high:.2f}",
                  units.scaled(c["co2_kg_per_inference"], c_f),
                  units.DASH if low is None else f"{units.scaled(low, c_f)} – {units.scaled(high, c_f)} "
                                                 f"({c['interval'].split(' ')[0]} %)",
                  c["co2_source"] or "can't estimate",
                  "no: constant answer" if c["constant_answer"] else
                  {True: "yes", False: "no", None: "unknown"}[c["meets_floor"]])
    return t


def verdict_lines(result: dict) -> list[str]:
    """The answer in words, then what its numbers are (measured or estimated)."""
    metric, pick = result["metric"], result["recommended"]
    lines = []
    if result["partial"]:
        lines.append("Partial experiment: only finished tasks are counted.")
    shown = pick or result.get("provisional")
    if shown:
        how = "measured" + ("" if shown["energy_measured"] else
                            f" rows; energy method '{shown['energy_method']}' is an estimate, not a power reading")
        what = (f"{shown['model']} {shown['variant']}: {units.co2(shown['co2_kg_per_inference'])} CO2e per "
                f"inference, {metric} {_ci(shown, metric)} (n={shown['n']}; {how})")
        lines.append(f"Recommended: {what}." if pick else f"Undecided. Provisionally {what}.")
    elif result["decided"]:
        lines.append(f"No recommendation: {result['reason']}.")
    else:
        lines.append(f"Undecided: {result['reason']}.")
    lines += [f"Undecided because {why}." for why in result.get("undecided_because", [])]
    if result.get("samples_to_decide") and len(result.get("undecided_because", [])) > 1:
        lines.append(f"About {result['samples_to_decide']} samples per variant would decide.")
    for c in result.get("excluded", []):
        lines.append(f"{c['variant']} not considered: no better than a constant answer ({'; '.join(c['reasons'])}).")
    lines.append(f"Rule: {result['rule']}.")
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
