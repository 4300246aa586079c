"""The same (model, variant) across experiments and machines, side by side. Pure:
report dicts in, a comparison dict and its table out.

A run is one variant of one experiment on one hardware profile (a report's
`by_machine` entry), so one experiment that ran a variant on two kinds of
machine gives two runs. Changes are against the first run of each variant, in
the order the experiments were given.

One experiment whose results came from several hosts (`host_comparison`): per
variant and host (the HOST of a result's worker "HOST:queue", so two laptops of
one hardware profile stay apart) quality with its interval and cost, and each
host against a baseline host, paired on the samples both answered (a task runs
once, so one experiment pairs a sample's repeats across hosts): the statistics
are greenctl.report.paired's (shared.verdicts).

Several experiments that ran the same (model, engine, variant) — typically one spec submitted
once per host (`experiment_comparison`): each experiment's run against the baseline
experiment's, paired on (sample_index, repeat) after checking that the task texts there are
equal, or on the text itself when the experiments sampled different rows; the same statistics
and verdict words as across hosts.
"""
from __future__ import annotations

import math
from collections import defaultdict

from rich import box
from rich.table import Table

from greenctl.report import metrics, paired, units
from greenctl.report.build import MEASURED_METHODS
from shared.accounting import measured_share

RUN_KEYS = ("n", "accuracy", "f1_weighted", "f1_macro", "energy_kwh_per_inference", "co2_kg_per_inference",
            "latency_s_mean", "energy_method", "workers")


def comparison(reports: list[dict], rows: dict[int, list[dict]] | None = None) -> dict:
    """Runs side by side; `rows` (experiment id -> greenctl.queries.host_rows) adds each run's
    F1 intervals (f1_weighted_ci95, f1_macro_ci95: [low, high], fractions)."""
    variants: dict[tuple[str, str, str], dict] = {}
    for report in reports:
        exp = report["experiment"]
        intervals = run_intervals((rows or {}).get(exp["id"], []), report["labels"])
        for v in report["variants"]:
            key = (v["model"], v["engine"], v["variant"])
            entry = variants.setdefault(key, {"model": v["model"], "engine": v["engine"], "variant": v["variant"],
                                              "runs": []})
            for machine in v.get("by_machine", []):
                ci = intervals.get((*key, machine["hardware_profile"]), {})
                entry["runs"].append({"experiment_id": exp["id"], "experiment_name": exp["name"],
                                      "partial": exp["partial"], "hardware_profile": machine["hardware_profile"],
                                      **{k: machine.get(k) for k in RUN_KEYS},
                                      "f1_weighted_ci95": ci.get("f1_weighted", [None, None]),
                                      "f1_macro_ci95": ci.get("f1_macro", [None, None])})
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
              collapse_padding=True, pad_edge=wide)
    columns = (("variant", "experiment", "machine", "n", "acc", "F1 w [95 %]", "F1 mac [95 %]", f"energy {e_unit}",
                f"CO2e {c_unit}", "CO2e vs first", "ΔF1 w", "latency", "energy method") if wide else
               ("variant", "exp", "machine", "n", "F1 w", "95 %", f"CO2e {c_unit}", "vs 1st", "ΔF1 w", "latency"))
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
                          _interval(run["f1_weighted"], run.get("f1_weighted_ci95", [None])),
                          _interval(run["f1_macro"], run.get("f1_macro_ci95", [None])),
                          units.scaled(run["energy_kwh_per_inference"], e_f),
                          units.scaled(run["co2_kg_per_inference"], c_f), first, df1,
                          units.seconds(run["latency_s_mean"]), run["energy_method"] or units.DASH)
            else:
                t.add_row(name if i == 0 else "", str(run["experiment_id"]) + ("*" if run["partial"] else ""),
                          run["hardware_profile"], str(run["n"]), units.ratio(run["f1_weighted"]),
                          _span(run.get("f1_weighted_ci95", [None, None]), short=True),
                          units.scaled(run["co2_kg_per_inference"], c_f), first, df1,
                          units.seconds(run["latency_s_mean"]))
        t.add_section()
    return t


def not_run(data: dict) -> list[str]:
    """Variants that no given experiment has a finished task of."""
    return [f"{v['model']} {v['variant']}" for v in data["variants"] if not v["runs"]]


# -- intervals of each run --------------------------------------------------------------------------

def _samples(rows: list[dict]) -> paired.Samples:
    """Rows as paired.Samples, one entry per row (quality is scored on every row)."""
    s = paired.Samples()
    for r in rows:
        s.keys.append((r["sample_index"], r["repeat"]))
        s.y_true.append(r["label"])
        s.y_pred.append(r["prediction"])
        s.energy_kwh.append(r["energy_kwh"])
        s.co2_kg.append(r["co2_kg"])
        s.e2e_s.append(r["e2e_s"])
    return s


def run_intervals(rows: list[dict], labels: list[str]) -> dict[tuple[str, str, str, str], dict[str, list]]:
    """(model, engine, variant, hardware profile) -> {"f1_weighted": [lo, hi], "f1_macro": [lo, hi]}:
    the report's stratified bootstrap (paired.quality_intervals) on each run's rows."""
    groups: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["engine"], r["variant"], r["hardware_profile"] or "unknown")].append(r)
    out = {}
    for key, group in groups.items():
        row: dict = {}
        paired.quality_intervals(row, _samples(group), labels)
        out[key] = {m: row[f"{m}_ci95"] for m in paired.PAIR_METRICS}
    return out


# -- one experiment across hosts --------------------------------------------------------------------

MIN_PAIRED = 10     # fewer samples on both hosts than this: no verdict (a bootstrap of a handful is not one)


def host_of(worker: str) -> str:
    """The host of a result's worker: 'laptop-a:default' -> 'laptop-a' (a hostname has no ':')."""
    return worker.split(":", 1)[0]


def hosts_in(rows: list[dict]) -> list[str]:
    """The hosts that finished any of these rows, sorted by name."""
    return sorted({host_of(r["worker"]) for r in rows})


def keyed_samples(rows: list[dict], key) -> paired.Samples:
    """Rows as paired.Samples, one entry per pairing key (`key(row)`, a (int, int) tuple): the answer
    of the key's first row by (sample_index, repeat), the mean e2e time (s), energy (kWh) and CO2e (kg)
    of its valid rows. A key with no valid row is left out (its cost is not known)."""
    by_key: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r["sample_index"], r["repeat"])):
        by_key[key(r)].append(r)
    s = paired.Samples()
    for k, group in sorted(by_key.items()):
        timed = [r for r in group if r["valid"] is not False]
        if not timed:
            continue
        s.keys.append(k)
        s.y_true.append(group[0]["label"])
        s.y_pred.append(group[0]["prediction"])
        for attr in ("energy_kwh", "co2_kg", "e2e_s"):
            getattr(s, attr).append(sum(r[attr] for r in timed) / len(timed))
    return s


def per_sample(rows: list[dict]) -> paired.Samples:
    """One host's rows of one variant, one entry per sample (key (sample_index, 0)): the answer of
    its first repeat, the mean cost of its valid repeats (keyed_samples)."""
    return keyed_samples(rows, lambda r: (r["sample_index"], 0))


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def host_row(host: str, rows: list[dict], labels: list[str], cpu_model: str | None) -> dict:
    """One variant on one host: run_row's figures and the host's CPU model."""
    return {"host": host, **run_row(rows, labels), "cpu_model": cpu_model or None}


def run_row(rows: list[dict], labels: list[str]) -> dict:
    """One variant's rows (on one host, or of one experiment): n (rows), samples, accuracy and F1
    (fractions) with intervals and the constant-answer flag (paired.quality_intervals), latency (s),
    energy (kWh) and CO2e (kg) per inference over valid rows, energy method, measured share (0-1),
    profiles, queues."""
    timed = [r for r in rows if r["valid"] is not False]
    methods = sorted({r["energy_method"] for r in rows})
    out = {"n": len(rows), "n_samples": len({r["sample_index"] for r in rows}),
           "n_invalid": len(rows) - len(timed),
           **{k: v for k, v in metrics.classification([r["label"] for r in rows], [r["prediction"] for r in rows],
                                                       labels).items() if k in ("accuracy", "f1_weighted", "f1_macro")},
           "latency_s_mean": _mean([r["e2e_s"] for r in timed]),
           "energy_kwh_per_inference": _mean([r["energy_kwh"] for r in timed]),
           "co2_kg_per_inference": _mean([r["co2_kg"] for r in timed]),
           "energy_method": "+".join(methods) or None,
           "energy_measured": bool(methods) and all(m in MEASURED_METHODS for m in methods),
           "energy_measured_share": measured_share([(r["energy_measured_kwh"], r["energy_kwh"]) for r in timed]),
           "hardware_profiles": sorted({r["hardware_profile"] for r in rows if r["hardware_profile"]}),
           "queues": sorted({r["worker"].split(":", 1)[1] for r in rows if ":" in r["worker"]})}
    paired.quality_intervals(out, _samples(rows), labels)
    return out


def host_versus(base: dict, other: dict, base_rows: list[dict], other_rows: list[dict], labels: list[str],
                n_samples: int, tolerance: float) -> dict:
    """`other` host against `base` host on the samples both answered (paired.versus_baseline):
    latency/energy/CO2e ratio other/base with intervals, ΔF1 (other - base) with its interval and
    verdict, McNemar p; n_paired of n_samples; decided; the verdict line."""
    out = paired_versus(per_sample(base_rows), per_sample(other_rows), labels, tolerance,
                        {"host": other["host"], "baseline_host": base["host"], "n_samples": n_samples})
    out["verdict"] = host_verdict(out, base, other, tolerance)
    return out


def paired_versus(base: paired.Samples, other: paired.Samples, labels: list[str], tolerance: float,
                  head: dict) -> dict:
    """`head` (who is compared), min_paired, paired.versus_baseline's figures of other vs base
    (n_paired 0 when nothing pairs) and decided (MIN_PAIRED or more pairs and both ΔF1 resolved)."""
    comp = paired.versus_baseline(base, other, labels, tolerance)
    out = {**head, "min_paired": MIN_PAIRED, **(comp or {"n_paired": 0})}
    out["decided"] = bool(comp) and out["n_paired"] >= MIN_PAIRED and comp["decided"]
    return out


def host_comparison(report: dict, rows: list[dict], cpu_models: dict[str, str], baseline_host: str | None = None,
                    tolerance: float | None = None) -> dict:
    """Per variant and host, and each host vs the baseline host (default: the first by name), for one
    experiment's report and its rows (greenctl.queries.host_rows); cpu_models: hostname -> CPU model."""
    labels = report["labels"]
    tolerance = tolerance if tolerance is not None else (report.get("statistics") or {}).get(
        "f1_tolerance", paired.F1_TOLERANCE)
    names = hosts_in(rows)
    base = baseline_host or (names[0] if names else None)
    order = [base] + [h for h in names if h != base] if base else []
    by_variant: dict[tuple[str, str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_variant[(r["model"], r["engine"], r["variant"])][host_of(r["worker"])].append(r)
    variants = []
    for v in report["variants"]:
        key = (v["model"], v["engine"], v["variant"])
        groups = by_variant.get(key, {})
        n_samples = len({r["sample_index"] for g in groups.values() for r in g})
        hosts = [host_row(h, groups[h], labels, cpu_models.get(h)) for h in order if h in groups]
        versus, note = [], None
        if hosts and hosts[0]["host"] == base:
            versus = [host_versus(hosts[0], h, groups[base], groups[h["host"]], labels, n_samples, tolerance)
                      for h in hosts[1:]]
        elif hosts:
            note = f"{base} ran none of its samples: nothing to pair with (see --baseline-host)"
        variants.append({"model": v["model"], "engine": v["engine"], "variant": v["variant"],
                         "n_samples": n_samples, "hosts": hosts, "versus_baseline_host": versus, "note": note})
    return {"baseline_host": base, "tolerance": tolerance,
            "hosts": [{"host": h, "cpu_model": cpu_models.get(h) or None,
                       "hardware_profiles": sorted({r["hardware_profile"] for r in rows
                                                    if host_of(r["worker"]) == h and r["hardware_profile"]})}
                      for h in order],
            "variants": variants,
            "pairing": ("by sample: each host's answer to a sample is its first repeat's, its cost the mean of "
                        "its valid repeats; only samples both hosts answered count; no verdict with fewer than "
                        f"{MIN_PAIRED}"),
            "statistics": paired.methods(tolerance)}


# -- the same spec run once per host: several experiments ------------------------------------------

def paired_samples(base_rows: list[dict], other_rows: list[dict], base_texts: dict[int, str],
                   other_texts: dict[int, str]) -> tuple[paired.Samples, paired.Samples, dict]:
    """Two experiments' rows of one variant as paired.Samples with matching keys (keyed_samples),
    texts: sample_index -> the task's text. On (sample_index, repeat) when every (sample_index,
    repeat) both have carries the same text in both; otherwise on (the text, repeat): the
    experiments sampled different rows (or read different files). Also how: {"paired_on":
    "sample_index" | "text", "same_index": (sample_index, repeat) both have, "same_index_other_text":
    how many of those carry different texts}."""
    common = ({(r["sample_index"], r["repeat"]) for r in base_rows}
              & {(r["sample_index"], r["repeat"]) for r in other_rows})
    differ = sum(1 for i, _ in common if base_texts.get(i) != other_texts.get(i))
    how = {"paired_on": "sample_index", "same_index": len(common), "same_index_other_text": differ}
    if common and not differ:
        def index(r):
            return r["sample_index"], r["repeat"]
        return keyed_samples(base_rows, index), keyed_samples(other_rows, index), how
    ids: dict[str, int] = {}

    def by_text(texts: dict[int, str]):
        return lambda r: (ids.setdefault(texts.get(r["sample_index"], ""), len(ids)), r["repeat"])
    return (keyed_samples(base_rows, by_text(base_texts)), keyed_samples(other_rows, by_text(other_texts)),
            how | {"paired_on": "text"})


def run_name(run: dict) -> str:
    """'exp 8 (laptop-b)': an experiment's run of a variant and the host(s) it ran on."""
    hosts = run["hosts"]
    shown = ", ".join(hosts[:2]) + (f" +{len(hosts) - 2}" if len(hosts) > 2 else "")
    return f"exp {run['experiment_id']}" + (f" ({shown})" if hosts else "")


def experiment_versus(base: dict, other: dict, base_rows: list[dict], other_rows: list[dict],
                      base_texts: dict[int, str], other_texts: dict[int, str], labels: list[str],
                      tolerance: float) -> dict:
    """`other` experiment's run of a variant against `base`'s, paired on the samples both ran
    (paired_samples, paired_versus): n_paired of n_samples (base's) and n_samples_other, how they
    were matched, the ratios, ΔF1, McNemar p, decided and the verdict line."""
    sb, so, how = paired_samples(base_rows, other_rows, base_texts, other_texts)
    out = paired_versus(sb, so, labels, tolerance,
                        {"experiment_id": other["experiment_id"], "baseline_experiment_id": base["experiment_id"],
                         "hosts": other["hosts"], "baseline_hosts": base["hosts"], "n_samples": len(sb.keys),
                         "n_samples_other": len(so.keys),
                         "repeats": max([k[1] for k in sb.keys + so.keys], default=0) + 1, **how})
    out["verdict"] = experiment_verdict(out, base, other, tolerance)
    return out


def experiment_verdict(comp: dict, base: dict, other: dict, tolerance: float) -> str:
    """One line in words for an experiment's run against the baseline experiment's, naming the
    samples paired and how they were matched."""
    b, o = run_name(base), run_name(other)
    head, n, nb, no = f"{o} vs {b}", comp["n_paired"], comp["n_samples"], comp["n_samples_other"]
    unit = "samples" if comp["repeats"] == 1 else "(sample, repeat) pairs"
    if comp["paired_on"] == "text":
        matched = (f"matched on the text: {comp['same_index_other_text']} of the {comp['same_index']} "
                   f"(sample_index, repeat) both have carry different texts" if comp["same_index"] else
                   "matched on the text: no sample_index in common")
    else:
        matched = "matched on (sample_index, repeat), texts equal"
    undecided = {0: f"they ran different samples ({matched}, and no text is in both), so nothing is paired; "
                    f"submit the same spec (dataset, sample, seed) once per host.",
                 1: f"only {n} {unit} in common ({matched}; of {nb} and {no}); a paired verdict needs "
                    f"{MIN_PAIRED} or more."}
    where = f"on the same {n} {unit}" if n == nb == no else f"on the {n} {unit} both ran (of {nb} and {no})"
    if comp["paired_on"] == "text":
        where += f" ({matched}: the experiments sampled different rows)"
    return decided_line(head, where, undecided, f"exp {other['experiment_id']}", comp, base, other, (b, o),
                        tolerance)


def experiment_comparison(reports: list[dict], rows: dict[int, list[dict]], texts: dict[int, dict[int, str]],
                          cpu_models: dict[str, str], baseline: int | None = None,
                          tolerance: float | None = None) -> dict:
    """The same (model, engine, variant) in several experiments (typically one spec submitted once per
    host): per variant present in two or more, each experiment's run (run_row, its hosts and their
    CPU models) and each run vs the baseline experiment's (default: the first given), paired on the
    samples both ran. rows: experiment id -> greenctl.queries.host_rows; texts: experiment id ->
    sample_index -> text (greenctl.queries.sample_texts); cpu_models: hostname -> CPU model."""
    by_id = {r["experiment"]["id"]: r for r in reports}
    base_id = baseline if baseline is not None else reports[0]["experiment"]["id"]
    order = [base_id] + [i for i in dict.fromkeys(by_id) if i != base_id]
    labels = list(dict.fromkeys(label for i in order for label in by_id[i]["labels"]))
    tolerance = tolerance if tolerance is not None else (by_id[base_id].get("statistics") or {}).get(
        "f1_tolerance", paired.F1_TOLERANCE)
    groups: dict[tuple[str, str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for i in order:
        for r in rows.get(i, []):
            groups[(r["model"], r["engine"], r["variant"])][i].append(r)
    variants, single = [], []
    for key in dict.fromkeys((v["model"], v["engine"], v["variant"]) for i in order for v in by_id[i]["variants"]):
        present = [i for i in order if groups[key].get(i)]
        if len(present) < 2:
            single.append({"model": key[0], "engine": key[1], "variant": key[2], "experiments": present})
            continue
        runs = [{"experiment_id": i, "experiment_name": by_id[i]["experiment"]["name"],
                 "hosts": hosts_in(groups[key][i]), **run_row(groups[key][i], labels)} for i in present]
        for run in runs:
            run["cpu_models"] = [cpu_models.get(h) or None for h in run["hosts"]]
        versus, note = [], None
        if present[0] == base_id:
            versus = [experiment_versus(runs[0], run, groups[key][base_id], groups[key][run["experiment_id"]],
                                        texts.get(base_id, {}), texts.get(run["experiment_id"], {}), labels,
                                        tolerance) for run in runs[1:]]
        else:
            note = f"exp {base_id} has no finished task of it: nothing to pair with (see --baseline)"
        variants.append({"model": key[0], "engine": key[1], "variant": key[2], "runs": runs,
                         "versus_baseline": versus, "note": note})
    return {"baseline_experiment": base_id, "tolerance": tolerance,
            "experiments": [{"id": i, "name": by_id[i]["experiment"]["name"],
                             "hosts": [{"host": h, "cpu_model": cpu_models.get(h) or None}
                                       for h in hosts_in(rows.get(i, []))],
                             "hardware_profiles": sorted({r["hardware_profile"] for r in rows.get(i, [])
                                                          if r["hardware_profile"]})} for i in order],
            "variants": variants, "in_one_experiment_only": single,
            "pairing": ("by (sample_index, repeat) when the texts there are equal in both experiments, "
                        "else by (text, repeat); a run's answer to a key is its first row's, its cost the "
                        "mean of its valid rows; only keys both runs answered count; no verdict with fewer "
                        f"than {MIN_PAIRED}"),
            "statistics": paired.methods(tolerance)}


def machine_lines(data: dict) -> list[str]:
    """'exp 7 spec-a: laptop-a (Intel(R) Core(TM) i5…); profile cpu-…', one per experiment."""
    def host(h: dict) -> str:
        return f"{h['host']} ({h['cpu_model'] or 'CPU model not registered'})"
    return [f"exp {e['id']} {e['name']}: " + (", ".join(host(h) for h in e["hosts"]) or "no finished task")
            + (f"; profile {', '.join(e['hardware_profiles'])}" if e["hardware_profiles"] else "")
            for e in data["experiments"]]


# -- words ----------------------------------------------------------------------------------------

def _x(r: float) -> str:
    """A ratio as a person reads it: 2.00, 12.3, 150."""
    return units.number(r, 3)


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def latency_phrase(host: str, ratio: float | None, ci: list) -> str:
    """'laptop-b is 2.00× slower (1.98–2.02)' from a latency ratio host/baseline and its interval."""
    if ratio is None or ci[0] is None:
        return "latency: no paired figure"
    lo, hi = ci
    if lo > 1:
        return f"{host} is {_x(ratio)}× slower ({_x(lo)}–{_x(hi)})"
    if hi < 1:
        return f"{host} is {_x(1 / ratio)}× faster ({_x(1 / hi)}–{_x(1 / lo)})"
    return f"latency no difference detectable ({_x(ratio)}×, {_x(lo)}–{_x(hi)})"


def energy_phrase(ratio: float | None, ci: list, estimated: bool) -> str:
    """'uses 2.00× the energy (1.98–2.02; estimated energy, driven by time)'."""
    if ratio is None or ci[0] is None:
        return "energy: no paired figure"
    lo, hi = ci
    note = "; estimated energy, driven by time" if estimated else ""
    if lo <= 1 <= hi:
        return f"energy no difference detectable ({_x(ratio)}×, {_x(lo)}–{_x(hi)}{note})"
    return f"uses {_x(ratio)}× the energy ({_x(lo)}–{_x(hi)}{note})"


def f1_words(comp: dict, tolerance: float) -> str:
    """'F1 no difference detectable (ΔF1 +0.01, −0.04..+0.06, undecided)' (weighted F1)."""
    d, (lo, hi) = comp["f1_weighted_delta"], comp["f1_weighted_delta_ci95"]
    figures = f"ΔF1 {_signed(d)}, {_signed(lo)}..{_signed(hi)}"
    verdict = comp["f1_weighted_verdict"]
    if verdict == "better":
        return f"F1 higher ({figures}, better)"
    if verdict == "worse":
        return f"F1 lower ({figures}, worse)"
    if verdict == "equivalent":
        return f"F1 the same within ±{tolerance:.2f} ({figures}, equivalent)"
    return f"F1 no difference detectable ({figures}, undecided)"


def host_verdict(comp: dict, base: dict, other: dict, tolerance: float) -> str:
    """One line in words for a host against the baseline host, naming the samples paired."""
    host, n, total = other["host"], comp["n_paired"], comp["n_samples"]
    head = f"{host} vs {base['host']}"
    undecided = {0: f"no sample ran on both hosts (each of the {total} samples ran on one host only), so "
                    f"nothing is paired; more repeats (`repeats:`) put samples on both.",
                 1: f"only {n} of the {total} samples ran on both hosts (a paired verdict needs {MIN_PAIRED} "
                    f"or more)."}
    where = f"on the same {n} samples" if n == total else f"on the {n} samples both ran (of {total})"
    return decided_line(head, where, undecided, host, comp, base, other, (base["host"], host), tolerance)


def decided_line(head: str, where: str, undecided: dict[int, str], subject: str, comp: dict, base: dict,
                 other: dict, names: tuple[str, str], tolerance: float) -> str:
    """'HEAD WHERE: SUBJECT is 2.00× slower (…); uses …× the energy (…); F1 …; McNemar p …' from a
    paired comparison; 'HEAD: undecided: …' with undecided[0] when nothing paired, undecided[1] when
    fewer than MIN_PAIRED; names: how base and other are called in the constant-answer note."""
    n = comp["n_paired"]
    if n < MIN_PAIRED:
        return f"{head}: undecided: {undecided[0 if n == 0 else 1]}"
    head = f"{head} {where}"
    estimated = not (base["energy_measured"] and other["energy_measured"])
    line = (f"{head}: {latency_phrase(subject, comp['latency_ratio'], comp['latency_ratio_ci95'])}; "
            f"{energy_phrase(comp['energy_ratio'], comp['energy_ratio_ci95'], estimated)}; "
            f"{f1_words(comp, tolerance)}; McNemar p {paired.p_text(comp['mcnemar']['pvalue'])}")
    flagged = [name for name, x in zip(names, (base, other)) if x.get("constant_answer")]
    if flagged:
        line += f"; on {' and '.join(flagged)} no better than a constant answer"
    return line + "."


def verdict_lines(hosts: dict, key: str = "versus_baseline_host") -> list[str]:
    """Every variant's verdicts (`key`: its list of paired comparisons), 'variant: line' (model too
    when several models)."""
    several = len({v["model"] for v in hosts["variants"]}) > 1
    return [f"{v['model'] + ' ' if several else ''}{v['variant']}: {line}" for v in hosts["variants"]
            for line in [c["verdict"] for c in v[key]] + ([v["note"]] if v["note"] else [])]


def _interval(point: float | None, ci: list, f=lambda x: f"{x:.2f}") -> str:
    if point is None or (isinstance(point, float) and math.isnan(point)):
        return units.DASH
    return f(point) if ci[0] is None else f"{f(point)} [{f(ci[0])}, {f(ci[1])}]"


def _span(ci: list, short: bool = False) -> str:
    """An interval [low, high] of fractions as '0.54–0.82' (short: '.54–.82')."""
    f = (lambda x: f"{x:.2f}".lstrip("0")) if short else (lambda x: f"{x:.2f}")
    return units.DASH if ci[0] is None else f"{f(ci[0])}–{f(ci[1])}"


def _share(x: float | None) -> str:
    return units.DASH if x is None else f"{x * 100:.0f} %"


def host_table(hosts: dict, wide: bool = False) -> Table:
    """Per variant and host: n, F1 with its interval, latency, energy, method, measured share
    (wide: accuracy, macro F1, CO2e, CPU model, profile); fits 80 columns unless `wide`."""
    rows = [h for v in hosts["variants"] for h in v["hosts"]]
    e_unit, e_f = units.pick_unit([r["energy_kwh_per_inference"] for r in rows], units.ENERGY_UNITS)
    c_unit, c_f = units.pick_unit([r["co2_kg_per_inference"] for r in rows], units.CO2_UNITS)
    several = len({v["model"] for v in hosts["variants"]}) > 1
    t = Table(title=f"per host: F1 with its 95 % interval; latency and energy ({e_unit}) per inference",
              title_justify="left",
              box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    columns = (("variant", "host", "n", "acc", "F1 w [95 %]", "F1 macro [95 %]", "latency", f"energy {e_unit}",
                f"CO2e {c_unit}", "energy method", "measured", "CPU model", "profile") if wide else
               ("variant", "host", "n", "F1 w", "95 %", "latency", "energy", "method", "meas."))
    for col in columns:
        t.add_column(col, justify="left" if col in ("variant", "host", "energy method", "method", "CPU model",
                                                     "profile") else "right",
                     no_wrap=col == "host" or (wide and col in ("variant", "CPU model")), overflow="fold")
    for v in [v for v in hosts["variants"] if v["hosts"]]:
        name = f"{v['model']} {v['variant']}" if several else v["variant"]
        for i, r in enumerate(v["hosts"]):
            flag = "*" if r.get("constant_answer") else ""
            cells = [name if i == 0 else "", r["host"], str(r["n"])]
            f1w = _interval(r["f1_weighted"], r["f1_weighted_ci95"]) + flag
            if wide:
                cells += [units.ratio(r["accuracy"]), f1w, _interval(r["f1_macro"], r["f1_macro_ci95"]),
                          units.seconds(r["latency_s_mean"]), units.scaled(r["energy_kwh_per_inference"], e_f),
                          units.scaled(r["co2_kg_per_inference"], c_f), r["energy_method"] or units.DASH,
                          _share(r["energy_measured_share"]), r["cpu_model"] or "not registered",
                          ", ".join(r["hardware_profiles"]) or units.DASH]
            else:
                cells += [units.ratio(r["f1_weighted"]) + flag, _span(r["f1_weighted_ci95"]),
                          units.seconds(r["latency_s_mean"]), units.scaled(r["energy_kwh_per_inference"], e_f),
                          r["energy_method"] or units.DASH, _share(r["energy_measured_share"])]
            t.add_row(*cells)
        t.add_section()
    return t


def versus_table(hosts: dict, key: str = "versus_baseline_host", who: str = "host") -> Table:
    """Each host (who "host", key "versus_baseline_host") or experiment (who "experiment", key
    "versus_baseline") vs the baseline, paired (the wide view: every figure with its interval)."""
    several = len({v["model"] for v in hosts["variants"]}) > 1
    base = hosts["baseline_host"] if who == "host" else f"exp {hosts['baseline_experiment']}"
    t = Table(title=f"paired vs {base} on the samples both {who}s ran (ratios: {who} / {base})",
              title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True)
    for col in ("variant", who, "paired", "latency × [95 %]", "energy × [95 %]", "CO2e × [95 %]",
                "ΔF1 w [95 %]", "ΔF1 macro [95 %]", "McNemar p", "decided"):
        t.add_column(col, justify="left" if col in ("variant", who) else "right", no_wrap=True)
    for v in hosts["variants"]:
        name = f"{v['model']} {v['variant']}" if several else v["variant"]
        for i, c in enumerate(v[key]):
            label = c["host"] if who == "host" else run_name(c)
            if not c["n_paired"]:
                t.add_row(name if i == 0 else "", label, f"0/{c['n_samples']}", *[units.DASH] * 6, "no")
                continue
            t.add_row(name if i == 0 else "", label, f"{c['n_paired']}/{c['n_samples']}",
                      *[_interval(c[f"{k}_ratio"], c[f"{k}_ratio_ci95"], _x) for k in ("latency", "energy", "co2")],
                      *[_interval(c[f"{m}_delta"], c[f"{m}_delta_ci95"], _signed) for m in ("f1_weighted", "f1_macro")],
                      paired.p_text(c["mcnemar"]["pvalue"]).lstrip("= "), "yes" if c["decided"] else "no")
    return t


def cpu_lines(hosts: dict) -> list[str]:
    """'laptop-a: Intel(R) Core(TM) i5; profile cpu-…', one per host: the 80-column view's CPU column."""
    return [f"{h['host']}: {h['cpu_model'] or 'CPU model not registered (no worker row)'}"
            + (f"; profile {', '.join(h['hardware_profiles'])}" if h["hardware_profiles"] else "")
            for h in hosts["hosts"]]
