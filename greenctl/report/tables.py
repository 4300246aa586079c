"""What the report's tables show, once, for every human format (terminal,
Markdown, HTML). Pure: a report dict in, plain table specs out.

Each numeric cell keeps the report key and raw value it was printed from, so
the HTML can carry them as data attributes and a test can check that what a
reader sees is what the JSON says. Cost columns share one unit, named in the
column, so rows compare by eye.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from greenctl.report import units
from greenctl.report.metrics import UNPARSED
from shared.accounting import measured_share_note


@dataclass(frozen=True)
class Column:
    name: str
    unit: str = ""              # shown after the name; "" for counts and scores
    left: bool = False          # text columns align left, numbers right
    help: str = ""              # what a terse header means (HTML shows it on hover)

    @property
    def header(self) -> str:
        return f"{self.name} {self.unit}".strip()


@dataclass(frozen=True)
class Cell:
    text: str
    key: str | None = None      # the report key of the variant this number comes from
    value: Any = None           # its raw value (base units: kg, kWh, s)


@dataclass(frozen=True)
class TableSpec:
    title: str
    columns: list[Column]
    rows: list[list[Cell]] = field(default_factory=list)
    row_variants: list[int] = field(default_factory=list)   # index into report["variants"] per row


# Marks after a variant's name; notes() says what each means.
MARKS = {"upcast": "†", "requantized": "‡"}
CONSTANT_MARK = "!"


def variant_name(v: dict, with_model: bool = False) -> str:
    """The variant's name, starred when it is its model's baseline, † when upcast from a lower-bit
    source file, ‡ when re-quantized from it, ! when no better than a constant answer."""
    name = (v["variant"] + ("*" if v["is_baseline"] else "") + MARKS.get(v.get("weights_origin") or "", "")
            + (CONSTANT_MARK if v.get("constant_answer") else ""))
    return f"{v['model']} {name}" if with_model else name


def several_models(report: dict) -> bool:
    return len({v["model"] for v in report["variants"]}) > 1


def label_text(label: str) -> str:
    return "no label" if label == UNPARSED else label


def cost_units(variants: list[dict]) -> tuple[tuple[str, float], tuple[str, float]]:
    """One (unit, factor) for energy and one for CO2, for a whole column."""
    energy = units.pick_unit([v["energy_kwh_per_inference"] for v in variants], units.ENERGY_UNITS)
    co2 = units.pick_unit([v["co2_kg_per_inference"] for v in variants], units.CO2_UNITS)
    return energy, co2


def _name(v: dict, models: bool) -> Cell:
    return Cell(variant_name(v, models))


def _versus_base(v: dict, key: str, text: str) -> Cell:
    return Cell("base") if v["is_baseline"] else Cell(text, key, v.get(key))


def _spec(title: str, columns: list[Column], report: dict, row) -> TableSpec:
    models = several_models(report)
    variants = report["variants"]
    return TableSpec(title, columns, [row(v, models) for v in variants], list(range(len(variants))))


def quality(report: dict) -> TableSpec:
    """The seed paper's Table III columns, plus counts, macro F1 and the change against the baseline."""
    def row(v, models):
        score = lambda key: Cell(units.ratio(v[key]), key, v[key])  # noqa: E731
        return [_name(v, models), Cell(str(v["n"]), "n", v["n"]), Cell(str(v["n_failed"]), "n_failed", v["n_failed"]),
                Cell(str(v["n_unparsed"]), "n_unparsed", v["n_unparsed"]), score("accuracy"),
                score("precision_weighted"), score("recall_weighted"), score("f1_weighted"),
                score("precision_macro"), score("recall_macro"), score("f1_macro"),
                _versus_base(v, "f1_weighted_change_vs_baseline",
                             units.delta(v.get("f1_weighted_change_vs_baseline")))]
    title = "Quality (w: weighted average, as the seed paper's Table III; mac: macro average)"
    if not several_models(report) and report["variants"]:
        title += f" of {report['variants'][0]['model']}"
    columns = [Column("variant", left=True), Column("n", help="finished inferences"),
               Column("fail", help="failed tasks (not scored)"),
               Column("unp", help="answers naming no label (scored as wrong)"), Column("acc", help="accuracy"),
               Column("P w", help="precision, weighted"), Column("R w", help="recall, weighted"),
               Column("F1 w", help="F1, weighted"), Column("P mac", help="precision, macro"),
               Column("R mac", help="recall, macro"), Column("F1 mac", help="F1, macro"),
               Column("ΔF1", help="weighted F1 minus the baseline variant's")]
    spec = _spec(title, columns, report, row)
    base = report.get("baselines")
    if base:   # reference rows: no variant behind them, so no data keys
        for name, b in ((f"always {base['majority']['answer']}", base["majority"]),
                        ("random (expected)", base["uniform_random"])):
            spec.rows.append([Cell(name), Cell(str(base["n"])), Cell(units.DASH), Cell(units.DASH)]
                             + [Cell(units.ratio(b[k])) for k in QUALITY_KEYS] + [Cell(units.DASH)])
            spec.row_variants.append(-1)
    return spec


QUALITY_KEYS = ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "precision_macro",
                "recall_macro", "f1_macro")


def _short(x: float, signed: bool = False) -> str:
    """A score in 2 decimals without the leading zero, to keep interval columns narrow: .54, -.05."""
    text = f"{x:+.2f}" if signed else f"{x:.2f}"
    return text.replace("0.", ".", 1) if abs(x) < 1 else text


def _span(pair, fmt=_short) -> str:
    low, high = pair if pair else (None, None)
    return units.DASH if low is None else f"{fmt(low)}–{fmt(high)}"


def quality_intervals(report: dict) -> TableSpec:
    """95 % intervals of every quality figure (stratified bootstrap over samples)."""
    def row(v, models):
        return [_name(v, models)] + [Cell(_span(v.get(f"{k}_ci95")), f"{k}_ci95", v.get(f"{k}_ci95"))
                                     for k in QUALITY_KEYS]
    columns = [Column("variant", left=True), Column("acc"), Column("P w"), Column("R w"), Column("F1 w"),
               Column("P mac"), Column("R mac"), Column("F1 mac")]
    return _spec("Quality: 95 % intervals (stratified bootstrap over samples)", columns, report, row)


def _paired_spec(title: str, columns: list[Column], report: dict, row) -> TableSpec:
    models = several_models(report)
    picked = [(i, v) for i, v in enumerate(report["variants"]) if v.get("vs_baseline")]
    return TableSpec(title, columns, [row(v, models) for _, v in picked], [i for i, _ in picked])


def paired_quality(report: dict) -> TableSpec:
    """ΔF1 against the baseline on the same samples, its paired interval, McNemar's p, the verdict."""
    def delta(v, m):
        c = v["vs_baseline"]
        return [Cell(units.delta(c[f"{m}_delta"]), f"vs_baseline.{m}_delta", c[f"{m}_delta"]),
                Cell(_span(c[f"{m}_delta_ci95"], lambda x: _short(x, True)), f"vs_baseline.{m}_delta_ci95",
                     c[f"{m}_delta_ci95"])]

    def row(v, models):
        c = v["vs_baseline"]
        verdicts = {c["f1_macro_verdict"], c["f1_weighted_verdict"]}
        return [_name(v, models), Cell(c["baseline"]), Cell(str(c["n_paired"]), "vs_baseline.n_paired", c["n_paired"]),
                *delta(v, "f1_macro"), *delta(v, "f1_weighted"),
                Cell(f"{c['mcnemar']['pvalue']:.2g}", "vs_baseline.mcnemar.pvalue", c["mcnemar"]["pvalue"]),
                Cell("/".join(sorted(verdicts)))]
    columns = [Column("variant", left=True), Column("vs", left=True), Column("pairs", help="samples both answered"),
               Column("ΔF1 mac", help="macro F1 minus the baseline's"),
               Column("95 %", help="paired bootstrap interval of ΔF1 mac"),
               Column("ΔF1 w", help="weighted F1 minus the baseline's"),
               Column("95 %", help="paired bootstrap interval of ΔF1 w"),
               Column("p", help="McNemar's exact test on per-sample correctness"), Column("F1 verdict", left=True)]
    return _paired_spec("Paired with the baseline on the same samples: F1", columns, report, row)


def paired_cost(report: dict) -> TableSpec:
    """Energy, CO2e and latency of a variant over its baseline's on the same samples."""
    def ratio(v, name):
        c = v["vs_baseline"]
        r, ci = c[f"{name}_ratio"], c[f"{name}_ratio_ci95"]
        text = units.DASH if r is None or ci[0] is None else f"{r:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
        return Cell(text, f"vs_baseline.{name}_ratio", r)

    def row(v, models):
        return [_name(v, models), Cell(v["vs_baseline"]["baseline"]), ratio(v, "energy"), ratio(v, "co2"),
                ratio(v, "latency")]
    columns = [Column("variant", left=True), Column("vs", left=True), Column("energy ×"), Column("CO2e ×"),
               Column("latency ×")]
    return _paired_spec("Paired with the baseline: cost ratio (variant / baseline, 95 % interval)", columns,
                        report, row)


def cost(report: dict) -> TableSpec:
    (e_unit, e_f), (c_unit, c_f) = cost_units(report["variants"])

    def row(v, models):
        return [_name(v, models),
                Cell(units.scaled(v["energy_kwh_per_inference"], e_f), "energy_kwh_per_inference",
                     v["energy_kwh_per_inference"]),
                Cell(units.scaled(v["co2_kg_per_inference"], c_f), "co2_kg_per_inference", v["co2_kg_per_inference"]),
                _versus_base(v, "co2_change_vs_baseline", units.percent_change(v.get("co2_change_vs_baseline"))),
                Cell(units.seconds(v["latency_s_mean"]), "latency_s_mean", v["latency_s_mean"]),
                Cell(v["energy_method"] or units.DASH, "energy_method", v["energy_method"])]
    columns = [Column("variant", left=True), Column("energy", e_unit), Column("CO2e", c_unit),
               Column("CO2e vs base"), Column("latency"), Column("energy method", left=True)]
    return _spec("Cost per inference (mean)", columns, report, row)


def intervals(report: dict) -> TableSpec:
    (e_unit, e_f), (c_unit, c_f) = cost_units(report["variants"])

    def span(v, key, fmt):
        low, high = v[key]
        return Cell(units.DASH if low is None else f"{fmt(low)} – {fmt(high)}", key, v[key])

    def row(v, models):
        return [_name(v, models), span(v, "energy_kwh_ci95", lambda x: units.scaled(x, e_f)),
                span(v, "co2_kg_ci95", lambda x: units.scaled(x, c_f)), span(v, "latency_s_ci95", units.seconds)]
    columns = [Column("variant", left=True), Column("energy", e_unit), Column("CO2e", c_unit), Column("latency")]
    return _spec("95 % intervals of the mean per inference", columns, report, row)


def work(report: dict) -> TableSpec:
    """Tokens and time per inference by phase, and the energy split those times imply (an estimate)."""
    (e_unit, e_f), _ = cost_units(report["variants"])

    def row(v, models):
        split = v.get("energy_split") or {}
        return [_name(v, models),
                Cell(units.mean_or_dash(v["prompt_tokens_mean"]), "prompt_tokens_mean", v["prompt_tokens_mean"]),
                Cell(units.mean_or_dash(v["prompt_tokens_uncached_mean"]), "prompt_tokens_uncached_mean",
                     v["prompt_tokens_uncached_mean"]),
                Cell(units.mean_or_dash(v["output_tokens_mean"], 1), "output_tokens_mean", v["output_tokens_mean"]),
                Cell(units.seconds(v["prompt_s_mean"]), "prompt_s_mean", v["prompt_s_mean"]),
                Cell(units.seconds(v["decode_s_mean"]), "decode_s_mean", v["decode_s_mean"]),
                Cell(units.scaled(split.get("prompt_kwh_per_inference"), e_f), "energy_split.prompt_kwh_per_inference",
                     split.get("prompt_kwh_per_inference")),
                Cell(units.scaled(split.get("decode_kwh_per_inference"), e_f), "energy_split.decode_kwh_per_inference",
                     split.get("decode_kwh_per_inference"))]
    columns = [Column("variant", left=True), Column("tok in"), Column("uncached"), Column("out"), Column("prompt"),
               Column("decode"), Column("prompt", e_unit), Column("decode", e_unit)]
    return _spec("Work per inference (mean); energy by phase is an estimate", columns, report, row)


def confusion(report: dict, index: int) -> TableSpec:
    v = report["variants"][index]
    c = v["confusion"]
    columns = [Column("true \\ predicted", left=True)] + [Column(label_text(col)) for col in c["columns"]]
    rows = [[Cell(label)] + [Cell(str(x), f"confusion.{label}.{col}", x) for col, x in zip(c["columns"], row)]
            for label, row in zip(c["labels"], c["matrix"])]
    return TableSpec(f"{variant_name(v, several_models(report))}: confusion matrix", columns, rows,
                     [index] * len(rows))


def totals(report: dict) -> list[tuple[str, str, str, Any]]:
    """(what, text, key, value) lines of the experiment's totals."""
    tot = report["totals"]
    return [
        ("energy", f"{tot['energy_kwh']:.3g} kWh ({units.energy(tot['energy_kwh'])})", "energy_kwh", tot["energy_kwh"]),
        ("CO2e", f"{tot['co2_kg']:.3g} kg ({units.co2(tot['co2_kg'])})", "co2_kg", tot["co2_kg"]),
        ("inference time", units.seconds(tot["inference_s"]), "inference_s", tot["inference_s"]),
        ("wall time", units.seconds(tot["wall_s"]), "wall_s", tot["wall_s"]),
        ("worker hours", f"{units.number(tot['worker_hours'])} h on {len(tot['workers'])} worker(s)",
         "worker_hours", tot["worker_hours"]),
    ]


def not_counted(exp: dict) -> str:
    """The tasks a partial report leaves out, e.g. "6 queued, 6 running"."""
    parts = [f"{exp.get(f'n_{state}', 0)} {state}" for state in ("queued", "running", "cancelled")
             if exp.get(f"n_{state}")]
    return ", ".join(parts) or "none"


def verdicts(report: dict) -> list[str]:
    """The report's verdicts in words: one per variant compared with its baseline, then the flags."""
    return list(report.get("verdicts") or [])


def status_line(report: dict) -> str:
    exp = report["experiment"]
    state = (f"PARTIAL: only the finished tasks are counted, not the {not_counted(exp)}"
             if exp["partial"] else exp["status"])
    not_run = (report.get("stop") or {}).get("tasks_not_run")
    stopped = f", {not_run} not run (stopped when decided)" if not_run else ""
    return (f"Experiment {exp['id']} '{exp['name']}': {exp['n_done']}/{exp['n_tasks']} done, "
            f"{exp['n_failed']} failed{stopped} ({state})")


def nothing_yet(report: dict) -> str | None:
    """What to say instead of empty tables when no task has a result, or None."""
    if any(v["n"] for v in report["variants"]):
        return None
    exp = report["experiment"]
    if exp.get("n_failed"):
        return f"Nothing measured: every finished task of experiment {exp['id']} failed; the reasons follow."
    waiting = not_counted(exp)
    return (f"Nothing to report yet: no task of experiment {exp['id']} has finished ({waiting}). "
            + ("`greenctl resume " + str(exp["id"]) + "` hands its cancelled tasks out again."
               if exp.get("n_cancelled") else f"Follow it with `greenctl status {exp['id']} --watch`."))


def failure_notes(report: dict) -> list[str]:
    models = several_models(report)
    return [f"{variant_name(v, models)}: {f['tasks']} failed: {f['reason']}"
            for v in report["variants"] for f in v.get("failures", [])]


def notes(report: dict) -> list[str]:
    """Footnotes every human format prints: baseline, unmeasured variants, Pareto front, energy honesty."""
    models = several_models(report)
    out = ["* baseline variant of its model; 'vs base' compares with it (CO2e relative, F1 absolute)."]
    for v in report["variants"]:
        if v.get("weights_origin") in MARKS:
            out.append(f"{MARKS[v['weights_origin']]} {v['variant']}: {v['weights_note']}.")
    flagged = [variant_name(v, models) for v in report["variants"] if v.get("constant_answer")]
    if flagged:
        out.append(f"{CONSTANT_MARK} no better than a constant answer: {', '.join(flagged)} (its F1 interval "
                   f"reaches the always-majority figure, or one answer for >= 90 % of samples).")
    if report.get("statistics"):
        st = report["statistics"]
        out.append(f"Quality intervals: {st['quality_interval']}. Paired F1 differences: the same resampling "
                   f"on the samples both variants answered; cost ratios: {st['paired_ratio']}; "
                   f"{st['mcnemar']}.")
    out += failure_notes(report)
    failed_only = [variant_name(v, models) for v in report["variants"] if not v["n"] and v["n_failed"]]
    if failed_only:
        out.append(f"Failed, nothing measured: {', '.join(failed_only)} (every finished task failed; the reasons "
                   "are above).")
    unmeasured = [variant_name(v, models) for v in report["variants"] if not v["n"] and not v["n_failed"]]
    if unmeasured:
        out.append(f"Not measured yet (no finished task): {', '.join(unmeasured)}.")
    front = [variant_name(v, models) for v in report["variants"] if v.get("on_pareto_front")]
    if front:
        out.append(f"Pareto front (no other variant has both less CO2e per inference and a higher weighted F1; "
                   f"on point estimates, so see the intervals and verdicts): {', '.join(front)}.")
    out += [f"Energy method '{m}': {note}." for m, note in report.get("energy_methods", {}).items()]
    out += [f"{variant_name(v, models)} energy: {note}." for v in report["variants"]
            if (note := measured_share_note(v.get("energy_measured_share"), v.get("energy_detail", [])))]
    if any(v.get("energy_split") for v in report["variants"]):
        out.append("Prompt/decode energy is an estimate: each task's energy split in proportion to its "
                   "prompt and decode time (the meter sees whole tasks, not phases).")
    if report.get("drift"):    # a sustained run (greenctl.report.drift)
        from greenctl.report.drift import line
        out.append(line(report["drift"]))
    return out
