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
from matplotlib.text import Text

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
    """'f16*† (16 bpw from q4_1)': the name with its marks, bits per weight and where the weights come from."""
    bits = (v.get("model_info") or {}).get("bits_per_weight")
    parts = [f"{bits:.3g} bpw" if bits else "",
             f"from {v['weights_from']}" if v.get("weights_origin") in ("upcast", "requantized") else ""]
    detail = " ".join(p for p in parts if p)
    return tables.variant_name(v, models) + (f" ({detail})" if detail else "")


# Where a label may go from its marker, in order of preference: (dx, dy) in points. Sideways past
# the error-bar caps and above or below the marker, so no position sits on the point's own bars.
LABEL_SLOTS = [(10, 8), (-10, 8), (10, -8), (-10, -8)] + [
    (dx, dy) for dy in (22, -22, 36, -36, 50, -50, 64, -64, 78, -78) for dx in (10, -10, 40, -40)]


def _segment_points(ax, xs, ys, n: int = 40) -> list[tuple[float, float]]:
    """Display-coordinate points along a polyline given in data units (obstacles for labels)."""
    import numpy as np

    pts = []
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        for t in np.linspace(0.0, 1.0, n):
            pts.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
    return [tuple(p) for p in ax.transData.transform(pts)] if pts else []


def _place_labels(fig: Figure, ax, items: list[dict], obstacles: list[tuple[float, float]]) -> None:
    """Annotate each item {text, xy, color} at the first slot of LABEL_SLOTS whose text box stays
    inside the axes and touches no obstacle point (markers, error bars, Pareto and reference lines)
    and no label placed before; when none is free, at the slot with the fewest collisions."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    inside = ax.get_window_extent(renderer)
    boxes = []

    def collisions(box) -> int:
        out_of_axes = not (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0
                           and box.y1 <= inside.y1)
        return (100 * out_of_axes + sum(box.contains(px, py) for px, py in obstacles)
                + 100 * sum(box.overlaps(b) for b in boxes))

    def annotate(item: dict, dx: int, dy: int):
        # a label moved away from its point gets a thin leader line back to it
        leader = dict(arrowstyle="-", color="#999999", linewidth=0.6, shrinkA=0, shrinkB=5) if abs(dy) > 8 else None
        ann = ax.annotate(item["text"], item["xy"], textcoords="offset points", xytext=(dx, dy), fontsize=8,
                          ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top",
                          color=item["color"], zorder=4, arrowprops=leader)
        ann.update_positions(renderer)
        return ann, Text.get_window_extent(ann, renderer).padded(2)   # the text alone, not its leader

    for item in items:
        best = None
        for dx, dy in LABEL_SLOTS:
            ann, box = annotate(item, dx, dy)
            hits = collisions(box)
            ann.remove()
            if best is None or hits < best[0]:
                best = (hits, dx, dy)
            if hits == 0:
                break
        ann, box = annotate(item, best[1], best[2])
        boxes.append(box)


def co2_vs_f1(report: dict) -> bytes | None:
    """One point per variant: x CO2e per inference, y weighted F1, both with 95 % interval bars; the
    Pareto front, the majority-class and uniform-random F1 as reference lines; the F1 axis from 0."""
    fig = co2_vs_f1_figure(report)
    return None if fig is None else _png(fig)


def co2_vs_f1_figure(report: dict) -> Figure | None:
    """The Figure behind co2_vs_f1 (for tests that check where its labels went)."""
    variants = [v for v in _measured(report) if v["f1_weighted"] is not None]
    if not variants:
        return None
    unit, factor = units.pick_unit([v["co2_kg_per_inference"] for v in variants], units.CO2_UNITS)
    models = sorted({v["model"] for v in variants})
    several = len(models) > 1
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    xs = [v["co2_kg_per_inference"] * factor for v in variants]
    bars: list[tuple[list[float], list[float]]] = []          # error-bar segments, for label placement
    for i, v in enumerate(variants):
        color = COLORS[models.index(v["model"]) % len(COLORS)]
        x, y = xs[i], v["f1_weighted"]
        low, high = (c * factor for c in v["co2_kg_ci95"])
        f_low, f_high = v.get("f1_weighted_ci95") or (None, None)
        yerr = [[y - f_low], [f_high - y]] if f_low is not None else None
        ax.errorbar([x], [y], xerr=[[x - low], [high - x]], yerr=yerr, fmt="none", ecolor=color, alpha=0.6,
                    capsize=3)
        bars.append(([low, high], [y, y]))
        if f_low is not None:
            bars.append(([x, x], [f_low, f_high]))
        ax.scatter([x], [y], s=70, color=color if v.get("on_pareto_front") else "white", edgecolors=color,
                   linewidths=1.5, marker="*" if v["is_baseline"] else "o", zorder=3)
    front = sorted((v["co2_kg_per_inference"] * factor, v["f1_weighted"]) for v in variants if v.get("on_pareto_front"))
    lines: list[tuple[list[float], list[float]]] = []
    if front:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", linestyle="--", color="#555555", linewidth=1,
                label="Pareto front (filled: no variant has less CO2e and a higher F1)")
        for (x0, y0), (x1, _) in zip(front, front[1:]):
            lines.append(([x0, x1], [y0, y0]))
        for (_, y0), (x1, y1) in zip(front, front[1:]):
            lines.append(([x1, x1], [y0, y1]))
    base = report.get("baselines")
    refs = []
    if base:
        refs = [base["majority"]["f1_weighted"], base["uniform_random"]["f1_weighted"]]
        ax.axhline(refs[0], color="#b2182b", linestyle=":", linewidth=1.2,
                   label=f"always '{base['majority']['answer']}' (majority class): {refs[0]:.2f}")
        ax.axhline(refs[1], color="#e08214", linestyle="-.", linewidth=1,
                   label=f"uniform random answer (expected): {refs[1]:.2f}")
    ax.margins(x=0.3)
    ax.set_ylim(0, 1.0)
    x_lo, x_hi = ax.get_xlim()
    obstacles = [p for xs_, ys_ in bars + lines + [([x_lo, x_hi], [r, r]) for r in refs]
                 for p in _segment_points(ax, xs_, ys_)]
    for i, v in enumerate(variants):       # markers: a disc of about 9 px around each point
        cx, cy = ax.transData.transform((xs[i], v["f1_weighted"]))
        obstacles += [(cx + dx, cy + dy) for dx in (-9, 0, 9) for dy in (-9, 0, 9)]
    order = sorted(range(len(variants)), key=lambda i: -variants[i]["f1_weighted"])
    _place_labels(fig, ax, [{"text": _label(variants[i], several), "xy": (xs[i], variants[i]["f1_weighted"]),
                             "color": "#b2182b" if variants[i].get("constant_answer") else "black"}
                            for i in order], obstacles)
    ax.set_xlabel(f"CO2e per inference ({unit}); bars: 95 % intervals")
    ax.set_ylabel("F1 (weighted); bars: 95 % bootstrap interval")
    ax.set_title("CO2e per inference vs F1, per variant (*: baseline)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        # below the axes: never over a point or a label
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=7, ncol=1, frameon=False)
    marks = "† upcast / ‡ re-quantized from the source file; ! no better than a constant answer"
    fig.text(0.01, -0.10, _energy_caption(report) + "\n" + marks, fontsize=7, color="#555555", va="top")
    return fig


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


def drift_over_time(report: dict) -> bytes | None:
    """A sustained run: energy and latency per inference per minute, one line per variant."""
    section = report.get("drift")
    if not section or not any(section["per_minute"].values()):
        return None
    series = section["per_minute"]
    unit, factor = units.pick_unit([m["energy_kwh_per_inference"] for ms in series.values() for m in ms],
                                   units.ENERGY_UNITS)
    fig = Figure(figsize=(7.0, 5.2))
    energy_ax, latency_ax = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    for k, (name, minutes) in enumerate(series.items()):
        xs = [m["minute"] for m in minutes]
        color = COLORS[k % len(COLORS)]
        for ax, key, ci, scale in ((energy_ax, "energy_kwh_per_inference", "energy_kwh_ci95", factor),
                                   (latency_ax, "latency_s_per_inference", "latency_s_ci95", 1.0)):
            ax.plot(xs, [m[key] * scale for m in minutes], "o-", color=color, label=name)
            ax.fill_between(xs, [m[ci][0] * scale for m in minutes], [m[ci][1] * scale for m in minutes],
                            color=color, alpha=0.15, linewidth=0)
    energy_ax.set_ylabel(f"energy / inference ({unit})", fontsize=8)
    latency_ax.set_ylabel("latency / inference (s)", fontsize=8)
    latency_ax.set_xlabel("minute of the run", fontsize=8)
    flag = {True: "throttling flagged", False: "no throttling flagged", None: "throttling undecided"}
    energy_ax.set_title(f"Sustained run: per-minute means ({flag[section['throttled']]})", fontsize=10)
    energy_ax.legend(fontsize=7)
    for ax in (energy_ax, latency_ax):
        ax.grid(alpha=0.3)
    fig.text(0.01, -0.02, _energy_caption(report) + "; bands: 95 % interval of each minute's mean",
             fontsize=7, color="#555555")
    return _png(fig)


def all_figures(report: dict) -> dict[str, bytes]:
    """name -> PNG bytes, for the figures the data allows."""
    made = {"co2_vs_f1": co2_vs_f1(report), "energy_by_phase": energy_by_phase(report),
            "confusion_matrices": confusion_matrices(report), "drift": drift_over_time(report)}
    return {name: png for name, png in made.items() if png is not None}
