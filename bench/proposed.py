"""The fixes the benchmarks propose for code outside bench/, written out so they can
be timed next to the current code in the same run. greenctl does not use them.

- `claim_cached`: worker.store.claim without re-reading the variant and the
  experiment's spec for every task (both are fixed once submitted).
- `write_result_exists`: worker.store.write_result, but the experiment is closed
  by one statement run after the commit, with EXISTS instead of COUNT(*): the
  cost no longer grows with the experiment, and writers finishing the last
  tasks together can no longer all miss the close (one more commit per write).
- `write_result_exists_one_commit`: EXISTS in the same transaction (one commit,
  but the last-writers race stays: the reconcile job would close stragglers).
- `enqueue_batched` lives in bench.scheduler_scale (kombu's Producer.batch).
"""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from shared.db import session_scope
from shared.models import Experiment, Result, Task, TaskStatus, Variant, utcnow
from worker.store import Job

OPEN = [TaskStatus.QUEUED, TaskStatus.RUNNING]


def claim_cached(db: str, task_id: int, worker: str, lease_s: int, seen: dict) -> Job | None:
    """One UPDATE ... RETURNING per task; variant and spec read once per variant."""
    with session_scope(db) as s:
        row = s.execute(
            sa.update(Task)
            .where(Task.id == task_id,
                   sa.or_(Task.status == TaskStatus.QUEUED,
                          sa.and_(Task.status == TaskStatus.RUNNING, Task.lease_until < utcnow())))
            .values(status=TaskStatus.RUNNING, attempts=Task.attempts + 1, worker=worker,
                    lease_until=utcnow() + timedelta(seconds=lease_s), updated_at=utcnow())
            .returning(Task.experiment_id, Task.variant_id, Task.text, Task.label, Task.attempts)
        ).first()
        if row is None:
            return None
        if row.variant_id not in seen:
            variant = s.get(Variant, row.variant_id)
            experiment = s.get(Experiment, row.experiment_id)
            if experiment.status == TaskStatus.QUEUED:
                experiment.status = TaskStatus.RUNNING
            seen[row.variant_id] = (variant.model, variant.engine, variant.variant, dict(variant.params),
                                    dict(experiment.spec))
        model, engine, variant, params, spec = seen[row.variant_id]
        return Job(task_id=task_id, experiment_id=row.experiment_id, variant_id=row.variant_id,
                   text=row.text, label=row.label, attempt=row.attempts, model=model, engine=engine,
                   variant=variant, params=params, spec=spec)


def close_if_done(db: str, experiment_id: int) -> bool:
    """Close the experiment when no task is open; run AFTER the result's commit, so the
    last writer to commit sees every other task finished. True when this call closed it."""
    open_task = sa.exists().where(Task.experiment_id == experiment_id, Task.status.in_(OPEN))
    with session_scope(db) as s:
        return bool(s.execute(
            sa.update(Experiment)
            .where(Experiment.id == experiment_id, Experiment.finished_at.is_(None), ~open_task)
            .values(status=TaskStatus.DONE, finished_at=utcnow())).rowcount)


def write_result_exists(db: str, result: dict) -> bool:
    with session_scope(db) as s:
        s.execute(insert(Result).values(**result).on_conflict_do_nothing(index_elements=["task_id"]))
        s.execute(sa.update(Task).where(Task.id == result["task_id"])
                  .values(status=TaskStatus.DONE, error=None, lease_until=None, updated_at=utcnow()))
    return close_if_done(db, result["experiment_id"])


def write_result_exists_one_commit(db: str, result: dict) -> bool:
    open_task = sa.exists().where(Task.experiment_id == result["experiment_id"], Task.status.in_(OPEN))
    with session_scope(db) as s:
        s.execute(insert(Result).values(**result).on_conflict_do_nothing(index_elements=["task_id"]))
        s.execute(sa.update(Task).where(Task.id == result["task_id"])
                  .values(status=TaskStatus.DONE, error=None, lease_until=None, updated_at=utcnow()))
        return bool(s.execute(
            sa.update(Experiment)
            .where(Experiment.id == result["experiment_id"], Experiment.finished_at.is_(None), ~open_task)
            .values(status=TaskStatus.DONE, finished_at=utcnow())).rowcount)


def task_only_meter():
    """worker.energy.EnergyMeter without `tracker.start()`: CodeCarbon's pure task mode.

    With a started tracker, every start_task stops CodeCarbon's periodic measuring
    thread and every stop_task starts it (and the 1 s power monitor) again: thread
    churn next to llama.cpp's threads on every task. In task mode nothing runs
    between tasks. Same tracker settings as the worker's.
    """
    import logging

    from codecarbon import OfflineEmissionsTracker

    from worker.energy import EnergyMeter

    meter = EnergyMeter.__new__(EnergyMeter)
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    meter.forced = False
    meter._tracker = OfflineEmissionsTracker(   # noqa: SLF001 (the worker's own settings, minus start())
        country_iso_code="CAN", tracking_mode="machine", save_to_file=False, log_level="error", pue=1.0,
        measure_power_secs=1.0, allow_multiple_runs=True)
    meter.begin("bench-warm-up")                 # hardware is set up on the first window
    meter._tracker.stop_task()                   # noqa: SLF001
    meter.method, meter.detail = meter._describe()   # noqa: SLF001
    return meter
