"""Submitting an experiment: one transaction writes it, its variants and one
task per (sample x variant x repeat); then the tasks are enqueued.

If the broker loses messages or enqueueing stops halfway, Postgres still holds
every task as `queued` with no `enqueued_at`, and `enqueue_pending` (also run
by the reconcile job) sends them again.
"""
from __future__ import annotations

from typing import Callable, Iterable

import sqlalchemy as sa

from scheduler.dataset import Sample, load_samples
from scheduler.spec import ExperimentSpec
from shared.celery_app import INFER_TASK
from shared.db import session_scope
from shared.models import Experiment, Task, TaskStatus, Variant, utcnow

BATCH = 5000


def experiment_record(spec: ExperimentSpec, examples: list[tuple[str, str]]) -> dict:
    """What is stored of the spec: all a worker needs, the dataset itself excluded."""
    return spec.model_dump(mode="json") | {"few_shot_examples": [list(e) for e in examples]}


def write_experiment(db: str, spec: ExperimentSpec, samples: list[Sample],
                     examples: list[tuple[str, str]]) -> int:
    """Experiment, variants and tasks in ONE transaction; returns the experiment id."""
    with session_scope(db) as s:
        experiment = Experiment(name=spec.name, spec=experiment_record(spec, examples),
                                status=TaskStatus.QUEUED,
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
                             status=TaskStatus.QUEUED, attempts=0)
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
                 .order_by(Task.variant_id, Task.id))
        if experiment_id is not None:
            query = query.where(Task.experiment_id == experiment_id)
        rows = s.execute(query).all()
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        with app.producer_or_acquire() as producer:
            for task_id, queue in batch:
                app.send_task(INFER_TASK, args=[task_id], queue=queue, producer=producer)
        with session_scope(db) as s:
            s.execute(sa.update(Task).where(Task.id.in_([r[0] for r in batch]))
                      .values(enqueued_at=utcnow()))
        sent += len(batch)
        if progress:
            progress(len(batch))
    return sent


def submit(db: str, app, spec: ExperimentSpec) -> int:
    """Validate the data, write everything in one transaction, enqueue; the experiment id."""
    samples, examples = load_samples(spec.dataset, spec.prompt.few_shot)
    experiment_id = write_experiment(db, spec, samples, examples)
    enqueue_pending(db, app, experiment_id)
    return experiment_id
