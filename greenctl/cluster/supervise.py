"""The supervisor `greenctl up` starts: it restarts a recorded service that died.

Every `interval_s` it checks each record under the cluster dir (pid and start time:
still that process). A dead one is restarted with the same argv after a backoff of
1 s, 2 s, 4 s ... (capped at 60 s); a service that died `give_up_after` times in a row,
each within `min_uptime_s` of its start, is given up on and marked failed. Each
restart and give-up is one line in <cluster dir>/logs/supervisor.log; the counts
live in the record's `extra` (restarts, last_restart, state), which `greenctl ps` shows.

Run as `python -m greenctl.cluster.supervise CLUSTER_DIR`. The URLs and credentials
the services need come from this process's environment (as `up` gave them), never argv.
An embedded Postgres or Valkey of the state dir that stops answering is started again
the same way `up` starts it (`shared.embedded.ensure`; Valkey keeps its port).
"""
from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import fasteners
import psutil

from greenctl.cluster import processes
from greenctl.cluster.records import ProcessRecord, path_of, read_all, write

NAME = "supervisor"
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
MIN_UPTIME_S = 30.0      # a service that dies sooner than this after its start died "quickly"
GIVE_UP_AFTER = 5        # quick deaths in a row before the service is marked failed
INTERVAL_S = 2.0
LOG_TAIL_LINES = 5


def argv(directory: Path) -> list[str]:
    from greenctl.cluster.services import GREENCTL

    return [GREENCTL[0], "-m", "greenctl.cluster.supervise", str(directory)]


def backoff_s(quick_deaths: int, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait before restart number `quick_deaths` (1, 2, 3 ...): base * 2^(n-1), capped."""
    return min(cap_s, base_s * 2 ** max(0, quick_deaths - 1))


def quick_deaths_after(previous: int, uptime_s: float, min_uptime_s: float = MIN_UPTIME_S) -> int:
    """Deaths in a row within `min_uptime_s` (seconds) of start, counting this one;
    a service that ran longer starts the count again at 1."""
    return previous + 1 if uptime_s < min_uptime_s else 1


def is_failed(record: ProcessRecord) -> bool:
    return record.extra.get("state") == "failed"


def log_tail(record: ProcessRecord, n: int = LOG_TAIL_LINES) -> list[str]:
    try:
        lines = Path(record.log).read_text(errors="replace").strip().splitlines()
    except OSError:
        return []
    return lines[-n:]


class Supervisor:
    def __init__(self, directory: Path, min_uptime_s: float = MIN_UPTIME_S,
                 give_up_after: int = GIVE_UP_AFTER, cap_s: float = BACKOFF_CAP_S):
        self.directory = directory
        self.min_uptime_s = min_uptime_s
        self.give_up_after = give_up_after
        self.cap_s = cap_s
        self.due: dict[str, tuple[float, int, float]] = {}  # name -> (restart at, quick deaths, create_time)
        self.server_attempts: dict[str, int] = {}           # embedded server -> restarts in a row
        self.failed_servers: set[str] = set()
        self.log_path = directory / "logs" / "supervisor.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, message: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(self.log_path, "a") as f:
            f.write(f"{stamp} {message}\n")

    def check_once(self, now: float | None = None) -> None:
        """One pass: note the services that died, restart those whose backoff is over."""
        now = time.time() if now is None else now
        for record in read_all(self.directory):
            if record.name == NAME or is_failed(record):
                continue
            pending = self.due.get(record.name)
            if pending is not None and pending[2] != record.create_time:
                pending = None            # `up` replaced the record meanwhile
                del self.due[record.name]
            if processes.alive(record):
                continue
            if pending is None:
                self._noticed_death(record, now)
            elif now >= pending[0]:
                self._restart(record, pending[1])
        self.check_servers(now)

    def check_servers(self, now: float) -> None:
        """Restart an embedded server (Postgres, Valkey) of this state dir that stopped
        answering, via `embedded.ensure` (Valkey keeps its port), with the same backoff."""
        from shared import embedded

        state_dir = self.directory.parent
        recorded = embedded.recorded(state_dir)
        if not recorded:
            return                        # external Postgres/Valkey: not ours to restart
        alive = embedded.running(state_dir)
        for name in recorded:
            key = f"server:{name}"
            if name in alive:
                self.server_attempts.pop(name, None)
                self.due.pop(key, None)
                continue
            if name in self.failed_servers:
                continue
            if key not in self.due:
                attempts = self.server_attempts.get(name, 0) + 1
                self.server_attempts[name] = attempts
                if attempts > self.give_up_after:
                    self.failed_servers.add(name)
                    self.log(f"embedded {name} did not come back after {attempts - 1} restarts: given up; "
                             "run `greenctl up` (or `greenctl down`)")
                    continue
                wait = backoff_s(attempts, cap_s=self.cap_s)
                self.due[key] = (now + wait, attempts, 0.0)
                self.log(f"embedded {name} is not answering; restarting it in {wait:g} s")
            elif now >= self.due[key][0]:
                del self.due[key]
                try:
                    info = embedded.ensure(state_dir, need_db=name == "postgres", need_broker=name == "valkey")
                    self.log(f"restarted embedded {name}: pid {info[name].get('pid')}")
                except Exception as exc:
                    self.log(f"restarting embedded {name} failed: {type(exc).__name__}: {exc}")

    def _noticed_death(self, record: ProcessRecord, now: float) -> None:
        uptime = now - record.create_time
        quick = quick_deaths_after(int(record.extra.get("quick_deaths", 0)), uptime, self.min_uptime_s)
        if quick >= self.give_up_after:
            tail = log_tail(record)
            self._update(record, {**record.extra, "quick_deaths": quick, "state": "failed",
                                  "last_log": tail})
            self.log(f"{record.name} (pid {record.pid}) died {quick} times within "
                     f"{self.min_uptime_s:g} s of its start: given up, marked failed; last log lines: "
                     + " | ".join(tail))
            return
        wait = backoff_s(quick, cap_s=self.cap_s)
        self.due[record.name] = (now + wait, quick, record.create_time)
        self.log(f"{record.name} (pid {record.pid}) exited after {uptime:.0f} s; restarting in {wait:g} s")

    def _restart(self, record: ProcessRecord, quick: int) -> None:
        # Under `up`'s lock: `up` and the supervisor never both start the same service.
        with fasteners.InterProcessLock(str(self.directory / ".up.lock")):
            del self.due[record.name]
            current = _read_one(self.directory, record.name)
            if current is None or current.create_time != record.create_time or processes.alive(current):
                return                    # removed (down), replaced or restarted by `up`
            if left := _stop_leftovers(record):
                self.log(f"stopped what the dead {record.name} left running: pids {', '.join(map(str, left))}")
            extra = {**record.extra, "restarts": int(record.extra.get("restarts", 0)) + 1,
                     "last_restart": time.time(), "quick_deaths": quick, "state": "running"}
            new = processes.spawn(self.directory, record.name, record.argv, _environment(self.directory, record),
                                  Path(record.log), node=record.node, url=record.url, extra=extra)
        self.log(f"restarted {record.name}: pid {new.pid} (restart {extra['restarts']})")

    def _update(self, record: ProcessRecord, extra: dict) -> None:
        with fasteners.InterProcessLock(str(self.directory / ".up.lock")):
            current = _read_one(self.directory, record.name)
            if current is not None and current.create_time == record.create_time:
                write(self.directory, ProcessRecord(**{**record.__dict__, "extra": extra}))


def _leftovers(record: ProcessRecord) -> list[psutil.Process]:
    """Processes the dead service left in its session (e.g. Celery beat, whose parent
    the scheduler was): same process group, started no earlier than the service."""
    found = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getpgid(proc.pid) == record.pid and proc.info["create_time"] >= record.create_time - 0.05 \
                    and proc.pid != record.pid:
                found.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _stop_leftovers(record: ProcessRecord, grace_s: float = 5) -> list[int]:
    """Before a restart: a second beat or a half-dead pool child must not run beside the
    new one. Returns the pids stopped."""
    procs = _leftovers(record)
    processes.terminate(procs, grace_s)
    return [p.pid for p in procs]


def _read_one(directory: Path, name: str) -> ProcessRecord | None:
    if not path_of(directory, name).exists():
        return None
    return next((r for r in read_all(directory) if r.name == name), None)


def _environment(directory: Path, record: ProcessRecord) -> dict:
    """What the service is restarted with: this process's environment (the URLs `up`
    gave it) and, for Flower, its basic-auth credentials, found as `up` finds them."""
    from shared.config import Settings, child_environment

    extra = {}
    if record.name == "flower":
        from greenctl.cluster.services import flower_credentials

        user, password, _ = flower_credentials(directory, Settings.from_env())
        extra["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
    return child_environment(extra)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cluster_dir", type=Path)
    parser.add_argument("--interval", type=float, default=INTERVAL_S, help="seconds between checks")
    parser.add_argument("--min-uptime", type=float, default=MIN_UPTIME_S)
    parser.add_argument("--give-up-after", type=int, default=GIVE_UP_AFTER)
    ns = parser.parse_args(args)
    supervisor = Supervisor(ns.cluster_dir, ns.min_uptime, ns.give_up_after)
    supervisor.log(f"supervising the services recorded in {ns.cluster_dir}")
    while True:
        try:
            supervisor.check_once()
        except Exception as exc:  # one bad pass (a record being rewritten) must not end supervision
            supervisor.log(f"check failed: {type(exc).__name__}: {exc}")
        time.sleep(ns.interval)


if __name__ == "__main__":
    main()
