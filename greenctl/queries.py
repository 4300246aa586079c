"""What the CLI reads from Postgres, as plain rows: the SQL of every command lives here.

Commands format what these return; reports build from plain rows. Each function
opens its own short session (objects stay readable after it: expire_on_commit is off).
"""
from __future__ import annotations

import sqlalchemy as sa

from shared.db import session_scope
from shared.models import Experiment, Result, Task, Variant, WorkerNode
from shared.status import TASK_FINISHED, TaskStatus


def task_counts(s, experiment_id: int) -> dict[str, int]:
    """Tasks of one experiment by status, every status present (0 when none)."""
    counts = dict(s.execute(sa.select(Task.status, sa.func.count()).where(Task.experiment_id == experiment_id)
                            .group_by(Task.status)).all())
    return {status.value: int(counts.get(status, 0)) for status in TaskStatus}


def experiments(db: str, experiment_id: int | None = None) -> list[tuple[Experiment, dict[str, int]]]:
    """(experiment, its task counts) of one experiment or of all, oldest first."""
    with session_scope(db) as s:
        query = sa.select(Experiment).order_by(Experiment.id)
        if experiment_id is not None:
            query = query.where(Experiment.id == experiment_id)
        return [(e, task_counts(s, e.id)) for e in s.execute(query).scalars().all()]


def progress(db: str, experiment_id: int) -> tuple[int, int, int, str]:
    """(finished, failed, total, status) of an experiment."""
    with session_scope(db) as s:
        # Counts before the total: a sustained run's next pass (worker.store.next_pass) raises
        # n_tasks in the same commit that finishes its last task, so these never read "all done".
        counts = task_counts(s, experiment_id)
        exp = s.get(Experiment, experiment_id)
        return sum(counts[k] for k in TASK_FINISHED), counts[TaskStatus.FAILED], exp.n_tasks, exp.status


def worker_nodes(db: str) -> list[WorkerNode]:
    """Every registered worker, in registration order."""
    with session_scope(db) as s:
        return list(s.execute(sa.select(WorkerNode).order_by(WorkerNode.id)).scalars().all())


def failure_reasons(db: str, experiment_id: int) -> list[tuple[str, int]]:
    """Why an experiment's tasks failed: (reason, how many tasks), most frequent first."""
    with session_scope(db) as s:
        rows = s.execute(sa.select(Task.error, sa.func.count()).where(
            Task.experiment_id == experiment_id, Task.status == TaskStatus.FAILED)
            .group_by(Task.error).order_by(sa.func.count().desc(), Task.error)).all()
    return [(reason or "no reason recorded", int(n)) for reason, n in rows]


def failures_by_variant(s, experiment_id: int) -> dict[int, list[tuple[str, int]]]:
    """Why tasks failed, per variant id: (reason, how many), most frequent first."""
    rows = s.execute(sa.select(Task.variant_id, Task.error, sa.func.count()).where(
        Task.experiment_id == experiment_id, Task.status == TaskStatus.FAILED)
        .group_by(Task.variant_id, Task.error).order_by(sa.func.count().desc(), Task.error)).all()
    out: dict[int, list[tuple[str, int]]] = {}
    for variant_id, reason, n in rows:
        out.setdefault(variant_id, []).append((reason or "no reason recorded", int(n)))
    return out


def open_queues(db: str, experiment_id: int) -> list[str]:
    """The queues that still have queued or running tasks of an experiment."""
    with session_scope(db) as s:
        return sorted(s.execute(sa.select(Variant.queue).distinct().join(Task, Task.variant_id == Variant.id)
                                .where(Task.experiment_id == experiment_id,
                                       Task.status.in_([TaskStatus.QUEUED, TaskStatus.RUNNING]))).scalars())


def online_workers(db: str, within_s: float) -> dict[str, list[str]]:
    """Hostnames of workers heard from within `within_s` seconds, by queue."""
    with session_scope(db) as s:
        rows = s.execute(sa.select(WorkerNode.queue, WorkerNode.hostname).where(
            WorkerNode.last_heartbeat > sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, within_s))).all()
    out: dict[str, list[str]] = {}
    for queue, host in rows:
        out.setdefault(queue, []).append(host)
    return out


def experiment_ids_named(db: str, name: str) -> list[int]:
    """Ids of the experiments with this name, oldest first."""
    with session_scope(db) as s:
        return list(s.execute(sa.select(Experiment.id).where(Experiment.name == name)
                              .order_by(Experiment.id)).scalars())


def online_ollama_workers(db: str, within_s: float) -> dict[str, dict[str, list[str]]]:
    """Workers with the Ollama engine heard from within `within_s` seconds: queue ->
    hostname -> the models they last reported (the tags their Ollama server has pulled)."""
    with session_scope(db) as s:
        rows = s.execute(sa.select(WorkerNode.queue, WorkerNode.hostname, WorkerNode.engines, WorkerNode.models)
                         .where(WorkerNode.last_heartbeat
                                > sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, within_s))
                         .order_by(WorkerNode.queue, WorkerNode.hostname)).all()
    out: dict[str, dict[str, list[str]]] = {}
    for queue, host, engines, models in rows:
        if "ollama" in (engines or []):
            out.setdefault(queue, {})[host] = list(models or [])
    return out


def host_rows(db: str, experiment_id: int) -> list[dict]:
    """Every finished result of an experiment with its sample, for `compare` across hosts:
    model, engine, variant, worker (HOST:queue), hardware_profile, sample_index, repeat, label,
    prediction, e2e_s (s), energy_kwh, energy_measured_kwh, co2_kg (kg), energy_method, valid;
    in task order."""
    with session_scope(db) as s:
        rows = s.execute(sa.select(Variant.model, Variant.engine, Variant.variant, Result.worker,
                                   Result.hardware_profile, Task.sample_index, Task.repeat, Task.label,
                                   Result.prediction, Result.e2e_s, Result.energy_kwh, Result.energy_measured_kwh,
                                   Result.co2_kg, Result.energy_method, Result.valid)
                         .join(Result, Result.task_id == Task.id).join(Variant, Variant.id == Task.variant_id)
                         .where(Task.experiment_id == experiment_id).order_by(Task.id)).mappings().all()
    return [dict(r) for r in rows]


def cpu_models(db: str) -> dict[str, str]:
    """The CPU model each registered worker host reported: hostname -> cpu_model (the most recently
    heard-from row of the host that has one)."""
    with session_scope(db) as s:
        rows = s.execute(sa.select(WorkerNode.hostname, WorkerNode.cpu_model)
                         .where(WorkerNode.cpu_model != "").order_by(WorkerNode.last_heartbeat)).all()
    return {host: cpu for host, cpu in rows}


def sample_texts(db: str, experiment_id: int) -> dict[int, str]:
    """The text of each sample of an experiment: sample_index -> the task's text (every variant and
    repeat of a sample carries the same text), for `compare` to check two experiments ran the same
    samples."""
    with session_scope(db) as s:
        rows = s.execute(sa.select(Task.sample_index, Task.text).distinct()
                         .where(Task.experiment_id == experiment_id)).all()
    return {index: text for index, text in rows}
