"""P4 tracking overhead: task time with and without the CodeCarbon begin/end window.

The tracker is long-lived (as in a worker) and never `start()`ed: what a task
pays is the window. Three arms per sample, in rotating order (paired): no window;
the worker's meter (CodeCarbon's measuring layer: each part's `start()` at begin,
`_do_measurements()` at end, one long-lived power-sampling thread); and, side by
side for comparison, the window as the worker made it before 2026-12-01 through
CodeCarbon's task layer (`start_task`/`stop_task`: two emissions records and a new
`threading.Timer` thread per window). The window's own cost is also timed alone.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bench import workload
from bench.report import Goal, LoadWatch, Report, cores, joules, machine, mean, median

SIZES = {"full": dict(n=200, windows=300), "quick": dict(n=30, windows=100), "smoke": dict(n=2, windows=5)}
GOAL_PCT = 1.0
# The meters' own measuring lock (still taken and released every window, as in a worker): on a
# shared machine other people's workers hold the host-wide one, and waiting for their
# inferences is not tracking overhead.
PRIVATE_LOCK = Path(tempfile.gettempdir()) / f"greenctl-bench-p4-{os.getpid()}.lock"
WARM_UP_TEXT = "The company will publish its quarterly report on Monday."


ARMS = ("without", "with", "task_layer")   # no window / the worker's meter / CodeCarbon's start_task+stop_task


class TaskLayerMeter:
    """The window through CodeCarbon's task layer (the worker's until 2026-12-01), on a tracker of
    its own; same lock, same energy fields."""

    def __init__(self):
        from worker.energy import EnergyMeter

        self._meter = EnergyMeter(host_lock=PRIVATE_LOCK)
        self._tracker, self._lock = self._meter._tracker, self._meter._lock

    def begin(self, name: str) -> None:
        self._lock.acquire()
        self._tracker.start_task(name)

    def end(self, name: str):
        try:
            data = self._tracker.stop_task()
        finally:
            self._lock.release()
        return SimpleNamespace(total_kwh=float(data.cpu_energy + data.ram_energy + data.gpu_energy))


def one_task(engine, request, meter) -> tuple[float, float]:
    """(seconds, joules) of one task; meter None = no window."""
    started = time.perf_counter()
    if meter is None:
        engine.generate(request)
        return time.perf_counter() - started, float("nan")
    meter.begin("bench-p4")
    try:
        engine.generate(request)
    finally:
        reading = meter.end("bench-p4")
    return time.perf_counter() - started, joules(reading.total_kwh)


def paired_order(n: int, arms: tuple[str, ...] = ARMS):
    """(sample, arm): each sample once per arm, never twice in a row.

    Running a prompt right after itself would find it all in llama.cpp's cache;
    two samples x, y alternate (x y x y ...), so every run follows a different text
    and evaluates the same uncached tokens. The arms rotate from pair to pair.
    """
    k = len(arms)
    for p in range(n // 2):
        x, y = 2 * p, 2 * p + 1
        for j in range(k):
            yield x, arms[(p + j) % k]
            yield y, arms[(p + j + 1) % k]


def window_alone(count: int, meter=None) -> float:
    meter = meter or workload.meter(host_lock=PRIVATE_LOCK)
    costs = []
    for _ in range(count):
        started = time.perf_counter()
        meter.begin("bench-p4-empty")
        meter.end("bench-p4-empty")
        costs.append(time.perf_counter() - started)
    return median(costs)


def run(size: str = "full") -> Report:
    cfg, threads, watch = SIZES[size], cores(), LoadWatch()
    chosen, examples = workload.samples(cfg["n"], workload.DEFAULT_PROMPT["few_shot"])
    engine = workload.loaded(threads)
    # The meter created before timing (its warm-up window run), as a worker creates its own once.
    meters = {"without": None, "with": workload.meter(host_lock=PRIVATE_LOCK),
              "task_layer": TaskLayerMeter()}

    def req(text):
        return workload.request(text, workload.DEFAULT_PROMPT, workload.DEFAULT_PARAMS, examples)

    engine.generate(req(WARM_UP_TEXT))       # the shared prefix cached, as in a running worker
    times, energy = {arm: {} for arm in ARMS}, {arm: {} for arm in ARMS}
    for i, arm in paired_order(len(chosen)):
        times[arm][i], energy[arm][i] = one_task(engine, req(chosen[i].text), meters[arm])
    diffs = [times["with"][i] - times["without"][i] for i in times["with"]]
    old_diffs = [times["task_layer"][i] - times["without"][i] for i in times["with"]]
    times = {arm: list(t.values()) for arm, t in times.items()}
    base = mean(times["without"])
    # Judged on the median paired difference: other developers' load makes single
    # tasks 2-5x slower now and then, which moves a mean by whole percents.
    overhead_pct = 100 * median(diffs) / median(times["without"])
    old_pct = 100 * median(old_diffs) / median(times["without"])
    mean_pct = 100 * mean(diffs) / base
    sd = math.sqrt(sum((d - mean(diffs)) ** 2 for d in diffs) / max(1, len(diffs) - 1))
    ci_pct = 100 * 1.96 * sd / math.sqrt(len(diffs)) / base
    window_ms = 1e3 * window_alone(cfg["windows"])
    old_window_ms = 1e3 * window_alone(cfg["windows"], meters["task_layer"])
    return Report(
        bench="p4-tracking", title="CodeCarbon begin/end window: task time with vs without",
        size=size,
        inputs={"model": f"{workload.MODEL} {workload.VARIANT}", "N": len(chosen), "threads": threads,
                "prompt": "label-only, 3-shot, label-constrained",
                "order": "paired per sample (x y x y x y), arms rotating",
                "arms": "no window / worker's meter / CodeCarbon's start_task+stop_task (the worker's before 2026-12-01)",
                "tracker": "one long-lived OfflineEmissionsTracker, machine mode, measure_power_secs=1"},
        figures={"overhead, paired A/B, median (%)": overhead_pct,
                 "overhead, paired A/B, mean (%)": mean_pct, "  95% interval of the mean (+/- %)": ci_pct,
                 "overhead through CodeCarbon's task layer (before), median (%)": old_pct,
                 "task time without window (ms)": 1e3 * base,
                 "task time with window (ms)": 1e3 * mean(times["with"]),
                 "energy per task, worker's meter (J)": mean(energy["with"].values()),
                 "energy per task, task layer (J)": mean(energy["task_layer"].values()),
                 "window alone, begin+end (ms, median)": window_ms,
                 "window alone through the task layer (ms, median)": old_window_ms,
                 "window alone / task time (%)": 100 * window_ms / 1e3 / base},
        goals=[Goal(f"tracking overhead <= {GOAL_PCT:g} % (median paired difference)", overhead_pct,
                    None if size == "smoke" else overhead_pct <= GOAL_PCT)],
        details={"median with (ms)": 1e3 * median(times["with"]),
                 "median without (ms)": 1e3 * median(times["without"])},
        notes=["the paired figure includes whatever the window does beside the engine's threads (the worker's "
               "long-lived power sampler; the task layer's per-window Timer thread); the 'alone' figures are "
               "the windows' bookkeeping only",
               "the meter is worker.energy.EnergyMeter in task mode (no tracker.start()): nothing of "
               "CodeCarbon runs between windows, in either arm, as in a worker"],
        machine=machine(watch),
    )
