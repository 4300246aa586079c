"""Waiting for an experiment with a progress bar on stderr (stdout stays for data)."""
from __future__ import annotations

import time

import sqlalchemy as sa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.db import session_scope
from shared.models import Experiment, Task, TaskStatus


def counts(db: str, experiment_id: int) -> tuple[int, int, int, str]:
    """(finished, failed, total, status) of an experiment."""
    with session_scope(db) as s:
        exp = s.get(Experiment, experiment_id)
        by_status = dict(s.execute(
            sa.select(Task.status, sa.func.count()).where(Task.experiment_id == experiment_id)
            .group_by(Task.status)).all())
    finished = sum(by_status.get(k, 0) for k in TaskStatus.FINISHED)
    return finished, by_status.get(TaskStatus.FAILED, 0), exp.n_tasks, exp.status


def wait(db: str, experiment_id: int, console, timeout: float | None = None,
         poll_s: float = 0.5, alive=None) -> bool:
    """Block until every task is finished; False on timeout or when `alive()` turns False."""
    started = time.monotonic()
    with Progress(TextColumn("[bold]experiment {task.fields[eid]}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        finished, failed, total, _ = counts(db, experiment_id)
        task = bar.add_task("run", total=total, eid=experiment_id, failed=failed)
        while True:
            finished, failed, total, status = counts(db, experiment_id)
            bar.update(task, completed=finished, failed=failed)
            if finished >= total:
                return True
            if timeout is not None and time.monotonic() - started > timeout:
                return False
            if alive is not None and not alive():
                return False
            time.sleep(poll_s)
