"""The seed paper's Table III layout (`greenctl report ID --format table3`). Pure: report dict in, text out.

The case study (arXiv 2504.06307) reports, per model, precision, recall, F1,
accuracy and kg CO2 per inference "before optimization" (16-bit) and "after"
(4-bit, through Ollama). Here: before = each model's baseline variant, after =
its non-baseline variant with the fewest nominal bits (the 4-bit one in
examples/table3-ollama.yaml). Our figures carry their 95 % intervals; the paper's
own numbers sit on the line below ours when the model is one of its five, and a
third block sets our paired verdict (same samples) beside the paper's change.

Precision and recall are the weighted averages: the paper's recall equals its
accuracy in every row, which weighted recall does by definition.
"""
from __future__ import annotations

import re

from greenctl.report import units
from shared.variants import nominal_bits

# The paper's Table III: (precision, recall, F1, accuracy, kg CO2 per inference), before and after.
PAPER = {
    "Llama 3.2": ((0.55, 0.45, 0.44, 0.45, 0.012), (0.57, 0.48, 0.47, 0.48, 0.005)),
    "Phi 3.2": ((0.97, 0.82, 0.88, 0.82, 0.012), (1.00, 0.84, 0.91, 0.84, 0.007)),
    "Qwen": ((0.77, 0.79, 0.76, 0.79, 0.009), (0.80, 0.81, 0.80, 0.81, 0.004)),
    "Mistral-small": ((0.70, 0.67, 0.65, 0.67, 0.020), (0.73, 0.70, 0.69, 0.70, 0.015)),
    "Llava-Llama 3": ((0.58, 0.50, 0.48, 0.50, 0.014), (0.61, 0.54, 0.51, 0.54, 0.006)),
}
# Ollama names of the paper's five models (Table II) -> its row label in Table III.
PAPER_MODELS = (
    (re.compile(r"^llama3\.2:1b(?:-instruct)?(?:-|$)"), "Llama 3.2"),               # Llama-3.2-1B-Instruct
    (re.compile(r"^phi3:(?:3\.8b-)?mini-128k(?:-instruct)?(?:-|$)"), "Phi 3.2"),    # Phi-3-mini-128k-Instruct
    (re.compile(r"^qwen2:7b(?:-instruct)?(?:-|$)"), "Qwen"),                        # Qwen2-7B-Instruct
    (re.compile(r"^mistral:7b-instruct(?!-v0\.[12])(?:-|$)"), "Mistral-small"),     # Mistral-7B-Instruct-v0.3
    (re.compile(r"^llava-llama3(?::|$)"), "Llava-Llama 3"),                          # LLaVA-Llama3
)
METRICS = (("Precision", "precision_weighted"), ("Recall", "recall_weighted"), ("F1", "f1_weighted"),
           ("Accuracy", "accuracy"))
CO2 = "co2_kg_per_inference"
DASH = units.DASH


def paper_row(model: str) -> str | None:
    """The paper's Table III label for an Ollama model name, or None if it is not one of its five."""
    return next((label for pattern, label in PAPER_MODELS if pattern.match(model)), None)


def before_after(variants: list[dict]) -> list[tuple[dict, dict | None]]:
    """(before, after) per model in report order: before is the baseline variant, after the
    other variant with the fewest nominal bits (None when the model has only its baseline)."""
    out = []
    for base in (v for v in variants if v["is_baseline"]):
        others = [v for v in variants if (v["model"], v["engine"]) == (base["model"], base["engine"])
                  and not v["is_baseline"]]
        after = min(others, key=lambda v: nominal_bits(v["variant"]) or 99.0, default=None)
        out.append((base, after))
    return out


def _interval(x: float | None, ci: list | None) -> str:
    if x is None:
        return DASH
    lo, hi = ci or (None, None)
    return units.ratio(x) if lo is None else f"{units.ratio(x)} [{units.ratio(lo)}, {units.ratio(hi)}]"


def _co2(v: dict, unit: str) -> str:
    """CO2e per inference with its interval, in `unit` (one unit for the whole table, so rows compare)."""
    x, (lo, hi) = v.get(CO2), v.get("co2_kg_ci95") or (None, None)
    if x is None:
        return DASH
    factor = dict(units.CO2_UNITS)[unit]
    if lo is None:
        return units.co2(x, unit)
    return f"{units.number(x * factor)} {unit} [{units.number(lo * factor)}, {units.number(hi * factor)}]"


def _ours(v: dict, unit: str) -> list[str]:
    return ([v["model"], v["variant"], str(v["n"])] + [_interval(v.get(k), v.get(f"{k}_ci95")) for _, k in METRICS]
            + [_co2(v, unit)])


def _paper(label: str, figures: tuple) -> list[str]:
    return ([f"  paper: {label}", "", ""] + [units.ratio(x) for x in figures[:4]]
            + [f"{figures[4]:g} kg"])   # as the paper prints it


def _grid(header: list[str], rows: list[list[str]], right_from: int = 2) -> list[str]:
    """Columns padded to their widest cell; text columns left, numbers right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i >= right_from else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return [line(header), *(line(r) for r in rows)]


def _signed(x: float | None) -> str:
    return DASH if x is None else f"{x:+.2f}"


def _pct(ratio: float | None) -> str:
    return DASH if ratio is None else f"{(ratio - 1) * 100:+.0f} %"


def _change(v: dict) -> list[str]:
    """ΔF1 (weighted) with its paired interval and verdict, and the CO2 change with its interval."""
    comp = v.get("vs_baseline") or {}
    d, (lo, hi) = comp.get("f1_weighted_delta"), comp.get("f1_weighted_delta_ci95") or (None, None)
    f1 = DASH if d is None else f"{_signed(d)} [{_signed(lo)}, {_signed(hi)}]"
    r, (rlo, rhi) = comp.get("co2_ratio"), comp.get("co2_ratio_ci95") or (None, None)
    co2 = DASH if r is None else (_pct(r) if rlo is None else f"{_pct(r)} [{_pct(rlo)}, {_pct(rhi)}]")
    return [f1, comp.get("f1_weighted_verdict") or DASH, co2]


def _paper_change(label: str | None) -> list[str]:
    if label is None:
        return [DASH, DASH]
    (before, after) = PAPER[label]
    return [_signed(after[2] - before[2]), _pct(after[4] / before[4])]


def table3(report: dict) -> str:
    """The report as the paper's Table III: before / after blocks, then the changes side by side."""
    exp = report["experiment"]
    pairs = before_after(report["variants"])
    unit, _ = units.pick_unit([v.get(CO2) for pair in pairs for v in pair if v is not None])
    header = ["Model", "variant", "n", *(name for name, _ in METRICS), "CO2e per inference"]
    out = [f"Table III layout: experiment {exp['id']} {exp['name']!r} ({exp['status']}"
           f"{', partial: unfinished tasks are not counted' if exp.get('partial') else ''})",
           "ours: value [95 % interval]; precision and recall weighted by label; the paper's own "
           "number on the line below (Table III of arXiv 2504.06307)", ""]
    for title, pick, which in (("Before optimization (baseline variant)", lambda p: p[0], 0),
                               ("After optimization (fewest-bit variant)", lambda p: p[1], 1)):
        rows = []
        for pair in pairs:
            v = pick(pair)
            if v is None:
                continue
            rows.append(_ours(v, unit))
            label = paper_row(v["model"])
            if label is not None:
                rows.append(_paper(label, PAPER[label][which]))
        out += [title, *_grid(header, rows), ""]
    change_rows = [[b["model"], f"{a['variant']} vs {b['variant']}", *_change(a), *_paper_change(paper_row(b["model"]))]
                   for b, a in pairs if a is not None]
    if change_rows:
        out += ["After vs before, paired on the same samples (ours) beside the paper's change",
                *_grid(["Model", "after vs before", "ΔF1 weighted [interval]", "verdict", "CO2e change [95 % interval]",
                        "paper ΔF1", "paper CO2 change"], change_rows, right_from=2), ""]
        levels = sorted({(a.get("vs_baseline") or {}).get("delta_level") for _, a in pairs if a} - {None})
        out.append(f"ΔF1 intervals at {', '.join(f'{x * 100:.3g} %' for x in levels)} (a stop rule's per-look level "
                   "when below 95 %); CO2e change intervals at 95 %; verdict: better / worse / equivalent "
                   "(within the F1 tolerance) / undecided")
        out += [f"{a['model']} {a['verdict']}" for _, a in pairs if a is not None and a.get("verdict")]
    shown = {(b["model"], b["variant"]) for b, _ in pairs} | {(a["model"], a["variant"]) for _, a in pairs if a}
    hidden = [f"{v['model']} {v['variant']}" for v in report["variants"] if (v["model"], v["variant"]) not in shown]
    if hidden:
        out.append(f"not in this layout (see `greenctl report {exp['id']}`): {', '.join(hidden)}")
    for method, note in (report.get("energy_methods") or {}).items():
        out.append(f"energy {method}: {note}")
    out.append("the paper's CO2 is kg per inference task as it reports it; it does not say how energy was measured")
    return "\n".join(out) + "\n"
