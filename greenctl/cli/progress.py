"""Waiting for an experiment with a progress bar on stderr (stdout stays for data).

A wait never goes quiet: the bar shows the online workers of the experiment's
queues and, once results arrive, an ETA; when a queue has no online worker the
wait says so within HINT_FIRST_S and repeats it every HINT_EVERY_S, with the
command that unblocks it.
"""
from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from greenctl import queries

HINT_FIRST_S = 15.0
HINT_EVERY_S = 120.0
CHECK_WORKERS_EVERY_S = 5.0


def no_worker_hint(queues: list[str]) -> str:
    names = ", ".join(f"'{q}'" for q in queues)
    start = " and ".join(f"`greenctl worker --queue {q}`" for q in queues)
    return (f"waiting: no online worker consumes queue {names}: start one with {start} or `greenctl up`; "
            "still waiting (a worker may come; Ctrl-C stops waiting, not the experiment)")


def eta_text(done_since_start: int, seconds: float, remaining: int) -> str:
    """'ETA 3m 20s' from the rate so far; '' until a result has arrived."""
    if done_since_start <= 0 or seconds <= 0:
        return ""
    left = remaining * seconds / done_since_start
    minutes, secs = divmod(int(left + 0.5), 60)
    return f"ETA {minutes}m {secs:02d}s" if minutes else f"ETA {secs}s"


def workers_text(queues: list[str], online: dict[str, list[str]]) -> str:
    return ", ".join(f"{q}: {len(online.get(q, []))} worker{'s' * (len(online.get(q, [])) != 1)}"
                     for q in queues)


def wait(db: str, experiment_id: int, console, timeout: float | None = None,
         poll_s: float = 0.5, alive=None, offline_after_s: float = 60.0) -> bool:
    """Block until every task is finished; False on timeout or when `alive()` turns False."""
    started = time.monotonic()
    next_hint, next_check = started + HINT_FIRST_S, started
    with Progress(TextColumn("[bold]experiment {task.fields[eid]}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
                  TextColumn("{task.fields[workers]}"), TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                  console=console, transient=False) as bar:
        first_done, _, total, _ = queries.progress(db, experiment_id)
        task = bar.add_task("run", total=total, eid=experiment_id, failed=0, workers="", eta="")
        while True:
            finished, failed, total, status = queries.progress(db, experiment_id)
            now = time.monotonic()
            fields = {"eta": eta_text(finished - first_done, now - started, total - finished)}
            if finished >= total:
                bar.update(task, completed=finished, failed=failed, eta="")
                return True
            if now >= next_check:
                queues = queries.open_queues(db, experiment_id)
                online = queries.online_workers(db, offline_after_s)
                fields["workers"] = workers_text(queues, online)
                missing = [q for q in queues if not online.get(q)]
                if missing and now >= next_hint:
                    bar.console.print(no_worker_hint(missing), highlight=False)
                    next_hint = now + HINT_EVERY_S
                next_check = now + CHECK_WORKERS_EVERY_S
            bar.update(task, completed=finished, failed=failed, **fields)
            if timeout is not None and now - started > timeout:
                return False
            if alive is not None and not alive():
                return False
            time.sleep(poll_s)
