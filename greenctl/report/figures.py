"""The report's pictures as PNG bytes (matplotlib, Agg): CO2e per inference vs F1
with the Pareto front, energy per inference by phase, confusion matrices.

Figures are made with matplotlib's object API (Figure + Agg canvas), never
pyplot, so no global backend or figure state is touched and nothing opens a
window. Only measured variants are drawn.
"""
from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from greenctl.report import tables, units

COLORS = ["#1b7837", "#2166ac", "#b2182b", "#762a83", "#e08214", "#4d4d4d"]
PROMPT_COLOR, DECODE_COLOR, OTHER_COLOR = "#4393c3", "#f4a582", "#bababa"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _measured(report: dict) -> list[dict]:
    return [v for v in report["variants"] if v["n"] and v["co2_kg_per_inference"] is not None]


def _energy_caption(report: dict) -> str:
    methods = report.get("energy_methods", {})
    estimated = [m for m, note in methods.items() if note.startswith("estimate")]
    return (f"energy method: {', '.join(methods)}" +
            (" (an estimate, not a measurement)" if estimated else ""))


def _label(v: dict, models: bool) -> str:
    bits = (v.get("model_info") or {}).get("bits_per_weight")
    return tables.variant_name(v, models) + (f" ({bits:.3g} bpw)" if bits else "")


def co2_vs_f1(report: dict) -> bytes | None:
    """One point per variant: x CO2e per inference (95 % interval), y weighted F1; the Pareto front marked."""
    variants = [v for v in _measured(report) if v["f1_weighted"] is not None]
    if not variants:
        return None
    unit, factor = units.pick_unit([v["co2_kg_per_inference"] for v in variants], units.CO2_UNITS)
    models = sorted({v["model"] for v in variants})
    several = len(models) > 1
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for v in variants:
        color = COLORS[models.index(v["model"]) % len(COLORS)]
        x, y = v["co2_kg_per_inference"] * factor, v["f1_weighted"]
        low, high = (c * factor for c in v["co2_kg_ci95"])
        ax.errorbar([x], [y], xerr=[[x - low], [high - x]], fmt="none", ecolor=color, alpha=0.5, capsize=3)
        ax.scatter([x], [y], s=70, color=color if v.get("on_pareto_front") else "white", edgecolors=color,
                   linewidths=1.5, marker="*" if v["is_baseline"] else "o", zorder=3)
        ax.annotate(_label(v, several), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    front = sorted((v["co2_kg_per_inference"] * factor, v["f1_weighted"]) for v in variants if v.get("on_pareto_front"))
    if front:
        xs, ys = zip(*front)
        ax.step(xs, ys, where="post", linestyle="--", color="#555555", linewidth=1,
                label="Pareto front (filled: no variant has less CO2e and a higher F1)")
        ax.legend(loc="upper left", fontsize=7)  # low CO2 with high F1: the ideal corner, rarely reached
    ax.set_xlabel(f"CO2e per inference ({unit}); bars: 95 % interval of the mean")
    ax.set_ylabel("F1 (weighted)")
    ax.set_title("CO2e per inference vs F1, per variant (*: baseline)", fontsize=10)
    ax.margins(x=0.25, y=0.15)
    ax.grid(alpha=0.3)
    fig.text(0.01, -0.02, _energy_caption(report), fontsize=7, color="#555555")
    return _png(fig)


def energy_by_phase(report: dict) -> bytes | None:
    """Bars of energy per inference, split into prompt, decode and the rest where timings allow."""
    variants = _measured(report)
    if not variants:
        return None
    unit, factor = units.pick_unit([v["energy_kwh_per_inference"] for v in variants], units.ENERGY_UNITS)
    several = tables.several_models(report)
    names = [tables.variant_name(v, several) for v in variants]
    fig = Figure(figsize=(max(4.8, 1.2 * len(variants) + 2.5), 4.2))
    ax = fig.add_subplot()
    labelled = set()
    for i, v in enumerate(variants):
        split = v.get("energy_split")
        parts = ([("prompt (est.)", split["prompt_kwh_per_inference"], PROMPT_COLOR),
                  ("decode (est.)", split["decode_kwh_per_inference"], DECODE_COLOR),
                  ("other: load, overhead (est.)", split["other_kwh_per_inference"], OTHER_COLOR)]
                 if split else [("total (no phase timings)", v["energy_kwh_per_inference"], OTHER_COLOR)])
        bottom = 0.0
        for name, kwh, color in parts:
            ax.bar(i, kwh * factor, bottom=bottom, color=color, width=0.6,
                   label=None if name in labelled else name)
            labelled.add(name)
            bottom += kwh * factor
        mean, (low, high) = v["energy_kwh_per_inference"] * factor, v["energy_kwh_ci95"]
        ax.errorbar([i], [mean], yerr=[[mean - low * factor], [high * factor - mean]], fmt="none",
                    ecolor="black", capsize=4, linewidth=1)
    ax.set_xticks(range(len(variants)), names, fontsize=8)
    ax.set_ylabel(f"energy per inference ({unit})")
    ax.set_title("Energy per inference by phase (split by time: an estimate)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax.margins(y=0.2)
    ax.grid(axis="y", alpha=0.3)
    fig.text(0.01, -0.02, _energy_caption(report) + "; bars: 95 % interval of the total", fontsize=7,
             color="#555555")
    return _png(fig)


def confusion_matrices(report: dict) -> bytes | None:
    """One heat map per measured variant: counts, coloured by share of the true label's row."""
    variants = [v for v in report["variants"] if v["n"]]
    if not variants:
        return None
    several = tables.several_models(report)
    cols = min(3, len(variants))
    rows = (len(variants) + cols - 1) // cols
    fig = Figure(figsize=(3.4 * cols, 3.1 * rows))
    for k, v in enumerate(variants):
        ax = fig.add_subplot(rows, cols, k + 1)
        c = v["confusion"]
        share = [[x / max(sum(row), 1) for x in row] for row in c["matrix"]]
        ax.imshow(share, cmap="Greens", vmin=0, vmax=1)
        for i, row in enumerate(c["matrix"]):
            for j, x in enumerate(row):
                ax.text(j, i, str(x), ha="center", va="center", fontsize=9,
                        color="white" if share[i][j] > 0.6 else "black")
        ax.set_xticks(range(len(c["columns"])), [tables.label_text(x) for x in c["columns"]], fontsize=7,
                      rotation=30, ha="right")
        ax.set_yticks(range(len(c["labels"])), c["labels"], fontsize=7)
        ax.set_title(f"{tables.variant_name(v, several)} (n={v['n']})", fontsize=9)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def all_figures(report: dict) -> dict[str, bytes]:
    """name -> PNG bytes, for the figures the data allows."""
    made = {"co2_vs_f1": co2_vs_f1(report), "energy_by_phase": energy_by_phase(report),
            "confusion_matrices": confusion_matrices(report)}
    return {name: png for name, png in made.items() if png is not None}
