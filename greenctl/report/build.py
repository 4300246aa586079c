"""The report of one experiment, from stored rows (finished tasks only)."""
from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from greenctl.report import metrics
from shared.db import session_scope
from shared.models import Experiment, Result, Task, TaskStatus, Variant


class ReportError(Exception):
    pass


def experiment_summary(s, experiment: Experiment) -> dict:
    counts = dict(s.execute(
        sa.select(Task.status, sa.func.count()).where(Task.experiment_id == experiment.id)
        .group_by(Task.status)).all())
    return {
        "id": experiment.id, "name": experiment.name, "status": experiment.status,
        "n_tasks": experiment.n_tasks,
        "n_done": counts.get(TaskStatus.DONE, 0),
        "n_failed": counts.get(TaskStatus.FAILED, 0),
        "n_running": counts.get(TaskStatus.RUNNING, 0),
        "n_queued": counts.get(TaskStatus.QUEUED, 0),
        "created_at": experiment.created_at.isoformat(),
        "finished_at": experiment.finished_at.isoformat() if experiment.finished_at else None,
    }


def variant_report(s, variant: Variant, labels: list[str]) -> dict:
    rows = s.execute(
        sa.select(Task.label, Result).join(Result, Result.task_id == Task.id)
        .where(Task.variant_id == variant.id).order_by(Task.id)).all()
    n_failed = s.execute(sa.select(sa.func.count()).select_from(Task).where(
        Task.variant_id == variant.id, Task.status == TaskStatus.FAILED)).scalar_one()
    results = [r for _, r in rows]
    y_true = [label for label, _ in rows]
    y_pred = [r.prediction for r in results]
    energy = metrics.mean_ci95([r.energy_kwh for r in results])
    co2 = metrics.mean_ci95([r.co2_kg for r in results])
    latency = metrics.mean_ci95([r.e2e_s for r in results])
    methods = Counter(r.energy_method for r in results)
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else None  # noqa: E731
    return {
        "model": variant.model, "variant": variant.variant, "engine": variant.engine,
        "is_baseline": variant.is_baseline, "queue": variant.queue,
        "n": len(results), "n_failed": n_failed,
        "n_unparsed": sum(1 for p in y_pred if p is None),
        **metrics.classification(y_true, y_pred, labels),
        "energy_kwh_per_inference": energy[0],
        "energy_kwh_ci95": [energy[1], energy[2]],
        "co2_kg_per_inference": co2[0],
        "co2_kg_ci95": [co2[1], co2[2]],
        "latency_s_mean": latency[0],
        "latency_s_ci95": [latency[1], latency[2]],
        "prompt_s_mean": mean([r.prompt_s for r in results]),
        "decode_s_mean": mean([r.decode_s for r in results]),
        "prompt_tokens_mean": mean([r.prompt_tokens for r in results]),
        "prompt_tokens_uncached_mean": mean([r.prompt_tokens_uncached for r in results]),
        "output_tokens_mean": mean([r.output_tokens for r in results]),
        "energy_kwh_total": float(sum(r.energy_kwh for r in results)),
        "co2_kg_total": float(sum(r.co2_kg for r in results)),
        "energy_method": "+".join(sorted(methods)) if methods else None,
        "energy_detail": sorted({r.energy_detail for r in results}),
        "model_info": variant.model_info,
        "confusion": metrics.confusion(y_true, y_pred, labels),
    }


def with_baseline_deltas(variants: list[dict]) -> list[dict]:
    """Relative change of CO2 and F1 against the baseline variant of the same model."""
    baselines = {(v["model"], v["engine"]): v for v in variants if v["is_baseline"]}
    for v in variants:
        base = baselines.get((v["model"], v["engine"]))
        v["co2_change_vs_baseline"] = metrics.relative_change(
            v["co2_kg_per_inference"], base and base["co2_kg_per_inference"])
        v["f1_weighted_change_vs_baseline"] = (
            None if base is None or v["f1_weighted"] is None or base["f1_weighted"] is None
            else v["f1_weighted"] - base["f1_weighted"])
    return variants


def build_report(db: str, experiment_id: int) -> dict:
    with session_scope(db) as s:
        experiment = s.get(Experiment, experiment_id)
        if experiment is None:
            raise ReportError(f"no experiment with id {experiment_id}: see `greenctl status` for ids")
        labels = experiment.spec["dataset"]["labels"]
        variants = s.execute(sa.select(Variant).where(Variant.experiment_id == experiment_id)
                             .order_by(Variant.id)).scalars().all()
        summary = experiment_summary(s, experiment)
        rows = [variant_report(s, v, labels) for v in variants]
        totals = s.execute(sa.select(sa.func.coalesce(sa.func.sum(Result.energy_kwh), 0.0),
                                     sa.func.coalesce(sa.func.sum(Result.co2_kg), 0.0),
                                     sa.func.coalesce(sa.func.sum(Result.e2e_s), 0.0),
                                     sa.func.min(Result.created_at), sa.func.max(Result.created_at))
                           .where(Result.experiment_id == experiment_id)).one()
    summary["partial"] = summary["n_done"] + summary["n_failed"] < summary["n_tasks"]
    return {
        "experiment": summary,
        "variants": with_baseline_deltas(rows),
        "totals": {"energy_kwh": float(totals[0]), "co2_kg": float(totals[1]),
                   "inference_s": float(totals[2]),
                   "wall_s": (totals[4] - totals[3]).total_seconds() if totals[3] else 0.0},
        "labels": labels,
    }
