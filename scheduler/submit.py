"""Submitting an experiment: one transaction writes it, its variants and one
task per (sample x variant x repeat); then the tasks are enqueued.

If the broker loses messages or enqueueing stops halfway, Postgres still holds
every task as `queued` with no `enqueued_at`, and `enqueue_pending` (also run
by the reconcile job) sends them again.

`enqueue_or_hand_off` leaves the sending to the scheduler service when one is
alive (`greenctl scheduler`), so a large experiment is enqueued in batches
there, not in the CLI. `cancel_experiment` / `resume_experiment` back
`greenctl cancel` / `greenctl resume`.

With `stop:` in the spec, tasks of rounds after the first are written `held`
(never sent, never claimed); scheduler.rounds releases or cancels them.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import sqlalchemy as sa

from scheduler.dataset import Sample, load_samples, round_order
from scheduler.spec import ExperimentSpec, SpecError
from shared.celery_app import INFER_TASK
from shared.db import session_scope
from shared.models import Experiment, Task, Variant, utcnow
from shared import sequential
from shared.status import ExperimentStatus, TaskStatus

BATCH = 5000


def experiment_record(spec: ExperimentSpec, examples: list[tuple[str, str]]) -> dict:
    """What is stored of the spec: all a worker needs, the dataset itself excluded."""
    return spec.model_dump(mode="json") | {"few_shot_examples": [list(e) for e in examples]}


def sample_rounds(samples: list[Sample], spec: ExperimentSpec) -> dict[int, int]:
    """Round of each sample (by dataset row) under the spec's stop rule: the samples in an
    order whose every prefix is stratified (scheduler.dataset.round_order, from the dataset
    seed), cut into sequential.round_sizes. Empty without `stop:`. Pure."""
    if spec.stop is None:
        return {}
    order = round_order(np.array([smp.label for smp in samples], dtype=object), spec.dataset.seed)
    rounds, start = {}, 0
    for r, size in enumerate(sequential.round_sizes(spec.stop.min_samples, len(samples), spec.stop.check_every)):
        rounds |= {samples[i].index: r for i in order[start:start + size]}
        start += size
    return rounds


def stop_record(spec: ExperimentSpec, n_samples: int) -> dict | None:
    """The stop record at submit: the rule, the planned looks and the method (see scheduler.rounds)."""
    if spec.stop is None:
        return None
    stop = spec.stop
    looks = sequential.planned_looks(min(stop.min_samples, n_samples), n_samples, stop.check_every)
    level = sequential.look_level(looks)
    n_boot = sequential.resamples_for(level)
    return {"state": "running", "rule": stop.model_dump(mode="json"), "max_samples": n_samples,
            "planned_looks": looks, "level": level, "n_boot": n_boot,
            "method": sequential.method_text(looks, n_boot, spec.dataset.seed),
            "n_samples": min(stop.min_samples, n_samples), "decided": False, "looks": []}


def write_experiment(db: str, spec: ExperimentSpec, samples: list[Sample],
                     examples: list[tuple[str, str]]) -> int:
    """Experiment, variants and tasks in ONE transaction; returns the experiment id.
    With `stop:`, only the first round's tasks are `queued`; later rounds are `held`."""
    rounds = sample_rounds(samples, spec)
    with session_scope(db) as s:
        experiment = Experiment(name=spec.name, spec=experiment_record(spec, examples),
                                status=ExperimentStatus.QUEUED, stop_outcome=stop_record(spec, len(samples)),
                                n_tasks=len(samples) * spec.repeats * sum(len(m.variants) for m in spec.models))
        s.add(experiment)
        s.flush()
        for model in spec.models:
            for name in model.variants:
                variant = Variant(experiment_id=experiment.id, model=model.name, engine=model.engine,
                                  variant=name, is_baseline=(name == model.baseline_variant),
                                  queue=model.queue or spec.placement.queue,
                                  params=model.params.model_dump(mode="json"))
                s.add(variant)
                s.flush()
                rows = [dict(experiment_id=experiment.id, variant_id=variant.id,
                             sample_index=smp.index, repeat=r, text=smp.text, label=smp.label,
                             round=rounds.get(smp.index),
                             status=TaskStatus.HELD if rounds.get(smp.index, 0) > 0 else TaskStatus.QUEUED,
                             attempts=0)
                        for r in range(spec.repeats) for smp in samples]
                for start in range(0, len(rows), BATCH):
                    s.execute(sa.insert(Task), rows[start:start + BATCH])
        return experiment.id


def enqueue_pending(db: str, app, experiment_id: int | None = None,
                    progress: Callable[[int], None] | None = None) -> int:
    """Send a message for every queued task never enqueued; returns how many were sent."""
    sent = 0
    with session_scope(db) as s:
        query = (sa.select(Task.id, Variant.queue).join(Variant, Variant.id == Task.variant_id)
                 .where(Task.status == TaskStatus.QUEUED, Task.enqueued_at.is_(None))
                 # Variants interleaved sample by sample: a slow drift of the machine
                 # (heat, other load) then hits every variant alike instead of the last one.
                 .order_by(Task.sample_index, Task.repeat, Task.variant_id))
        if experiment_id is not None:
            query = query.where(Task.experiment_id == experiment_id)
        rows = s.execute(query).all()
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        # Pipelined publishing (kombu's Producer.batch): bench P5, 43.6 s -> 20 s per 100k tasks.
        with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
            for task_id, queue in batch:
                app.send_task(INFER_TASK, args=[task_id], queue=queue, producer=producer)
        with session_scope(db) as s:
            s.execute(sa.update(Task).where(Task.id.in_([r[0] for r in batch]))
                      .values(enqueued_at=utcnow()))
        sent += len(batch)
        if progress:
            progress(len(batch))
    return sent


def check_task_count(n_samples: int, spec: ExperimentSpec, max_tasks: int) -> int:
    """samples x variants x repeats, refused (SpecError) above `max_tasks`; checked before any write."""
    n_variants = sum(len(m.variants) for m in spec.models)
    n = n_samples * n_variants * spec.repeats
    if n > max_tasks:
        raise SpecError(f"repeats: {n_samples} samples x {n_variants} variants x {spec.repeats} repeats = "
                        f"{n:,} tasks, more than the limit of {max_tasks:,}: lower dataset.sample, the "
                        "variants or repeats, or raise GREENCTL_MAX_TASKS")
    return n


def submit(db: str, app, spec: ExperimentSpec, max_tasks: int = 1_000_000) -> int:
    """Validate the data, write everything in one transaction, enqueue; the experiment id."""
    samples, examples = load_samples(spec.dataset, spec.prompt.few_shot)
    check_task_count(len(samples), spec, max_tasks)
    experiment_id = write_experiment(db, spec, samples, examples)
    enqueue_pending(db, app, experiment_id)
    return experiment_id


def enqueue_or_hand_off(db: str, app, experiment_id: int) -> tuple[str, int]:
    """Enqueue an experiment's written tasks: handed to the scheduler service when
    one is alive (it sends them in batches, so the caller returns at once), else
    sent from this process. Returns (who enqueues: "scheduler" | "here", how many sent here)."""
    from scheduler.liveness import last_seen
    from shared.celery_app import ENQUEUE_TASK, SCHEDULER_QUEUE

    if last_seen(app) is not None:
        app.send_task(ENQUEUE_TASK, args=[experiment_id], queue=SCHEDULER_QUEUE)
        return "scheduler", 0
    return "here", enqueue_pending(db, app, experiment_id)


class UnknownExperiment(LookupError):
    pass


def _experiment(s, experiment_id: int) -> Experiment:
    experiment = s.get(Experiment, experiment_id, with_for_update=True)
    if experiment is None:
        raise UnknownExperiment(experiment_id)
    return experiment


def cancel_experiment(db: str, experiment_id: int) -> int:
    """Queued, held and running tasks -> cancelled, and the experiment with them; how many.

    Workers skip a cancelled task (claim takes only queued ones or expired
    leases); an inference already running finishes and its result is kept.
    """
    with session_scope(db) as s:
        experiment = _experiment(s, experiment_id)
        n = s.execute(sa.update(Task)
                      .where(Task.experiment_id == experiment_id,
                             Task.status.in_([TaskStatus.QUEUED, TaskStatus.HELD, TaskStatus.RUNNING]))
                      .values(status=TaskStatus.CANCELLED, lease_until=None, updated_at=utcnow())
                      ).rowcount
        if n:
            experiment.status = ExperimentStatus.CANCELLED
            experiment.finished_at = utcnow()
        return n


def resume_experiment(db: str, experiment_id: int) -> int:
    """Cancelled tasks -> queued and never sent, the experiment open again; how many.
    The caller enqueues them (enqueue_or_hand_off)."""
    with session_scope(db) as s:
        experiment = _experiment(s, experiment_id)
        n = s.execute(sa.update(Task)
                      .where(Task.experiment_id == experiment_id, Task.status == TaskStatus.CANCELLED)
                      .values(status=TaskStatus.QUEUED, enqueued_at=None, lease_until=None,
                              error=None, updated_at=utcnow())
                      ).rowcount
        if n:
            experiment.status = ExperimentStatus.QUEUED
            experiment.finished_at = None
        return n
