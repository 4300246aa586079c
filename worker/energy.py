"""Energy per task from one long-lived CodeCarbon tracker per worker process.

Creating a tracker costs seconds, so the worker creates one and opens a
begin/end window per task. The tracker measures the whole machine
(`tracking_mode="machine"`): an Ollama server is not our process.

A window gives a raw `Measurement` (IT energy per component, kWh, and the
window's duration; PUE 1 inside CodeCarbon), as Zeus's monitor does. A window
uses CodeCarbon's measuring layer only: each hardware part's `start()` at its
begin, the tracker's `_do_measurements()` at its end, and CodeCarbon's power
sampling every `measure_power_secs` of a longer window. Its task layer
(`start_task`/`stop_task`) also builds two emissions records per window, which
we would discard, and starts a thread: 0.78 ms per window instead of 0.35 ms
(bench P4). The
experiment's PUE, grid intensity and idle power are applied afterwards, in one
accounting step (`shared.accounting.account`), so one worker serves experiments
with different carbon settings. Every measurement says how it was obtained.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared.accounting import g_to_kg_per_kwh, kwh_from_joules, mean_watts

# CodeCarbon CPU modes -> how the CPU energy was obtained.
_CPU_METHODS = {
    "intel_rapl": "rapl",
    "apple_powermetrics": "powermetrics",
    "intel_power_gadget": "powermetrics",
}
METHODS = ("rapl", "nvml", "powermetrics", "estimated", "forced")
MEASURED = ("rapl", "nvml", "powermetrics")   # a power counter, not a model of one
POWERCAP = Path("/sys/class/powercap")
# Where two workers of one host meet to take turns measuring: one fixed path for the whole
# host (not the state dir, which differs per worker), world-writable so users share it.
HOST_LOCK_PATH = Path("/tmp/greenctl-measure.lock")


def combined_method(parts: dict[str, str]) -> str:
    """One row's method from its components' (e.g. {"cpu": "rapl", "ram": "estimated",
    "gpu": "none"} -> "rapl+estimated"): plain `rapl` only when every counted part is."""
    used = [m for m in (parts.get("cpu"), parts.get("gpu"), parts.get("ram")) if m not in (None, "none", "excluded")]
    return "+".join(dict.fromkeys(used)) or "none"


def measured_kwh(cpu_kwh: float, ram_kwh: float, gpu_kwh: float, parts: dict[str, str]) -> float:
    """The part of a window's energy (kWh) read from a power counter (METHODS in MEASURED)."""
    by = {"cpu": cpu_kwh, "ram": ram_kwh, "gpu": gpu_kwh}
    return sum(kwh for k, kwh in by.items() if parts.get(k) in MEASURED)


def counter_delta_uj(before_uj: int, after_uj: int, max_range_uj: int) -> int:
    """Energy (uJ) between two reads of a RAPL counter that wraps at `max_range_uj`
    (one wrap at most between the reads)."""
    return after_uj - before_uj if after_uj >= before_uj else after_uj + max_range_uj - before_uj


def rapl_domains(root: Path = POWERCAP) -> dict[str, Path]:
    """RAPL domains under `root` by name (e.g. "package-0", "dram"), the first of each name."""
    found: dict[str, Path] = {}
    for d in sorted(root.glob("intel-rapl*/intel-rapl:*")) + sorted(root.glob("intel-rapl:*")):
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            continue
        if (d / "energy_uj").exists():
            found.setdefault(name, d)
    return found


class RaplCounter:
    """One RAPL domain's cumulative counter (energy_uj), read at a window's ends."""

    def __init__(self, domain: Path):
        self.path = domain / "energy_uj"
        self.max_range_uj = int((domain / "max_energy_range_uj").read_text())
        self._start = self.read()

    def read(self) -> int:
        return int(self.path.read_text())

    def begin(self) -> None:
        self._start = self.read()

    def end_kwh(self) -> float:
        return kwh_from_joules(counter_delta_uj(self._start, self.read(), self.max_range_uj) / 1e6)


@dataclass(frozen=True)
class Measurement:
    """What one begin/end window measured: IT energy per component (kWh, no PUE) and
    the window's duration (s)."""
    cpu_kwh: float
    ram_kwh: float
    gpu_kwh: float
    duration_s: float
    method: str                    # the components' methods, e.g. "rapl" or "rapl+estimated"
    detail: str                    # per component, e.g. "cpu=rapl ram=estimated gpu=none"
    measured_kwh: float = 0.0      # the part of total_kwh read from a power counter
    started_at: float = 0.0        # when the window opened (s since the epoch)

    @property
    def total_kwh(self) -> float:
        return self.cpu_kwh + self.ram_kwh + self.gpu_kwh


def _host_lock(path: Path):
    """The host-wide measuring lock (fasteners, a file lock the kernel drops when its
    process dies), its file made writable by every user of the host."""
    import fasteners

    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            os.fchmod(fd, 0o666)
        except OSError:         # another user's file: theirs to chmod, we only need to open it
            pass
        os.close(fd)
    except OSError as exc:
        raise RuntimeError(f"cannot open the host-wide measuring lock {path}: {exc}; "
                           f"run `sudo chmod 666 {path}` (or set GREENCTL_MEASURE_LOCK)") from None
    return fasteners.InterProcessLock(str(path))


class PowerSampler:
    """CodeCarbon's power sampling (`monitor_power` of the parts that have one) every
    `interval_s` of an open window, from one long-lived thread. For a window shorter than
    `interval_s` it does nothing, as CodeCarbon's per-window timer thread does; unlike that
    one it is not started and stopped per window, and opening a window does not wake it:
    idle, it looks again every `interval_s`, so it sees a new window before the window's first
    sample is due (a wake-up at every window's start, beside llama.cpp's threads, was part
    of the ~1.5 % a window cost a 110 ms task, bench P4)."""

    def __init__(self, sample, interval_s: float):
        self._sample, self.interval_s = sample, interval_s
        self._cond = threading.Condition()
        self._window = 0          # the open window's number, 0 when none is open
        self._count = 0
        self._due = 0.0           # when the open window's next sample is due (time.monotonic)
        self._stopped = False
        threading.Thread(target=self._run, name="greenctl-power-sampler", daemon=True).start()

    def open(self) -> None:
        with self._cond:
            self._count += 1
            self._window = self._count
            self._due = time.monotonic() + self.interval_s

    def close(self) -> None:
        """After it returns, no sample of the closed window is taken or under way."""
        with self._cond:
            self._window = 0

    def stop(self) -> None:
        """End the thread (the meter is closed)."""
        with self._cond:
            self._window, self._stopped = 0, True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if not self._window:
                    self._cond.wait(self.interval_s)
                    continue
                left = self._due - time.monotonic()
                if left > 0:
                    # Woken early only by stop; a window closed or opened meanwhile is seen after it.
                    self._cond.wait(left)
                    continue
                self._sample()
                self._due += self.interval_s


def _energy_totals(tracker) -> tuple[float, float, float]:
    """CodeCarbon's running totals (kWh): CPU, RAM, GPU."""
    return (tracker._total_cpu_energy.kWh, tracker._total_ram_energy.kWh, tracker._total_gpu_energy.kWh)


class WindowError(RuntimeError):
    """begin/end used out of turn: a window ended that was not open, or opened twice."""


def grid_intensity_kg_per_kwh(country_iso_code: str, forced_g_per_kwh: float | None = None) -> float:
    """Carbon intensity of the grid, kg CO2e/kWh: forced, else CodeCarbon's energy-mix table."""
    if forced_g_per_kwh is not None:
        return g_to_kg_per_kwh(forced_g_per_kwh)
    from codecarbon.input import DataSource

    mix = DataSource().get_global_energy_mix_data()
    try:
        return g_to_kg_per_kwh(mix[country_iso_code.upper()]["carbon_intensity"])
    except KeyError:
        raise ValueError(f"carbon.country_iso_code {country_iso_code!r} is not in CodeCarbon's "
                         "energy-mix table: use an ISO 3166 alpha-3 code such as CAN, FRA, USA") from None


class EnergyMeter:
    """One CodeCarbon tracker; `begin(name)`/`end(name)` around each task, one window at a time
    on this process and, through a host-wide lock, on this host (CodeCarbon measures the
    machine: two workers' overlapping windows would each count the other's energy).

    RAM: forced watts (`ram_watts`), left out (`exclude_ram`), RAPL's `dram` domain where it
    is readable (read here, CodeCarbon's RAM set to 0 W), else CodeCarbon's estimate."""

    def __init__(self, cpu_watts: float | None = None, ram_watts: float | None = None,
                 measure_power_secs: float = 1.0, exclude_ram: bool = False,
                 host_lock: Path | None = HOST_LOCK_PATH, powercap: Path = POWERCAP):
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self.forced = cpu_watts is not None
        self._dram: RaplCounter | None = None
        if ram_watts is not None:
            self._ram, force_ram = "forced", ram_watts
        elif exclude_ram:
            self._ram, force_ram = "excluded", 0.0
        else:
            self._dram = self._dram_counter(powercap)
            self._ram, force_ram = ("rapl", 0.0) if self._dram else ("estimated", None)
        self._lock = _host_lock(host_lock) if host_lock else None
        self._tracker = OfflineEmissionsTracker(
            country_iso_code="CAN", tracking_mode="machine", save_to_file=False,
            log_level="error", pue=1.0, measure_power_secs=measure_power_secs,
            force_cpu_power=cpu_watts, force_ram_power=force_ram, allow_multiple_runs=True,
        )
        # No tracker.start(): nothing of CodeCarbon runs between windows. One window of
        # CodeCarbon's own task layer sets up the hardware it describes, and absorbs whatever
        # the counters hold from before (start-up is never a task's).
        self._open: str | None = None
        self._tracker.start_task("greenctl-warm-up")
        self._tracker.stop_task()
        # The parts that take CodeCarbon's periodic power sample (CPU load, GPU power), found once.
        self._samplers = [h.monitor_power for h in self._tracker._hardware if hasattr(h, "monitor_power")]
        self._sampler = PowerSampler(self._sample_power, measure_power_secs)
        self.parts = self._describe()
        self.method = combined_method(self.parts)
        self.detail = " ".join(f"{k}={v}" for k, v in self.parts.items())

    @staticmethod
    def _dram_counter(powercap: Path) -> "RaplCounter | None":
        dram = rapl_domains(powercap).get("dram")
        try:
            return RaplCounter(dram) if dram is not None and os.access(dram / "energy_uj", os.R_OK) else None
        except (OSError, ValueError):
            return None

    def _describe(self) -> dict[str, str]:
        parts = {"cpu": "none", "ram": self._ram, "gpu": "none"}
        for hw in getattr(self._tracker, "_hardware", []):
            kind = type(hw).__name__.lower()
            if kind == "cpu":
                parts["cpu"] = _CPU_METHODS.get(getattr(hw, "_mode", ""), "estimated")
            elif kind == "gpu":
                parts["gpu"] = "nvml"
        if self.forced:
            parts["cpu"] = "forced"
        return parts

    def begin(self, name: str) -> None:
        """Open the window `name`; one window at a time (CodeCarbon measures the machine).
        Waits for the host-wide lock first: the wait is not part of the window."""
        if self._open is not None:
            raise WindowError(f"window {name!r} opened while {self._open!r} is still open")
        if self._lock is not None and not self._lock.acquire(blocking=False):
            # Never a silent wait: say what holds this inference back and how to separate hosts' locks.
            logging.getLogger("greenctl.worker").warning(
                "window %s waits for the host-wide measuring lock %s: another process on this host is "
                "measuring an inference (one at a time: CodeCarbon measures the whole machine); "
                "GREENCTL_MEASURE_LOCK names another lock file", name, os.fsdecode(self._lock.path))
            self._lock.acquire()
        tracker = self._tracker
        # What CodeCarbon's start_task measures from: each part's counters (RAPL, NVML) or load
        # meter read now; a window's energy is the growth of the tracker's totals until its end.
        for hardware in tracker._hardware:
            hardware.start()
        self._totals = _energy_totals(tracker)
        self._started = tracker._last_measured_time = time.perf_counter()
        self._started_at = time.time()
        if self._dram is not None:
            self._dram.begin()
        self._sampler.open()
        self._open = name

    def end(self, name: str) -> Measurement:
        """Close the window `name` and return what it measured."""
        if self._open != name:
            raise WindowError(f"window {name!r} ended, but the open window is {self._open!r}")
        self._open = None
        try:
            self._sampler.close()
            self._tracker._do_measurements()     # each part since its start() or last sample
            duration_s = time.perf_counter() - self._started
            cpu, ram, gpu = (after - before for before, after in zip(self._totals, _energy_totals(self._tracker)))
            if self._dram is not None:
                ram = self._dram.end_kwh()
        finally:
            if self._lock is not None:
                self._lock.release()
        return Measurement(cpu_kwh=cpu, ram_kwh=ram, gpu_kwh=gpu, duration_s=duration_s,
                           method=self.method, detail=self.detail,
                           measured_kwh=measured_kwh(cpu, ram, gpu, self.parts), started_at=self._started_at)

    def idle_watts(self, seconds: float) -> float:
        """Average power (W) of the machine over `seconds` of doing nothing."""
        self.begin("idle-calibration")
        time.sleep(seconds)
        m = self.end("idle-calibration")
        return mean_watts(m.total_kwh, m.duration_s)

    def _sample_power(self) -> None:
        """CodeCarbon's power sample of each part that takes one (CPU load, GPU power)."""
        for sample in self._samplers:
            sample()

    def close(self) -> None:
        self._sampler.stop()
        try:
            self._tracker.stop()
        except Exception:  # stopping a tracker at exit must never fail a worker
            pass


# -- pauses: a window whose time is not the inference's -------------------------------------
# Kept apart from measurement and accounting: it judges a window, it measures no energy.

PAUSE_TICK_S = 0.1        # the watch's ticker period (s)
PAUSE_MAX_GAP_S = 2.0     # a ticker gap longer than this (s) is a pause, not scheduling jitter


def pause_reason(max_gap_s: float, slept_s: float, threshold_s: float = PAUSE_MAX_GAP_S) -> str | None:
    """Why a window's duration is not the work's, or None.

    `max_gap_s`: the longest interval (s, CLOCK_MONOTONIC) between two ticks of a thread
    that wakes every PAUSE_TICK_S; the whole process stopped for about that long (SIGSTOP,
    a debugger). `slept_s`: CLOCK_BOOTTIME minus CLOCK_MONOTONIC advance over the window
    (s), time the machine was suspended (a laptop's lid closed)."""
    if slept_s > threshold_s:
        return f"the machine was suspended for {slept_s:.1f} s during the task (sleep/lid closed)"
    if max_gap_s > threshold_s:
        return f"the worker process was paused for {max_gap_s:.1f} s during the task (SIGSTOP or similar)"
    return None


class PauseWatch:
    """Notices that a window was paused: a daemon ticker thread (its wake-ups stop while
    the process is stopped, so a pause shows as one long gap) and the BOOTTIME/MONOTONIC
    drift (suspend stops CLOCK_MONOTONIC, not CLOCK_BOOTTIME). llama.cpp releases the GIL
    while it computes, so the ticker keeps its period during an inference."""

    def __init__(self, tick_s: float = PAUSE_TICK_S, threshold_s: float = PAUSE_MAX_GAP_S):
        import threading
        import time

        self.tick_s, self.threshold_s = tick_s, threshold_s
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._max_gap = 0.0
        self._clocks = (0.0, 0.0)
        self._stop = threading.Event()
        threading.Thread(target=self._tick, name="greenctl-pause-watch", daemon=True).start()

    def _tick(self) -> None:
        import time

        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            with self._lock:
                self._max_gap = max(self._max_gap, now - self._last)
                self._last = now

    @staticmethod
    def _now() -> tuple[float, float]:
        import time

        boot = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
        return time.clock_gettime(boot), time.clock_gettime(time.CLOCK_MONOTONIC)

    def begin(self) -> None:
        import time

        with self._lock:
            self._last, self._max_gap = time.monotonic(), 0.0
        self._clocks = self._now()

    def end(self) -> str | None:
        """Why the window since `begin` was disturbed, or None."""
        import time

        boot1, mono1 = self._now()
        with self._lock:
            gap = max(self._max_gap, time.monotonic() - self._last)
        boot0, mono0 = self._clocks
        return pause_reason(gap, (boot1 - boot0) - (mono1 - mono0), self.threshold_s)

    def close(self) -> None:
        self._stop.set()

