"""The report of one experiment, from stored rows (finished tasks only).

`build_report` is the only function here that reads the database; the rest
assembles the report dict from the rows it read, without I/O. The dict is the
JSON contract of issue 2 ("Report contract"), extended: keys are only ever
added, never renamed or removed.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone

import sqlalchemy as sa

from greenctl import queries
from greenctl.report import drift, estimate_check, metrics, paired
from shared.accounting import measured_share
from shared.db import session_scope
from shared.models import Experiment, Result, Task, TaskStatus, Variant
from worker.engines import REPLAY_ENGINE

# Energy methods a worker records (worker/energy.py). Only the first three read
# a power meter; the report says so wherever energy is shown.
MEASURED_METHODS = ("rapl", "nvml", "powermetrics")
METHOD_NOTES = {
    "rapl": "measured: CPU energy counters (RAPL)",
    "nvml": "measured: GPU energy counters (NVML)",
    "powermetrics": "measured: macOS powermetrics",
    "estimated": "estimate, not a measurement: CodeCarbon's TDP x CPU-load model",
    "forced": "estimate, not a measurement: CPU power fixed by the operator, times task time",
    "simulated": "SIMULATED, not a measurement: the fleet benchmark's timing-replay engine ran no inference",
}


class ReportError(Exception):
    pass


def experiment_summary(experiment: Experiment, counts: dict[str, int]) -> dict:
    """The experiment's header: what it is and its tasks by status (greenctl.queries.task_counts)."""
    return {
        "id": experiment.id, "name": experiment.name, "status": experiment.status,
        "n_tasks": experiment.n_tasks,
        "n_done": counts.get(TaskStatus.DONE, 0),
        "n_failed": counts.get(TaskStatus.FAILED, 0),
        "n_running": counts.get(TaskStatus.RUNNING, 0),
        "n_queued": counts.get(TaskStatus.QUEUED, 0),
        "n_cancelled": counts.get(TaskStatus.CANCELLED, 0),
        "n_held": counts.get(TaskStatus.HELD, 0),      # later rounds of a stop-when-decided experiment
        "created_at": experiment.created_at.isoformat(),
        "finished_at": experiment.finished_at.isoformat() if experiment.finished_at else None,
    }


def _mean(xs: list[float]) -> float | None:
    return float(sum(xs) / len(xs)) if xs else None


def _median(xs: list[float]) -> float | None:
    """The median (robust beside the mean: one slow row cannot move it far); None when empty."""
    import statistics

    return float(statistics.median(xs)) if xs else None


def variant_report(variant: Variant, labels: list[str], rows: list[tuple[str, Result]], n_failed: int) -> dict:
    """One variant's row of the report; rows are (true label, result) of its finished tasks."""
    results = [r for _, r in rows]
    y_true = [label for label, _ in rows]
    y_pred = [r.prediction for r in results]
    # A paused window's time and energy are not the inference's: out of every cost figure
    # (counted in n_invalid); its prediction still counts for quality.
    timed = [r for r in results if r.valid is not False]
    energy = metrics.mean_ci95([r.energy_kwh for r in timed])
    co2 = metrics.mean_ci95([r.co2_kg for r in timed])
    latency = metrics.mean_ci95([r.e2e_s for r in timed])
    methods = Counter(r.energy_method for r in results)
    return {
        "model": variant.model, "variant": variant.variant, "engine": variant.engine,
        "is_baseline": variant.is_baseline, "queue": variant.queue,
        "status": "measured" if results else "not measured",
        "n": len(results), "n_failed": n_failed, "n_invalid": len(results) - len(timed),
        "n_unparsed": sum(1 for p in y_pred if p is None),
        **metrics.classification(y_true, y_pred, labels),
        "energy_kwh_per_inference": energy[0],
        "energy_kwh_ci95": [energy[1], energy[2]],
        "co2_kg_per_inference": co2[0],
        "co2_kg_ci95": [co2[1], co2[2]],
        "latency_s_mean": latency[0],
        "latency_s_ci95": [latency[1], latency[2]],
        "latency_s_median": _median([r.e2e_s for r in timed]),
        "energy_kwh_median": _median([r.energy_kwh for r in timed]),
        "prompt_s_mean": _mean([r.prompt_s for r in timed]),
        "decode_s_mean": _mean([r.decode_s for r in timed]),
        "prompt_tokens_mean": _mean([r.prompt_tokens for r in results]),
        "prompt_tokens_uncached_mean": _mean([r.prompt_tokens_uncached for r in results]),
        "output_tokens_mean": _mean([r.output_tokens for r in results]),
        "energy_kwh_total": float(sum(r.energy_kwh for r in results)),
        "co2_kg_total": float(sum(r.co2_kg for r in results)),
        "energy_split": metrics.energy_split([(r.energy_kwh, r.prompt_s, r.decode_s, r.e2e_s) for r in timed]),
        "energy_method": "+".join(sorted(methods)) if methods else None,
        "energy_measured": bool(methods) and all(m in MEASURED_METHODS for m in methods),
        "energy_detail": sorted({r.energy_detail for r in results}),
        # Fraction of the energy read from power counters (the rest estimated or forced).
        "energy_measured_share": measured_share([(r.energy_measured_kwh, r.energy_kwh) for r in timed]),
        "carbon_intensity_kg_per_kwh": _mean([r.carbon_intensity_kg_per_kwh for r in results]),
        "pue": _mean([r.pue for r in results]),
        "hardware_profiles": sorted({r.hardware_profile for r in results if r.hardware_profile}),
        "params": dict(variant.params or {}),
        "model_info": variant.model_info,
        "confusion": metrics.confusion(y_true, y_pred, labels),
        "by_machine": by_machine(rows, labels),
    }


def by_machine(rows: list[tuple[str, Result]], labels: list[str]) -> list[dict]:
    """The variant's quality and cost per hardware profile, for `compare` across machines."""
    groups: dict[str, list[tuple[str, Result]]] = defaultdict(list)
    for label, r in rows:
        groups[r.hardware_profile or "unknown"].append((label, r))
    out = []
    for profile, group in sorted(groups.items()):
        quality = metrics.classification([label for label, _ in group], [r.prediction for _, r in group], labels)
        out.append({"hardware_profile": profile, "n": len(group),
                    "workers": sorted({r.worker for _, r in group}),
                    "accuracy": quality["accuracy"], "f1_weighted": quality["f1_weighted"],
                    "f1_macro": quality["f1_macro"],
                    "energy_kwh_per_inference": _mean([r.energy_kwh for _, r in group]),
                    "co2_kg_per_inference": _mean([r.co2_kg for _, r in group]),
                    "latency_s_mean": _mean([r.e2e_s for _, r in group]),
                    "energy_method": "+".join(sorted({r.energy_method for _, r in group}))})
    return out


def with_baseline_deltas(variants: list[dict]) -> list[dict]:
    """Relative change of CO2 and energy, absolute change of F1, against the baseline variant of the same model."""
    baselines = {(v["model"], v["engine"]): v for v in variants if v["is_baseline"]}
    for v in variants:
        base = baselines.get((v["model"], v["engine"]))
        v["co2_change_vs_baseline"] = metrics.relative_change(
            v["co2_kg_per_inference"], base and base["co2_kg_per_inference"])
        v["energy_change_vs_baseline"] = metrics.relative_change(
            v["energy_kwh_per_inference"], base and base["energy_kwh_per_inference"])
        for f1 in ("f1_weighted", "f1_macro"):
            v[f"{f1}_change_vs_baseline"] = (
                None if base is None or v[f1] is None or base[f1] is None else v[f1] - base[f1])
    return variants


def with_pareto_front(variants: list[dict]) -> list[dict]:
    """Mark the variants no other variant beats on both CO2 per inference and weighted F1."""
    front = metrics.pareto_front([(v["co2_kg_per_inference"], v["f1_weighted"]) for v in variants])
    for v, on_front in zip(variants, front):
        v["on_pareto_front"] = on_front
    return variants


def method_notes(variants: list[dict]) -> dict[str, str]:
    """What each energy method used in the report means: measured, or an estimate."""
    used = {m for v in variants for m in (v["energy_method"] or "").split("+") if m}
    return {m: METHOD_NOTES.get(m, "unknown method: treat as an estimate") for m in sorted(used)}


def totals(results: list[Result]) -> dict:
    """Energy, CO2, inference time, wall time (first task start to last task end) and worker hours."""
    spans = [(r.worker, r.created_at.timestamp() - r.e2e_s, r.created_at.timestamp()) for r in results]
    busy = metrics.busy_spans(spans)
    return {
        "energy_kwh": float(sum(r.energy_kwh for r in results)),
        "co2_kg": float(sum(r.co2_kg for r in results)),
        "inference_s": float(sum(r.e2e_s for r in results)),
        "wall_s": (max(e for _, _, e in spans) - min(s for _, s, _ in spans)) if spans else 0.0,
        # Each worker counts from its first task's start to its last task's end on this experiment.
        "worker_hours": sum(busy.values()) / 3600.0,
        "workers": sorted(busy),
    }


def build_report(db: str, experiment_id: int) -> dict:
    with session_scope(db) as s:
        experiment = s.get(Experiment, experiment_id)
        if experiment is None:
            raise ReportError(f"no experiment with id {experiment_id}: see `greenctl status` for ids")
        labels = experiment.spec["dataset"]["labels"]
        variants = s.execute(sa.select(Variant).where(Variant.experiment_id == experiment_id)
                             .order_by(Variant.id)).scalars().all()
        summary = experiment_summary(experiment, queries.task_counts(s, experiment_id))
        if any(v.engine == REPLAY_ENGINE for v in variants):   # bench/fleet.py's rows: never pass as real
            summary["name"] = f"SIMULATED (timing-replay engine, no inference): {summary['name']}"
            summary["simulated"] = True
        # A result exists only for a task that finished (the worker writes both in one transaction).
        rows = s.execute(sa.select(Task.variant_id, Task.label, Result, Task.sample_index, Task.repeat)
                         .join(Result, Result.task_id == Task.id)
                         .where(Task.experiment_id == experiment_id).order_by(Task.id)).all()
        reasons = queries.failures_by_variant(s, experiment_id)
    failed = {vid: sum(n for _, n in why) for vid, why in reasons.items()}
    by_variant: dict[int, list[tuple[str, Result]]] = defaultdict(list)
    samples: dict[int, paired.Samples] = defaultdict(paired.Samples)
    for variant_id, label, result, sample_index, repeat in rows:
        by_variant[variant_id].append((label, result))
        add_sample(samples[variant_id], label, result, sample_index, repeat)
    # Queued, running and cancelled tasks have no result: a report without them is partial
    # (tasks a stop-when-decided rule chose not to run do not make it partial).
    stop = experiment.stop_outcome
    not_run = (stop or {}).get("tasks_not_run") or 0
    summary["partial"] = summary["n_done"] + summary["n_failed"] < summary["n_tasks"] - not_run
    variant_rows = [variant_report(v, labels, by_variant[v.id], failed.get(v.id, 0)) for v in variants]
    for v, row in zip(variants, variant_rows):   # failed, grouped by reason: what a user must fix
        row["failures"] = [{"reason": why, "tasks": n} for why, n in reasons.get(v.id, [])]
        if not row["n"] and row["n_failed"]:
            row["status"] = "failed"
    tolerance = float(((experiment.spec.get("stop") or {}).get("f1_tolerance")) or paired.F1_TOLERANCE)
    per_variant = [samples[v.id] for v in variants]
    looks_level = (stop or {}).get("level")     # a stop rule's per-look level: its verdicts, not 95 %
    verdicts = paired.annotate(variant_rows, per_variant, labels, tolerance, looks_level)
    return {
        "experiment": summary,
        "variants": with_pareto_front(with_baseline_deltas(variant_rows)),
        "totals": totals([row[2] for row in rows]),
        "labels": labels,
        "energy_methods": method_notes(variant_rows),
        "carbon": experiment.spec.get("carbon", {}),
        # stop when decided (scheduler.rounds): samples it took, looks, method, energy saved (estimate)
        "stop": stop,
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "statistics": paired.methods(tolerance, stop),
        "baselines": paired.baselines(per_variant, labels),
        "verdicts": verdicts,
        # the estimate each worker recorded before each inference, graded by its measurement
        "estimated_vs_measured": estimate_check.per_variant(db, experiment_id, variants),
        # a sustained run (`sustain:`): energy and latency per minute, throttling flag; None otherwise
        "drift": drift_section(experiment.spec, variants, [(row[0], row[2]) for row in rows]),
    }


def drift_section(spec: dict, variants: list[Variant], rows: list[tuple[int, Result]]) -> dict | None:
    """greenctl.report.drift on the valid results of a sustained run, times from its first window."""
    minutes = (spec.get("sustain") or {}).get("minutes")
    if minutes is None:
        return None
    several = len({v.model for v in variants}) > 1
    names = {v.id: f"{v.model} {v.variant}" if several else v.variant for v in variants}
    timed = [(vid, r) for vid, r in rows if r.valid is not False and r.window_started_at is not None]
    start = min((r.window_started_at for _, r in timed), default=None)
    return drift.drift([drift.Row(names[vid], (r.window_started_at - start).total_seconds(), r.energy_kwh,
                                  r.e2e_s, r.cpu_freq_mhz, r.temperature_c) for vid, r in timed], minutes)


def add_sample(s: paired.Samples, label: str, r: Result, sample_index: int, repeat: int) -> None:
    """One finished row into its variant's per-sample lists (paired by (sample_index, repeat))."""
    s.keys.append((sample_index, repeat))
    s.y_true.append(label)
    s.y_pred.append(r.prediction)
    s.energy_kwh.append(r.energy_kwh)
    s.co2_kg.append(r.co2_kg)
    s.e2e_s.append(r.e2e_s)
