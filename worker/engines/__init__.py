"""Inference engines behind one small interface (see base.py)."""
from __future__ import annotations

from typing import Callable

from worker.engines.base import Engine, EngineError, Generation, InferenceRequest

ENGINES = ("embedded", "ollama")
# bench/replay_engine.py's timing-replay engine: simulated rows, registered only by the
# fleet benchmark's worker processes; reports label its rows SIMULATED.
REPLAY_ENGINE = "replay"
_registered: dict[str, Callable[..., Engine]] = {}


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    """Make `name` creatable in this process only (bench.fleet_worker); users pick from ENGINES."""
    _registered[name] = factory


def create_engine(name: str, **options) -> Engine:
    """A new engine by name; options are load-time settings (threads, n_ctx, host)."""
    if name in _registered:
        return _registered[name](**options)
    if name == "embedded":
        from worker.engines.embedded import EmbeddedEngine
        return EmbeddedEngine(**options)
    if name == "ollama":
        from worker.engines.ollama import OllamaEngine
        return OllamaEngine(**options)
    raise EngineError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}", retryable=False)


__all__ = ["ENGINES", "REPLAY_ENGINE", "Engine", "EngineError", "Generation", "InferenceRequest", "create_engine",
           "register_engine"]
