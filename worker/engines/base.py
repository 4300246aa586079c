"""What every engine takes and returns.

An engine loads a model once (load-time options are fixed per worker so the
model is not reloaded per task) and answers many requests. Both engines fill
the same `Generation` record, so results and the estimator never care which
engine produced a row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class EngineError(Exception):
    """An inference that could not be done; `retryable` says whether trying again can help."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class InferenceRequest:
    messages: list[dict]                 # chat messages: [{"role": ..., "content": ...}]
    max_tokens: int = 4
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 40
    seed: int = 0
    # When set, decoding is constrained to exactly one of these strings.
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Generation:
    """One inference as the engine saw it. Times in seconds."""
    text: str
    prompt_tokens: int            # all prompt tokens, cached or not
    prompt_tokens_uncached: int   # prompt tokens actually evaluated for this request
    output_tokens: int
    prompt_s: float               # prompt evaluation (prefill)
    decode_s: float               # token generation
    load_s: float = 0.0           # model load charged to this request (0 when already loaded)
    e2e_s: float = 0.0            # wall time of the whole request
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: recorded on the variant for reports and the estimator."""
    name: str
    quantization: str
    parameter_count: int | None = None
    bits_per_weight: float | None = None
    file: str | None = None
    sha256: str | None = None
    file_bytes: int | None = None
    context_length: int | None = None


class Engine(Protocol):
    name: str

    def load(self, model: str, variant: str) -> ModelInfo:
        """Make `model` at `variant` ready; cheap when it is already loaded."""

    def generate(self, request: InferenceRequest) -> Generation:
        """Run one request on the loaded model."""

    def close(self) -> None:
        """Free the model."""
