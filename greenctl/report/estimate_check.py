"""Estimated vs measured, per variant and per host: how good was the estimate each
worker recorded before each inference (result.estimate_*)? Estimates are never
presented as measurements: these figures grade the estimator, not the variants.
"""
from __future__ import annotations


def per_variant(db: str, experiment_id: int, variants: list) -> list[dict]:
    """One entry per variant (report order): rows with an estimate, latency and energy grades
    (estimator.grading.grade: MAPE and 80 % interval coverage, 95 % intervals), per host too."""
    from estimator import store
    from estimator.grading import grade

    rows = store.graded_rows(db, experiment_id)

    def grades(group) -> dict:
        return {"rows": int(len(group)),
                "latency_s": grade(group["estimate_e2e_s"], group["e2e_s"], group["low_factor"],
                                   group["high_factor"]),
                "energy_kwh": grade(group["estimate_energy_kwh"], group["energy_kwh"], group["energy_low_factor"],
                                    group["energy_high_factor"])}

    out = []
    for v in variants:
        mine = rows[rows["variant_id"] == v.id]
        entry = {"model": v.model, "variant": v.variant, **grades(mine),
                 "by_host": [{"hardware_profile": host, **grades(g)} for host, g in mine.groupby("hardware_profile")]}
        out.append(entry)
    return out


def _grade_text(g: dict | None) -> str:
    if g is None:
        return "no estimate"
    lo, hi = g["mape_ci95"]
    span = f" (95 %: {lo:.0%}–{hi:.0%})" if lo is not None else ""
    return (f"MAPE {g['mape']:.0%}{span}, its {g['nominal_coverage']:.0%} interval held "
            f"{g['coverage']:.0%} of {g['rows']}")


def lines(report: dict) -> list[str]:
    """One line per variant whose rows carry an estimate: what the estimator expected vs
    what was measured (the measurement is the figure; this grades the estimator)."""
    out = []
    for e in report.get("estimated_vs_measured", []):
        if not e["rows"]:
            continue
        hosts = ", ".join(h["hardware_profile"] for h in e["by_host"])
        out.append(f"Estimator check {e['model']} {e['variant']} ({hosts}): latency {_grade_text(e['latency_s'])}; "
                   f"energy {_grade_text(e['energy_kwh'])}")
    return out
