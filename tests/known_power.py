"""A known-power test bench: fake RAPL counters that a separate process serves at a known
power profile, seen by a real `greenctl worker` through a mount namespace.

As root, `unshare -m` gives the worker its own mount table, in which a directory of ours
is bind-mounted over /sys/class: CodeCarbon (and greenctl) then read our
powercap/intel-rapl/intel-rapl:N/energy_uj as the machine's RAPL counters. Each energy_uj
is a FIFO answered by the counter server with the integral of a piecewise-constant power
profile up to the moment of the read (see SERVER), so the true energy of any interval is
the profile's integral over it, computed here independently of greenctl and CodeCarbon.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests import processes

ROOT = processes.ROOT

# The counter server: its own process, so the worker's load never bends the truth. Each
# energy_uj is a FIFO: a read blocks until this process answers with the counter's value
# at that moment (quantized to `tick_s`, as RAPL hardware updates about every 1 ms), so
# what a reader gets never lags behind its read, however busy the machine is.
SERVER = r"""
import errno, json, math, os, sys, threading, time
cfg = json.loads(open(sys.argv[1]).read())
max_uj, tick = cfg["max_range_uj"], cfg["tick_s"]

def energy_uj(d, t):
    # The counter at t (uJ): its offset plus the profile's integral from its first breakpoint.
    t = math.floor(t / tick) * tick if tick else t
    prof, e = d["profile"], d["offset_uj"]
    for i, (t0, w) in enumerate(prof):
        t1 = prof[i + 1][0] if i + 1 < len(prof) else float("inf")
        if t <= t0:
            break
        e += w * (min(t, t1) - t0) * 1e6
    return int(e) % max_uj

def serve(d):
    path = os.path.join(d["dir"], "energy_uj")
    log = open(d["log"], "a", buffering=1)           # when each read was answered (s since the epoch)
    while True:
        fd = os.open(path, os.O_WRONLY)             # blocks until a reader opens the FIFO
        now = time.time()
        os.write(fd, f"{energy_uj(d, now)}\n".encode())
        os.close(fd)
        log.write(f"{now!r}\n")
        while True:                                  # one value per open: wait for that reader to close
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                raise
            time.sleep(0.0002)

try:    # answer at once however loaded the machine is: real counters never keep a reader waiting
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
except (OSError, AttributeError):
    os.nice(-10) if os.geteuid() == 0 else None
for d in cfg["domains"].values():
    threading.Thread(target=serve, args=(d,), daemon=True).start()
threading.Event().wait()
"""


def constant(watts: float, start: float) -> list[list[float]]:
    """A constant power (W) from `start` (s since the epoch) on."""
    return [[start, watts]]


def square(low_w: float, high_w: float, period_s: float, start: float, span_s: float = 900) -> list[list[float]]:
    """Power alternating low/high every half period (W, s), from `start` for `span_s` (s)."""
    n = int(span_s / (period_s / 2))
    return [[start + i * period_s / 2, high_w if i % 2 else low_w] for i in range(n)]


def integral_j(profile: list[list[float]], t0: float, t1: float) -> float:
    """Energy (J) of a piecewise-constant profile [[t, W], ...] between t0 and t1 (s)."""
    total = 0.0
    for i, (a, w) in enumerate(profile):
        b = profile[i + 1][0] if i + 1 < len(profile) else float("inf")
        lo, hi = max(a, t0), min(b, t1)
        if hi > lo:
            total += w * (hi - lo)
    return total


@dataclass
class FakeRapl:
    """A fake /sys/class tree (`root`) and its counters; `domains`: name -> profile [[t, W], ...]."""
    root: Path
    domains: dict[str, list[list[float]]]
    max_range_uj: int = 262_143_328_850
    mode: int = 0o444
    tick_s: float = 0.0005                 # the counter's update period (s)
    offset_uj: int = 10_000_000_000        # the counter at the profile's start, as after uptime

    def dirs(self) -> dict[str, Path]:
        rapl = self.root / "powercap" / "intel-rapl"
        return {name: rapl / f"intel-rapl:{i}" for i, name in enumerate(self.domains)}

    def build(self) -> None:
        rapl = self.root / "powercap" / "intel-rapl"
        rapl.mkdir(parents=True, exist_ok=True)
        if not (rapl / "subsystem").exists():
            (rapl / "subsystem").symlink_to("..")
        for i, (name, d) in enumerate(self.dirs().items()):
            d.mkdir(exist_ok=True)
            (d / "name").write_text(name + "\n")
            (d / "max_energy_range_uj").write_text(f"{self.max_range_uj}\n")
            if not (d / "energy_uj").exists():
                os.mkfifo(d / "energy_uj")
            os.chmod(d / "energy_uj", self.mode)

    def offsets(self) -> dict[str, int]:
        return {name: self.offset_uj + i * 7_777_777 for i, name in enumerate(self.domains)}

    def true_j(self, name: str, t0: float, t1: float) -> float:
        return integral_j(self.domains[name], t0, t1)

    def reads(self, name: str) -> list[float]:
        """When domain `name`'s counter was read (s since the epoch, ascending)."""
        path = self.root / f"reads-{name}.log"
        return sorted(float(x) for x in path.read_text().split()) if path.exists() else []

    def wraps_between(self, name: str, t0: float, t1: float) -> bool:
        """Whether domain `name`'s counter wrapped at max_range_uj between t0 and t1."""
        start = self.domains[name][0][0]
        e0 = self.offsets()[name] + integral_j(self.domains[name], start, t0) * 1e6
        e1 = self.offsets()[name] + integral_j(self.domains[name], start, t1) * 1e6
        return int(e0 // self.max_range_uj) != int(e1 // self.max_range_uj)

    @contextmanager
    def running(self):
        """The tree, its counters served by their own process until the block ends."""
        self.build()
        cfg = {"max_range_uj": self.max_range_uj, "tick_s": self.tick_s, "domains": {
            name: {"dir": str(d), "offset_uj": self.offsets()[name], "profile": self.domains[name],
                   "log": str(self.root / f"reads-{name}.log")} for name, d in self.dirs().items()}}
        (self.root / "bench.json").write_text(json.dumps(cfg))
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(self.root / "bench.json")],
                                start_new_session=True)
        try:
            time.sleep(0.2)
            assert proc.poll() is None, "the RAPL counter server died at start"
            yield self
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def missing() -> str | None:
    """Why the bench cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the known-power bench needs root (a mount namespace over /sys/class)"
    if shutil.which("unshare") is None:
        return "the known-power bench needs util-linux `unshare`"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs none /sys/class"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare -m` cannot mount over /sys/class here: {probe.stderr.strip()[:200]}"
    return None


def _interpreter_home() -> Path | None:
    """The directory under a private home (e.g. /root, mode 0700) that holds our interpreter,
    or None when another user can reach it already."""
    real = Path(os.path.realpath(sys.executable))
    for parent in reversed(real.parents):     # outermost first: /, /root, /root/.pyenv, ...
        if not os.stat(parent).st_mode & 0o001:
            return parent
    return None


def in_namespace(fake_root: Path, argv: list[str], user: str | None = None) -> list[str]:
    """argv run in a new mount namespace whose /sys/class is `fake_root` (as `user`, if given).

    For a user, a home that hides our interpreter (root's, 0700) is replaced, in that
    namespace only, by an open tmpfs holding just the interpreter's tree."""
    import shlex

    steps = [f"mount --bind {shlex.quote(str(fake_root))} /sys/class"]
    private = _interpreter_home() if user else None
    if private is not None:
        inside = Path(os.path.realpath(sys.executable)).relative_to(private).parts[0]
        stage = shlex.quote(str(fake_root.parent / "interpreter"))
        keep, mounted = shlex.quote(str(private / inside)), shlex.quote(str(private))
        steps += [f"mkdir -p {stage}", f"mount --bind {keep} {stage}",
                  f"mount -t tmpfs -o mode=0755 none {mounted}", f"mkdir -p {keep}",
                  f"mount --bind {stage} {keep}"]
    # At nice -10: another session's load on a shared machine then rarely preempts the worker
    # between its clock read and its counter read (that would shift the window, not the energy).
    run = ["nice", "-n", "-10"] + (["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
                                   if user else [])
    script = " && ".join(steps) + ' && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *run, *argv]


@contextmanager
def worker(env: dict, fake_root: Path, queue: str, log: Path, *extra: str, user: str | None = None,
           ready_timeout: float = 120):
    """A real `greenctl worker` whose /sys/class is the fake tree, stopped when the block ends."""
    argv = in_namespace(fake_root, [sys.executable, "-m", "greenctl", "worker", "--queue", queue, *extra],
                        user=user)
    with processes.service(argv, env, log, f"worker on {queue}", ready_timeout) as proc:
        yield proc


# -- `python -m tests.known_power`: per-task error at 80 ms, 300 ms and 1.5 s windows -----------

_ERROR_PROBE = r"""
import json, sys, time
from codecarbon import OfflineEmissionsTracker
from worker.energy import EnergyMeter
cc = OfflineEmissionsTracker(country_iso_code="CAN", tracking_mode="machine", save_to_file=False,
                             log_level="error", pue=1.0, allow_multiple_runs=True)
cc.start_task("warm-up"); cc.stop_task()
meter = EnergyMeter(host_lock=None)
out = []
for seconds, n in json.loads(sys.argv[1]):
    for _ in range(n):
        cc.start_task("x"); time.sleep(seconds); r = cc.stop_task()      # CodeCarbon alone (before)
        out.append(["codecarbon", seconds, r.cpu_energy, r.ram_energy, r.duration])
        meter.begin("x"); time.sleep(seconds); m = meter.end("x")          # greenctl's meter (after)
        out.append(["greenctl", seconds, m.cpu_kwh, m.ram_kwh, m.duration_s])
print(json.dumps(out))
"""


def main() -> None:
    """Per-window error against 12 W package + 3 W dram, before (CodeCarbon's task windows,
    RAM its estimate) and after (greenctl's meter: RAM from the dram counter). Needs root."""
    import tempfile

    import numpy as np

    why = missing()
    if why:
        raise SystemExit(why)
    plan = [[0.08, 12], [0.3, 8], [1.5, 4]]
    with tempfile.TemporaryDirectory(prefix="greenctl-known-power-") as tmp:
        start = time.time()
        bench = FakeRapl(Path(tmp) / "sysclass", {"package-0": constant(12.0, start), "dram": constant(3.0, start)})
        with bench.running():
            out = subprocess.run(in_namespace(bench.root, [sys.executable, "-c", _ERROR_PROBE, json.dumps(plan)]),
                                 capture_output=True, text=True, cwd=ROOT, check=True)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    print("window   meter       n  CPU |error| median / worst   CPU+RAM |error| median / worst")
    for seconds, _ in plan:
        for meter in ("codecarbon", "greenctl"):
            rr = [r for r in rows if r[0] == meter and r[1] == seconds]
            cpu = np.abs([r[2] * 3.6e6 / (12.0 * r[4]) - 1 for r in rr])
            tot = np.abs([(r[2] + r[3]) * 3.6e6 / (15.0 * r[4]) - 1 for r in rr])
            print(f"{seconds * 1e3:5.0f} ms {meter:10s} {len(rr):3d}  {np.median(cpu):7.2%} / {np.max(cpu):6.2%}"
                  f"          {np.median(tot):8.2%} / {np.max(tot):7.2%}")


if __name__ == "__main__":
    main()
