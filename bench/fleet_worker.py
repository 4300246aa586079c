"""One worker of the simulated fleet (bench.fleet): the real worker, a replay engine.

    python -m bench.fleet_worker --queue Q --index I --timings FILE [--parent PID]

This is `greenctl worker`'s start (worker.runtime.start, then Celery's solo pool with
the same flags) with three bench-only changes, made in this process only:

- the engine: `replay` (bench.replay_engine) is registered, and is the only one this
  worker runs; SIMULATED inference, recorded SmolLM2 times;
- the meter: CodeCarbon off. Each row says energy method "simulated", 0 kWh. A real fleet
  is 50 hosts; here 50 workers share one host, and the real meter takes a host-wide lock
  (one measured inference per host at a time), which would turn the fleet into one worker;
  50 trackers on 2 cores would measure nothing real anyway;
- the host name: "<host>#fleet-I", so the 50 workers are 50 registered workers, each with
  its own worker row, heartbeat and task leases, as 50 hosts would be.

Claim and result-write calls are timed around the store functions the task calls
(`worker.store.claim`, `worker.store.write_result`), one tab-separated line per call to
the --timings file: kind (c|w), task id, start and end (s since the epoch), CPU s. The product
path itself is not changed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import threading
import time

SIMULATED = "simulated"
DETAIL = "cpu=simulated ram=simulated gpu=none (bench fleet: replay engine, CodeCarbon off)"


class SimulatedMeter:
    """EnergyMeter's interface without CodeCarbon or the host lock: 0 kWh, method 'simulated'."""

    method, detail = SIMULATED, DETAIL

    def __init__(self, **_options):
        self._open: str | None = None

    def begin(self, name: str) -> None:
        self._open, self._started, self._t0 = name, time.time(), time.perf_counter()

    def end(self, name: str):
        from worker.energy import Measurement

        self._open = None
        return Measurement(cpu_kwh=0.0, ram_kwh=0.0, gpu_kwh=0.0, duration_s=time.perf_counter() - self._t0,
                           method=SIMULATED, detail=DETAIL, measured_kwh=0.0, started_at=self._started)

    def idle_watts(self, seconds: float) -> float:
        raise RuntimeError("the fleet benchmark's meter is simulated: no idle calibration")

    def close(self) -> None:
        pass


def timed(fn, kind: str, out, task_id_of):
    """fn, writing 'kind task start end cpu' to `out` per call (also when it raises): wall
    times in s since the epoch, and the CPU seconds this thread spent inside the call."""
    def wrapper(*args, **kwargs):
        started, cpu = time.time(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            out.write(f"{kind}\t{task_id_of(args)}\t{started:.6f}\t{time.time():.6f}\t"
                      f"{time.thread_time() - cpu:.6f}\n")
    return wrapper


def exit_with_parent(parent: int) -> None:
    """Exit when the benchmark that started this worker is gone (it was killed hard)."""
    def watch() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != parent:
                os._exit(3)
    threading.Thread(target=watch, name="fleet-parent-watch", daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_worker")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--timings", required=True)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args()
    if args.parent:
        exit_with_parent(args.parent)

    from bench.replay_engine import ReplayEngine, load_table
    from shared.celery_app import configure
    from shared.config import Settings
    from worker import energy, runtime, store
    from worker.engines import REPLAY_ENGINE, register_engine

    settings = Settings.from_env()
    app = configure(settings.broker_url, settings.database_url, settings)
    table = load_table()
    register_engine(REPLAY_ENGINE, lambda **_: ReplayEngine(offset=37 * args.index, table=table))
    energy.EnergyMeter = SimulatedMeter                       # runtime.start builds the meter from here
    detect = runtime.detect
    runtime.detect = lambda: dataclasses.replace(detect(), hostname=f"{detect().hostname}#fleet-{args.index}")
    out = open(args.timings, "a", buffering=1)
    store.claim = timed(store.claim, "c", out, lambda a: a[1])
    store.write_result = timed(store.write_result, "w", out, lambda a: a[1]["task_id"])

    options = runtime.WorkerOptions(queue=args.queue, threads=1, engines=(REPLAY_ENGINE,),
                                    lease_seconds=settings.lease_seconds,
                                    heartbeat_seconds=settings.heartbeat_seconds)
    rt = runtime.start(options, settings.database_url)
    from celery.signals import worker_shutting_down

    worker_shutting_down.connect(lambda **_: runtime.exit_after(settings.shutdown_grace_seconds), weak=False)
    print(f"fleet worker {rt.name}: engine {REPLAY_ENGINE} (SIMULATED), energy {rt.meter.method}", flush=True)
    try:
        app.worker_main(["worker", "--pool=solo", "-Q", args.queue, f"--loglevel={args.loglevel}",
                         "-n", f"fleet-{args.index}@%h", "--without-gossip", "--without-mingle"])
    finally:
        runtime.stop()
        out.close()


if __name__ == "__main__":
    main()
