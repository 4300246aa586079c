"""Rounds of a stop-when-decided experiment (`stop:` in the spec): look, then stop or release.

At submit (scheduler.submit) the first round's tasks are `queued`, later rounds
`held`: held tasks are never sent (enqueue_pending and reconcile take only
queued ones) and never claimed (a worker claims only queued ones), and an
experiment with held tasks is not finished.

`advance` runs when a round may be over: sent by the worker that finished the
round's last task (shared.celery_app.ADVANCE_TASK, on the scheduler queue) and
tried by every reconcile pass (a lost message only delays a round). It is
idempotent: under a row lock on the experiment it does nothing while a task of
the round is still queued or running, or once the experiment's stop record is
finished. Otherwise it looks at every paired verdict (shared.sequential) on the
samples finished so far and either releases the next round (held -> queued,
then sends it) or stops: held -> cancelled with the reason, the experiment done,
and the stop record says how many samples it took and the energy saved (an
estimate).
"""
from __future__ import annotations

import logging
from collections import defaultdict

import sqlalchemy as sa

from scheduler.submit import enqueue_pending
from shared import sequential
from shared.celery_app import ESTIMATOR_QUEUE, REFIT_TASK
from shared.db import session_scope
from shared.models import Experiment, Result, Task, Variant, utcnow
from shared.status import ExperimentStatus, TaskStatus

log = logging.getLogger("greenctl.scheduler")
OPEN = (TaskStatus.QUEUED, TaskStatus.RUNNING)


def waiting_experiment_ids(db: str) -> list[int]:
    """Stop-when-decided experiments whose round is over and not yet looked at."""
    open_task = sa.exists().where(Task.experiment_id == Experiment.id, Task.status.in_(OPEN))
    with session_scope(db) as s:
        return list(s.execute(
            sa.select(Experiment.id)
            .where(Experiment.stop_outcome.is_not(None), Experiment.status != ExperimentStatus.CANCELLED,
                   Experiment.stop_outcome["state"].as_string() == "running", ~open_task)
            .order_by(Experiment.id)).scalars())


def _pairs(variants: list[Variant], answers: dict[int, dict[int, tuple[str, str | None]]]) -> list[tuple]:
    """(name, true labels, baseline answers, variant answers) per non-baseline variant, on the
    samples both have answered, in sample order."""
    by_model = defaultdict(list)
    for v in variants:
        by_model[(v.model, v.engine)].append(v)
    pairs = []
    for group in by_model.values():
        base = next((v for v in group if v.is_baseline), None)
        for v in group:
            if base is None or v.id == base.id:
                continue
            common = sorted(answers[base.id].keys() & answers[v.id].keys())
            pairs.append((f"{v.model} {v.variant} vs {base.variant}",
                          [answers[base.id][i][0] for i in common],
                          [answers[base.id][i][1] for i in common],
                          [answers[v.id][i][1] for i in common]))
    return pairs


def advance(db: str, app, experiment_id: int) -> str:
    """Look at a finished round: "running" (a task is still open), "released" (the next round is
    sent), "stopped" (decided, or max_samples reached) or "nothing" (no stop rule, cancelled,
    already finished)."""
    profiles: list[str] = []      # hardware profiles to refit the estimator for, once closed
    with session_scope(db) as s:
        exp = s.get(Experiment, experiment_id, with_for_update=True)
        if (exp is None or not exp.stop_outcome or exp.stop_outcome.get("state") != "running"
                or exp.status == ExperimentStatus.CANCELLED):
            return "nothing"
        counts = dict(s.execute(sa.select(Task.status, sa.func.count())
                                .where(Task.experiment_id == experiment_id).group_by(Task.status)).all())
        if any(counts.get(k, 0) for k in OPEN):
            return "running"
        record = dict(exp.stop_outcome)
        rule = record["rule"]
        variants = list(s.execute(sa.select(Variant).where(Variant.experiment_id == experiment_id)).scalars())
        rows = s.execute(sa.select(Result.variant_id, Task.sample_index, Task.label, Result.prediction,
                                   Result.energy_kwh)
                         .join(Task, Task.id == Result.task_id)
                         .where(Result.experiment_id == experiment_id)).all()
        answers: dict[int, dict[int, tuple[str, str | None]]] = {v.id: {} for v in variants}
        for variant_id, sample, label, prediction, _ in rows:
            answers[variant_id][sample] = (label, prediction)
        n_samples = s.execute(sa.select(sa.func.count(sa.distinct(Task.sample_index)))
                              .where(Task.experiment_id == experiment_id, Task.status != TaskStatus.HELD)
                              ).scalar()
        seen = sequential.look(_pairs(variants, answers), exp.spec["dataset"]["labels"], rule["f1_tolerance"],
                               record["level"], n_boot=record["n_boot"], seed=exp.spec["dataset"]["seed"])
        record["looks"] = record["looks"] + [{"n_samples": n_samples, **seen}]
        record["n_samples"] = n_samples
        held = counts.get(TaskStatus.HELD, 0)
        if not sequential.should_stop(seen["decided"], n_samples, record["max_samples"]) and held:
            s.execute(sa.update(Task)
                      .where(Task.experiment_id == experiment_id, Task.status == TaskStatus.HELD,
                             Task.round == sa.select(sa.func.min(Task.round)).where(
                                 Task.experiment_id == experiment_id, Task.status == TaskStatus.HELD
                             ).scalar_subquery())
                      .values(status=TaskStatus.QUEUED, updated_at=utcnow()))
            exp.stop_outcome = record
            outcome = "released"
        else:
            reason = (f"stopped: decided after {n_samples} samples" if seen["decided"]
                      else f"stopped: max_samples reached after {n_samples} samples")
            if held:
                s.execute(sa.update(Task)
                          .where(Task.experiment_id == experiment_id, Task.status == TaskStatus.HELD)
                          .values(status=TaskStatus.CANCELLED, error=reason, updated_at=utcnow()))
            energy = [r[4] for r in rows]
            mean_kwh = sum(energy) / len(energy) if energy else None
            co2 = s.execute(sa.select(sa.func.avg(Result.co2_kg))
                            .where(Result.experiment_id == experiment_id)).scalar()
            record |= {"state": "finished", "decided": seen["decided"], "reason": reason,
                       "tasks_not_run": held,
                       "energy_saved_kwh": sequential.energy_saved_kwh(mean_kwh, held),
                       "co2_saved_kg": None if co2 is None else float(co2) * held,
                       "saved_basis": "estimate: mean measured energy (CO2e) per inference so far "
                                      "x tasks not run"}
            exp.stop_outcome = record
            closed_here = exp.finished_at is None
            if closed_here:
                exp.status, exp.finished_at = ExperimentStatus.DONE, utcnow()
            profiles = (s.execute(sa.select(sa.distinct(Result.hardware_profile))
                                  .where(Result.experiment_id == experiment_id)).scalars().all()
                        if closed_here else [])
            outcome = "stopped"
    log.info("experiment %s: %s after %s samples", experiment_id, outcome, n_samples)
    if outcome == "released":
        enqueue_pending(db, app, experiment_id)
    for profile in profiles:
        # As a worker does when it closes an experiment: the estimator refits if enough is new.
        app.send_task(REFIT_TASK, args=[profile], kwargs={"force": True}, queue=ESTIMATOR_QUEUE)
    return outcome
