"""Inference engines behind one small interface (see base.py)."""
from __future__ import annotations

from worker.engines.base import Engine, EngineError, Generation, InferenceRequest

ENGINES = ("embedded", "ollama")


def create_engine(name: str, **options) -> Engine:
    """A new engine by name; options are load-time settings (threads, n_ctx, host)."""
    if name == "embedded":
        from worker.engines.embedded import EmbeddedEngine
        return EmbeddedEngine(**options)
    if name == "ollama":
        from worker.engines.ollama import OllamaEngine
        return OllamaEngine(**options)
    raise EngineError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}", retryable=False)


__all__ = ["ENGINES", "Engine", "EngineError", "Generation", "InferenceRequest", "create_engine"]
