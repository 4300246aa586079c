"""Per-process state of a worker: built once, used by every task.

Loading a model and starting the energy tracker cost seconds; doing them per
task would be measured as the task's cost. So the worker builds this at start
(`greenctl worker`), or on the first task when started by plain `celery`.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from worker.hardware import Hardware, detect

HEARTBEAT_SECONDS = 15.0


def heartbeat_seconds() -> float:
    """Seconds between heartbeats: GREENCTL_HEARTBEAT_SECONDS (tests shorten it), else 15."""
    return float(os.environ.get("GREENCTL_HEARTBEAT_SECONDS") or HEARTBEAT_SECONDS)


@dataclass
class WorkerOptions:
    queue: str = "default"
    threads: int | None = None
    engines: tuple[str, ...] = ("embedded",)
    ollama_host: str | None = None
    cpu_watts: float | None = None
    ram_watts: float | None = None
    lease_seconds: int = 600

    @classmethod
    def from_env(cls) -> "WorkerOptions":
        env = os.environ.get
        return cls(
            queue=env("GREENCTL_QUEUE", "default"),
            threads=int(env("GREENCTL_THREADS")) if env("GREENCTL_THREADS") else None,
            engines=tuple(env("GREENCTL_ENGINES", "embedded").split(",")),
            ollama_host=env("OLLAMA_HOST"),
            cpu_watts=float(env("GREENCTL_CPU_WATTS")) if env("GREENCTL_CPU_WATTS") else None,
            ram_watts=float(env("GREENCTL_RAM_WATTS")) if env("GREENCTL_RAM_WATTS") else None,
            lease_seconds=int(env("GREENCTL_LEASE_SECONDS", "600")),
        )


@dataclass
class WorkerRuntime:
    options: WorkerOptions
    database_url: str
    hardware: Hardware
    meter: object
    idle_watts: float | None = None
    engines: dict = field(default_factory=dict)
    seen_variants: set = field(default_factory=set)
    known_variants: dict = field(default_factory=dict)   # store.claim's per-variant cache
    current_task: int | None = None                       # its lease is extended by heartbeats
    intensity_by_experiment: dict = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        return f"{self.hardware.hostname}:{self.options.queue}"

    def engine(self, name: str):
        """The engine by name, created on first use with this worker's load-time options."""
        if name not in self.engines:
            from worker.engines import create_engine

            if name == "ollama":
                self.engines[name] = create_engine(name, host=self.options.ollama_host,
                                                   threads=self.options.threads)
            else:
                self.engines[name] = create_engine(name, threads=self.options.threads)
        return self.engines[name]

    def start_heartbeat(self) -> None:
        from worker import store

        interval = heartbeat_seconds()

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    store.heartbeat(self.database_url, self.hardware.hostname, self.options.queue,
                                    self.current_task, self.name, self.options.lease_seconds)
                except Exception:  # a missed beat is what marks a worker offline; never crash
                    pass

        threading.Thread(target=beat, name="greenctl-heartbeat", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        for engine in self.engines.values():
            engine.close()
        self.meter.close()


_runtime: WorkerRuntime | None = None
_lock = threading.Lock()


def start(options: WorkerOptions, database_url: str) -> WorkerRuntime:
    """Build this process's runtime: detect hardware, start the tracker, register."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        from worker import store
        from worker.energy import EnergyMeter
        from worker.engines.embedded import default_threads
        from worker.catalog import CATALOG

        hardware = detect()
        meter = EnergyMeter(cpu_watts=options.cpu_watts, ram_watts=options.ram_watts)
        options.threads = options.threads or default_threads()
        rt = WorkerRuntime(options=options, database_url=database_url, hardware=hardware, meter=meter)
        store.register_worker(database_url, {
            "hostname": hardware.hostname, "queue": options.queue, "cpu_model": hardware.cpu_model,
            "cores": hardware.cores, "ram_gb": hardware.ram_gb, "gpu": hardware.gpu,
            "os": hardware.os, "energy_method": meter.method, "hardware_profile": hardware.profile,
            "engines": list(options.engines),
            "models": list(CATALOG) if "embedded" in options.engines else [],
            "threads": options.threads,
        })
        rt.idle_watts = store.idle_watts(database_url, hardware.hostname)
        rt.start_heartbeat()
        _runtime = rt
        return rt


def current() -> WorkerRuntime:
    """This process's runtime, built from the environment if the CLI did not build it."""
    if _runtime is None:
        from shared.celery_app import database_url

        return start(WorkerOptions.from_env(), database_url())
    return _runtime


def stop() -> None:
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
            _runtime = None
