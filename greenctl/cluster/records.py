"""Pid files: one JSON record per background process, under <state>/cluster/."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

SUFFIX = ".pid.json"


@dataclass(frozen=True)
class ProcessRecord:
    name: str                  # service name: scheduler, estimator, worker-1, flower
    pid: int
    create_time: float         # psutil's start time: with pid, names exactly one process
    argv: list[str]
    log: str
    node: str = ""             # Celery node name, for a ping
    url: str = ""              # Flower's address
    extra: dict = field(default_factory=dict)


def cluster_dir(state_dir: Path) -> Path:
    return state_dir / "cluster"


def path_of(directory: Path, name: str) -> Path:
    return directory / f"{name}{SUFFIX}"


def write(directory: Path, record: ProcessRecord) -> Path:
    """Atomically: a crash never leaves half a record."""
    directory.mkdir(parents=True, exist_ok=True)
    path = path_of(directory, record.name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2))
    os.replace(tmp, path)
    return path


def read_all(directory: Path) -> list[ProcessRecord]:
    """Every readable record, in name order; unreadable files are dropped as stale."""
    records = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            records.append(ProcessRecord(**json.loads(path.read_text())))
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
    return records


def remove(directory: Path, name: str) -> None:
    path_of(directory, name).unlink(missing_ok=True)


def process_of(record: ProcessRecord) -> psutil.Process | None:
    """The live process the record names, or None (exited, or its pid now belongs to another)."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > 0.05 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    # A process title library may rewrite argv; then its words still say what it is.
    if cmdline == record.argv or any("greenctl" in w or "celery" in w for w in cmdline):
        return proc
    return None
