"""Starting detached processes and stopping exactly them."""
from __future__ import annotations

import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import psutil

from greenctl.cluster.records import ProcessRecord, process_of, remove, write


DEFERRED = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def signals_deferred():
    """Hold Ctrl-C/SIGTERM until the block ends, so a process is never started without its record."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _unblock_signals() -> None:
    """In the child: a blocked-signal mask survives exec, and a worker must hear SIGTERM."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, DEFERRED)


def spawn(directory: Path, name: str, argv: list[str], env: dict, log: Path,
          node: str = "", url: str = "", extra: dict | None = None,
          started: list | None = None) -> ProcessRecord:
    """Start `argv` in its own session (a terminal's Ctrl-C doesn't reach it), output to `log`.
    The record is appended to `started` before a deferred Ctrl-C can fire, so a caller
    that stops what it started on Ctrl-C never misses this one."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with signals_deferred(), open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                preexec_fn=_unblock_signals)
        record = ProcessRecord(name=name, pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(),
                               argv=list(argv), log=str(log), node=node, url=url, extra=extra or {})
        write(directory, record)
        if started is not None:
            started.append(record)
    return record


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    """Its children, grandchildren... (e.g. Celery beat under the scheduler), known now,
    before the parent's exit orphans them."""
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def terminate(procs: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM, then SIGKILL whatever is left after `grace_s`. psutil checks each
    process's start time before signalling: a reused pid is never hit."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def stop(directory: Path, records: list[ProcessRecord], grace_s: float = 30,
         descendants: bool = True) -> list[str]:
    """Stop each recorded process, SIGTERM first (a Celery worker finishes the task in
    hand within `grace_s`), then (unless `descendants` is False: the supervisor's
    children are services with records of their own) its descendants still running;
    remove the records. Returns the names of those that were running."""
    leaders = {r.name: p for r in records if (p := process_of(r)) is not None}
    children = [d for p in leaders.values() for d in _descendants(p)] if descendants else []
    terminate(list(leaders.values()), grace_s)
    terminate([d for d in children if d.is_running()], grace_s=3)
    for record in records:
        remove(directory, record.name)
    return list(leaders)


def alive(record: ProcessRecord) -> bool:
    return process_of(record) is not None

