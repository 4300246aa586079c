"""Intervals, baselines, provenance and paired verdicts of a report. Pure: variant rows
and per-sample lists in, keys added to the rows (never renamed or removed) and
report-level sections out. The statistics are shared.verdicts'.

A variant is compared with its model's baseline on the same samples: rows are
paired by (sample_index, repeat), and only samples both answered count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from shared import verdicts as stats

N_BOOT = 2000
SEED = 0
LEVEL = 0.95
F1_TOLERANCE = 0.03           # the +- an F1 difference must be resolved to (fraction points)
MAX_SHARE = 0.90              # one answer for this share of samples or more: a constant answer
PAIR_METRICS = ("f1_macro", "f1_weighted")
COSTS = (("energy", "energy_kwh"), ("co2", "co2_kg"), ("latency", "e2e_s"))


@dataclass
class Samples:
    """One variant's finished rows, in one order: keys are (sample_index, repeat)."""
    keys: list[tuple[int, int]] = field(default_factory=list)
    y_true: list[str] = field(default_factory=list)
    y_pred: list[str | None] = field(default_factory=list)
    energy_kwh: list[float] = field(default_factory=list)
    co2_kg: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)


def methods(tolerance: float = F1_TOLERANCE, stop: dict | None = None) -> dict:
    """How every interval and test of the report is made, for the report's "statistics" key."""
    sequential = ({"paired_delta_sequential": f"stop when decided: ΔF1 intervals as the stop rule's last look "
                                              f"({stop.get('method') or 'level ' + str(stop['level'])})"}
                  if stop and stop.get("level") else {})
    return sequential | {
        "quality_interval": stats.QUALITY_METHOD.format(n_boot=N_BOOT, seed=SEED, level=LEVEL),
        "cost_interval": "normal approximation of the mean per inference, 95 % interval",
        "paired_delta": "difference of the F1 of the variant and of its baseline on the same samples "
                        "(paired by sample and repeat), " + stats.QUALITY_METHOD.format(
                            n_boot=N_BOOT, seed=SEED, level=LEVEL),
        "paired_ratio": stats.RATIO_METHOD.format(n_boot=N_BOOT, seed=SEED, level=LEVEL),
        "mcnemar": stats.MCNEMAR_METHOD,
        "f1_tolerance": tolerance,
        "constant_answer_rule": (f"flagged 'no better than a constant answer' when its F1 (macro or weighted) "
                                 f"interval reaches the always-majority figure on its samples, or one answer "
                                 f"makes up >= {MAX_SHARE:.0%} of its answers"),
        "n_boot": N_BOOT, "seed": SEED, "level": LEVEL,
    }


# -- provenance ---------------------------------------------------------------------------------

def provenance(model: str, engine: str, variant: str) -> dict:
    """Where a variant's weights come from: weights_from (source quantization), upcast (more bits
    than its source), weights_origin (source / upcast / requantized) and a note. None values when
    greenctl does not make the file (not in the embedded catalog)."""
    from shared.catalog import CATALOG, variant_note, variant_origin

    if engine != "embedded" or model not in CATALOG:
        return {"weights_from": None, "upcast": None, "weights_origin": None,
                "weights_note": "provenance not known to greenctl (the engine serves its own file)"}
    origin = variant_origin(model, variant)
    return {"weights_from": CATALOG[model].source_quantization, "upcast": origin == "upcast",
            "weights_origin": origin, "weights_note": variant_note(model, variant)}


# -- per variant --------------------------------------------------------------------------------

def quality_intervals(v: dict, s: Samples, labels: list[str]) -> None:
    """Adds <metric>_ci95 [low, high] for every quality metric, the dominant answer, the
    always-majority figures on the variant's samples and the constant-answer flag."""
    if not s.y_true:
        for m in stats.METRICS:
            v[f"{m}_ci95"] = [None, None]
        v |= {"dominant_answer": None, "dominant_answer_share": None, "majority_baseline": None,
              "constant_answer": False, "constant_answer_reasons": []}
        return
    cis = stats.bootstrap_cis(s.y_true, s.y_pred, labels, n_boot=N_BOOT, seed=SEED, level=LEVEL)
    for m, (_, lo, hi) in cis.items():
        v[f"{m}_ci95"] = [lo, hi]
    answer, share = stats.dominant_share(s.y_pred)
    majority = stats.majority_answers(s.y_true, labels)
    maj = {m: stats.point(s.y_true, majority, labels, m) for m in ("accuracy", *PAIR_METRICS)}
    reasons = stats.constant_answer_reasons({m: cis[m][1] for m in PAIR_METRICS}, maj, share,
                                            max_share=MAX_SHARE)
    v |= {"dominant_answer": None if answer == stats.UNPARSED else answer, "dominant_answer_share": share,
          "majority_baseline": {"answer": majority[0], **maj},
          "constant_answer": bool(reasons), "constant_answer_reasons": reasons}


def pair(base: Samples, other: Samples) -> tuple[list[int], list[int]]:
    """Positions in base and other of the samples both answered, matched by (sample_index, repeat)."""
    where = {k: i for i, k in enumerate(base.keys)}
    pb, po = [], []
    for j, k in enumerate(other.keys):
        if k in where:
            pb.append(where[k])
            po.append(j)
    return pb, po


def versus_baseline(base: Samples, other: Samples, labels: list[str], tolerance: float,
                    looks_level: float | None = None) -> dict | None:
    """The paired comparison of `other` with `base`: ΔF1 (other - base) with a paired interval,
    McNemar's exact p on per-sample correctness, energy/CO2e/latency ratio (other / base).

    looks_level: the per-look level of a stop-when-decided experiment (shared.sequential); the ΔF1
    interval then uses the stop rule's own interval, so the report's verdict is the one the
    sequential design allows (a single-look 95 % interval after several looks would not be)."""
    pb, po = pair(base, other)
    if not pb:
        return None
    y = [base.y_true[i] for i in pb]
    a = [base.y_pred[i] for i in pb]
    b = [other.y_pred[j] for j in po]
    level, n_boot = LEVEL, N_BOOT
    if looks_level is not None:
        from shared import sequential

        level = sequential.expanded_level(looks_level, len(y), len(set(y)))
        n_boot = max(N_BOOT, sequential.resamples_for(level))
    out: dict = {"n_paired": len(pb), "delta_level": level}
    deltas = stats.paired_delta_cis(y, a, b, labels, PAIR_METRICS, n_boot=n_boot, seed=SEED, level=level)
    for m, (d, lo, hi) in deltas.items():
        decision = stats.delta_decided(lo, hi, tolerance)
        half = (hi - lo) / 2
        out[f"{m}_delta"] = d
        out[f"{m}_delta_ci95"] = [lo, hi]
        out[f"{m}_verdict"] = decision["verdict"]
        out[f"{m}_decided"] = decision["decided"]
        out[f"{m}_samples_to_resolve"] = (None if decision["decided"] or not math.isfinite(half)
                                          else stats.samples_to_resolve(half, len(pb), tolerance))
    out["mcnemar"] = stats.mcnemar_exact(y, a, b)
    for name, attr in COSTS:
        xa = [getattr(base, attr)[i] for i in pb]
        xb = [getattr(other, attr)[j] for j in po]
        r, lo, hi = stats.paired_ratio_ci(xa, xb, n_boot=N_BOOT, seed=SEED, level=LEVEL)
        out[f"{name}_ratio"] = None if math.isnan(r) else r
        out[f"{name}_ratio_ci95"] = [None, None] if math.isnan(lo) else [lo, hi]
    out["decided"] = all(out[f"{m}_decided"] for m in PAIR_METRICS)
    return out


# -- words --------------------------------------------------------------------------------------

def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def _pct(x: float) -> str:
    return f"{x * 100:.0f}"


def cost_phrase(name: str, what: str, base_name: str, ratio: float | None, ci: list, estimated: bool) -> str:
    """'uses 47 % [41, 52] less energy than f16' from a ratio other/base and its interval."""
    if ratio is None or ci[0] is None:
        return f"{what}: no paired figure"
    lo, hi = ci
    if lo <= 1 <= hi:
        pct = lambda x: f"{(x - 1) * 100:+.0f}".replace("-", "−")  # noqa: E731
        text = f"{what} {pct(ratio)} % [{pct(lo)}, {pct(hi)}] vs {base_name}: no difference detectable"
    elif ratio < 1:
        text = f"uses {_pct(1 - ratio)} % [{_pct(1 - hi)}, {_pct(1 - lo)}] less {what} than {base_name}"
    else:
        text = f"uses {_pct(ratio - 1)} % [{_pct(lo - 1)}, {_pct(hi - 1)}] more {what} than {base_name}"
    if estimated and what == "energy":
        text += " (estimated energy, driven by time)"
    return text


def effect_phrase(v: dict, base: dict) -> str:
    """What the F1 difference is the effect of, given where both variants' weights come from."""
    src, vo, bo = v.get("weights_from"), v.get("weights_origin"), base.get("weights_origin")
    if src is None or vo is None or bo is None:
        return ""
    if vo == "requantized" and bo in ("source", "upcast"):
        return f" (effect of re-quantizing the {src} weights to {v['variant']})"
    if vo in ("source", "upcast") and bo in ("source", "upcast"):
        return f" (both carry the {src} weights: the effect of arithmetic precision only)"
    if vo == "requantized" and bo == "requantized":
        return f" (two re-quantizations of the {src} weights)"
    return f" (effect of re-quantizing the {src} weights)"


def _about(n: int) -> str:
    """A sample count rounded to 2 significant digits: 1606 -> '1,600'."""
    digits = max(0, len(str(n)) - 2)
    return f"{round(n, -digits):,}"


def f1_phrase(comp: dict, tolerance: float) -> str:
    """'F1 macro −0.20 [−0.33, −0.07], weighted ...: worse' (one verdict when both F1s agree)."""
    def head(m: str) -> str:
        d, (lo, hi) = comp[f"{m}_delta"], comp[f"{m}_delta_ci95"]
        return f"{_signed(d)} [{_signed(lo)}, {_signed(hi)}]"

    def words(verdicts: set[str], metrics: tuple[str, ...]) -> str:
        n = comp["n_paired"]
        verdict = verdicts.pop() if len(verdicts) == 1 else None
        if verdict in ("better", "worse"):
            return verdict
        if verdict == "equivalent":
            return f"no difference larger than ±{tolerance:.2f} with {n} samples"
        need = max((comp[f"{m}_samples_to_resolve"] or 0) for m in metrics)
        return (f"no difference detectable with {n} samples"
                + (f"; about {_about(need)} per variant would resolve ±{tolerance:.2f}" if need else ""))

    ma, we = comp["f1_macro_verdict"], comp["f1_weighted_verdict"]
    if ma == we:
        return f"F1 macro {head('f1_macro')}, weighted {head('f1_weighted')}: {words({ma, we}, PAIR_METRICS)}"
    return (f"F1 macro {head('f1_macro')}: {words({ma}, ('f1_macro',))}; "
            f"F1 weighted {head('f1_weighted')}: {words({we}, ('f1_weighted',))}")


def p_text(p: float) -> str:
    """'= 0.053', '< 0.001'."""
    return "< 0.001" if p < 0.001 else f"= {p:.2g}" if p < 0.995 else "= 1.0"


def verdict_line(v: dict, base: dict, tolerance: float) -> str:
    """One line in words for a variant against its baseline."""
    comp = v["vs_baseline"]
    estimated = not (v.get("energy_measured") and base.get("energy_measured"))
    line = (f"{v['variant']} {cost_phrase('energy', 'energy', base['variant'], comp['energy_ratio'], comp['energy_ratio_ci95'], estimated)}"
            f"; {f1_phrase(comp, tolerance)}"
            f"{effect_phrase(v, base)}; McNemar p {p_text(comp['mcnemar']['pvalue'])}")
    flagged = [x["variant"] for x in (v, base) if x.get("constant_answer")]
    if flagged:
        line += f"; {' and '.join(flagged)}: no better than a constant answer"
    return line + "."


# -- the whole report ---------------------------------------------------------------------------

def annotate(variants: list[dict], samples: list[Samples], labels: list[str],
             tolerance: float = F1_TOLERANCE, looks_level: float | None = None) -> list[str]:
    """Adds intervals, flags, provenance and vs_baseline/verdict to each variant row (same order
    as samples); returns the verdict lines, one per compared variant, then one per flagged one."""
    for v, s in zip(variants, samples):
        v |= provenance(v["model"], v["engine"], v["variant"])
        quality_intervals(v, s, labels)
    index = {(v["model"], v["engine"]): i for i, v in enumerate(variants) if v["is_baseline"]}
    lines = []
    for v, s in zip(variants, samples):
        b = index.get((v["model"], v["engine"]))
        v["vs_baseline"], v["verdict"] = None, None
        if b is None or v["is_baseline"] or not s.keys or not samples[b].keys:
            continue
        v["vs_baseline"] = versus_baseline(samples[b], s, labels, tolerance, looks_level)
        if v["vs_baseline"]:
            v["vs_baseline"]["baseline"] = variants[b]["variant"]
            v["verdict"] = verdict_line(v, variants[b], tolerance)
            lines.append(v["verdict"])
    for v in variants:
        if v.get("constant_answer"):
            lines.append(f"{v['variant']}: no better than a constant answer "
                         f"({'; '.join(v['constant_answer_reasons'])}).")
    return lines


def baselines(samples: list[Samples], labels: list[str]) -> dict | None:
    """The majority-class and uniform-random classifiers on the samples any variant answered
    (each (sample_index, repeat) once): their figures, majority with intervals."""
    seen: dict[tuple[int, int], str] = {}
    for s in samples:
        for k, t in zip(s.keys, s.y_true):
            seen.setdefault(k, t)
    if not seen:
        return None
    y = [seen[k] for k in sorted(seen)]
    majority = stats.majority_answers(y, labels)
    return {
        "n": len(y),
        # no interval: with samples stratified by label its figures are fixed by the design
        "majority": {"answer": majority[0], **{m: stats.point(y, majority, labels, m) for m in stats.METRICS},
                     "method": "always the most frequent true label"},
        "uniform_random": {**stats.uniform_random_expected(y, labels, n_sim=N_BOOT, seed=SEED),
                           "method": f"expected figures of a uniform random choice among the labels "
                                     f"({N_BOOT} simulated answer sets, seed {SEED})"},
    }
