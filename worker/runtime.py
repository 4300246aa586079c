"""Per-process state of a worker: built once, used by every task.

Loading a model and starting the energy tracker cost seconds; doing them per
task would be measured as the task's cost. So the worker builds this at start
(`greenctl worker`), or on the first task when started by plain `celery`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import Settings
from worker.hardware import Hardware, detect

@dataclass
class WorkerOptions:
    queue: str = "default"
    threads: int | None = None
    engines: tuple[str, ...] = ("embedded",)
    ollama_host: str | None = None
    cpu_watts: float | None = None
    ram_watts: float | None = None
    exclude_ram: bool = False
    measure_lock: Path | None = None       # host-wide lock file (None: the default path)
    lease_seconds: int = 600
    heartbeat_seconds: float = 15.0
    cache_dir: Path | None = None          # the embedded engine's model files
    max_loaded_models: int = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> "WorkerOptions":
        """A worker's defaults, for one started by plain `celery` rather than `greenctl worker`."""
        return cls(queue=settings.default_queue, threads=settings.threads, engines=settings.engines,
                   ollama_host=settings.ollama_host, cpu_watts=settings.cpu_watts, ram_watts=settings.ram_watts,
                   exclude_ram=settings.exclude_ram, measure_lock=settings.measure_lock,
                   lease_seconds=settings.lease_seconds, heartbeat_seconds=settings.heartbeat_seconds,
                   cache_dir=settings.cache_dir, max_loaded_models=settings.max_loaded_models)


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
    pause_watch: object = None                            # worker.energy.PauseWatch, built at start
    tag_lister: object = None                             # an OllamaEngine that only lists pulled tags
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None
    _left: bool = False

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
                self.engines[name] = create_engine(name, threads=self.options.threads,
                                                   cache_dir=self.options.cache_dir,
                                                   max_loaded=self.options.max_loaded_models)
        return self.engines[name]

    def models(self) -> list[str] | None:
        """What this worker can run now: the embedded catalog's models and the tags its Ollama
        server has pulled (/api/tags); None when that server does not answer (unknown, not none)."""
        from shared.catalog import CATALOG
        from worker.engines.base import EngineError

        out = list(CATALOG) if "embedded" in self.options.engines else []
        if "ollama" in self.options.engines:
            if self.tag_lister is None:   # its own client, short timeout: a hung server cannot stall heartbeats
                from worker.engines.ollama import OllamaEngine

                self.tag_lister = OllamaEngine(host=self.options.ollama_host, timeout_s=5.0, preload=False,
                                               unload_on_close=False)
            try:
                out += self.tag_lister.available_models()
            except EngineError:
                return None
        return out

    def start_heartbeat(self) -> None:
        from worker import store

        interval = self.options.heartbeat_seconds

        def beat() -> None:
            broker = None
            while not self._stop.wait(interval):
                try:
                    # "online" means consuming: no beat while the broker does not answer.
                    broker = broker or broker_client()
                    if broker is not None and not broker.ping():
                        continue
                    store.heartbeat(self.database_url, self.hardware.hostname, self.options.queue,
                                    self.current_task, self.name, self.options.lease_seconds,
                                    models=self.models())
                except Exception:  # a missed beat is what marks a worker offline; never crash
                    pass

        self._beat = threading.Thread(target=beat, name="greenctl-heartbeat", daemon=True)
        self._beat.start()

    def leave(self, beat_wait_s: float = 5.0) -> bool:
        """This worker stopped consuming (its Celery worker shut down, e.g. Ctrl-C after the
        inference in hand): stop the heartbeats and mark it offline now, so `greenctl workers`
        and the submit/status waits say so at once instead of after four missed beats.
        True when the database took it; never raises (a worker that cannot say so is marked
        offline by its missing beats, as one that died)."""
        import logging

        from worker import store

        if self._left:
            return True
        self._stop.set()
        if self._beat is not None:
            self._beat.join(beat_wait_s)      # a beat in flight would mark it online again
        try:
            store.mark_offline(self.database_url, self.hardware.hostname, self.options.queue)
        except Exception as exc:
            logging.getLogger("greenctl.worker").warning(
                "worker %s: could not mark itself offline (%s); it shows offline after four missed "
                "heartbeats", self.name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return False
        self._left = True
        logging.getLogger("greenctl.worker").info("worker %s: offline (shut down)", self.name)
        return True

    def close(self) -> None:
        self._stop.set()
        for engine in [*self.engines.values(), *([self.tag_lister] if self.tag_lister else [])]:
            engine.close()
        self.meter.close()
        if self.pause_watch is not None:
            self.pause_watch.close()


def exit_after(grace_s: float, poll_s: float = 0.2) -> threading.Thread:
    """Once shutdown has begun (Ctrl-C, SIGTERM): let the inference in hand finish, then exit
    this process if it still runs `grace_s` seconds later.

    The task in hand is waited for as long as it runs (its result was paid for in energy; a
    second Ctrl-C is Celery's cold shutdown, and its lease then hands the task to another
    worker). The grace counts from its end: Celery's warm shutdown then waits for the broker
    (acks, restoring unacknowledged messages) and, without it, never ends. A task cut off by
    the grace keeps its lease and is run again: its message was never acknowledged, and the
    reconcile job re-sends it from Postgres."""
    import os
    import sys
    import time

    def say(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def in_hand() -> int | None:
        rt = _runtime
        return None if rt is None else rt.current_task

    def watch() -> None:
        task = in_hand()
        if task is not None:
            say(f"worker: finishing task {task} before shutting down (Ctrl-C again stops now; "
                "the task then goes to another worker once its lease runs out)")
            while in_hand() is not None:
                time.sleep(poll_s)
        time.sleep(grace_s)
        say(f"worker: shutdown not finished after {grace_s:g} s (counted from the end of the task in hand; "
            "broker unreachable?): exiting now")
        os._exit(1)

    thread = threading.Thread(target=watch, name="greenctl-shutdown-grace", daemon=True)
    thread.start()
    return thread


def broker_client():
    """A Redis client for this process's broker (the configured Celery app's), with short
    timeouts, or None for a broker that is not Redis (e.g. memory:// in tests)."""
    import redis

    from shared.celery_app import app

    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


_runtime: WorkerRuntime | None = None
_lock = threading.Lock()


def start(options: WorkerOptions, database_url: str) -> WorkerRuntime:
    """Build this process's runtime: detect hardware, start the tracker, register."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        from worker import store
        from worker.energy import EnergyMeter, PauseWatch
        from worker.engines.embedded import default_threads

        hardware = detect()
        meter = EnergyMeter(cpu_watts=options.cpu_watts, ram_watts=options.ram_watts,
                            exclude_ram=options.exclude_ram,
                            **({"host_lock": options.measure_lock} if options.measure_lock else {}))
        options.threads = options.threads or default_threads()
        rt = WorkerRuntime(options=options, database_url=database_url, hardware=hardware, meter=meter,
                           pause_watch=PauseWatch())
        store.register_worker(database_url, {
            "hostname": hardware.hostname, "queue": options.queue, "cpu_model": hardware.cpu_model,
            "cores": hardware.cores, "ram_gb": hardware.ram_gb, "gpu": hardware.gpu,
            "os": hardware.os, "energy_method": meter.method, "hardware_profile": hardware.profile,
            "engines": list(options.engines),
            "models": rt.models() or [],
            "threads": options.threads,
        })
        rt.idle_watts = store.idle_watts(database_url, hardware.hostname)
        rt.start_heartbeat()
        _on_worker_shutdown()
        _runtime = rt
        return rt


def _on_worker_shutdown() -> None:
    """Mark this process's worker offline when its Celery worker has shut down (consumers
    stopped, the task in hand finished and acknowledged, unacknowledged messages back on the
    broker for other workers). Not for `--calibrate`, which runs no Celery worker."""
    from celery.signals import worker_shutdown

    def left(**_) -> None:
        if _runtime is not None:
            _runtime.leave()

    worker_shutdown.connect(left, weak=False, dispatch_uid="greenctl-worker-offline")


def current() -> WorkerRuntime:
    """This process's runtime, built from the environment if the CLI did not build it."""
    if _runtime is None:
        from shared.celery_app import database_url, process_settings

        return start(WorkerOptions.from_settings(process_settings()), database_url())
    return _runtime


def stop() -> None:
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
            _runtime = None
