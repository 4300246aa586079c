"""Pid files and process control of the local cluster, on real processes."""
from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

from greenctl.cluster import processes, records
from greenctl.cluster.records import ProcessRecord

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# A parent that starts a child and sleeps, as Celery beat sits under the scheduler.
PARENT = [sys.executable, "-c",
          "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
          "time.sleep(120)"]


@pytest.fixture()
def directory(tmp_path):
    d = tmp_path / "cluster"
    yield d
    if d.exists():
        processes.stop(d, records.read_all(d), grace_s=2)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_spawn_writes_a_record_that_names_the_live_process(directory, tmp_path):
    record = processes.spawn(directory, "sleeper", SLEEPER, dict(os.environ), tmp_path / "s.log")
    assert [r.name for r in records.read_all(directory)] == ["sleeper"]
    assert processes.alive(record)
    assert os.getpgid(record.pid) == record.pid, "own session: a terminal's Ctrl-C does not reach it"
    # SIGTERM must not stay blocked in the child (spawn defers it in the parent).
    blocked = next(l for l in open(f"/proc/{record.pid}/status") if l.startswith("SigBlk"))
    assert int(blocked.split()[1], 16) == 0


def test_stop_ends_the_process_and_its_children_and_removes_the_record(directory, tmp_path):
    record = processes.spawn(directory, "parent", PARENT, dict(os.environ), tmp_path / "p.log")
    deadline = time.monotonic() + 20
    while not psutil.Process(record.pid).children() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = psutil.Process(record.pid).children()[0].pid
    assert processes.stop(directory, [record], grace_s=5) == ["parent"]
    assert _gone(record.pid) and _gone(child)
    assert records.read_all(directory) == []


def test_a_stale_record_is_not_alive_and_a_reused_pid_is_never_signalled(directory, tmp_path):
    proc = processes.spawn(directory, "gone", SLEEPER, dict(os.environ), tmp_path / "g.log")
    psutil.Process(proc.pid).kill()
    psutil.Process(proc.pid).wait(10)
    assert not processes.alive(proc)
    # This test's own pid in a record with another start time: a pid reused by the system.
    me = psutil.Process()
    reused = ProcessRecord(name="reused", pid=me.pid, create_time=me.create_time() - 100,
                           argv=me.cmdline(), log="")
    records.write(directory, reused)
    assert not processes.alive(reused)
    assert processes.stop(directory, records.read_all(directory), grace_s=1) == []
    assert me.is_running() and records.read_all(directory) == []


def test_an_unreadable_pid_file_is_dropped(directory):
    directory.mkdir(parents=True)
    (directory / f"broken{records.SUFFIX}").write_text("{not json")
    assert records.read_all(directory) == []
    assert not (directory / f"broken{records.SUFFIX}").exists()
