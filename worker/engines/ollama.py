"""The Ollama engine: the official `ollama` client against a local or remote server.

Model tags name the quantization in Ollama (`llama3.2:1b-instruct-q4_K_M`,
`llama3.2:1b-instruct-fp16`), so `load(model, variant)` builds the tag from the
two (see `ollama_tag`) and reads what the server says about it from /api/show.

Load-time options (num_ctx, num_thread) are fixed per engine and sent with every
request: Ollama reloads a model whenever they change, which would charge a load
to a random task. `keep_alive` keeps the model resident between tasks.

Token counts: Ollama's `prompt_eval_count` counts only the prompt tokens it
evaluated for this request; a prefix already in its cache is not counted, and
no endpoint reports the full prompt length. So `prompt_tokens_uncached` is
exact and `prompt_tokens` is the same number, a lower bound whenever the cache
was hit (`extra["prompt_tokens_exact"]` is False to say so).

Context overflow: by default Ollama silently drops the front of a prompt longer
than num_ctx, and the client cannot ask it not to on /api/chat. A server that
refuses such a prompt becomes a non-retryable EngineError naming num_ctx; with
num_ctx set, a prompt that filled the context (prompt_eval_count >= num_ctx -
num_predict) is failed the same way rather than scored cut.
"""
from __future__ import annotations

import json
import re
import time

import httpx
import ollama

from shared import variants
from shared.variants import ollama_quantization
from worker.engines.base import EngineError, Generation, InferenceRequest, ModelInfo

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_KEEP_ALIVE = "30m"
NS_PER_S = 1e9

_BLOB_DIGEST = re.compile(r"^FROM\s+(\S*sha256[-:]([0-9a-f]{64}))\s*$", re.MULTILINE)
# The JSON around a constrained label, {"label": "..."}, costs tokens the label itself does not.
_JSON_ENVELOPE_TOKENS = 16


def ollama_tag(model: str, variant: str) -> str:
    """The Ollama tag for `model` at `variant` (the rule is `shared.variants.ollama_tag`)."""
    try:
        return variants.ollama_tag(model, variant)
    except variants.VariantError as exc:
        raise EngineError(str(exc), retryable=False) from None


class OllamaEngine:
    name = "ollama"

    def __init__(self, host: str | None = None, num_ctx: int | None = None, num_thread: int | None = None,
                 keep_alive: str | float = DEFAULT_KEEP_ALIVE, timeout_s: float = 600.0,
                 preload: bool = True, unload_on_close: bool = True,
                 n_ctx: int | None = None, threads: int | None = None):
        # n_ctx/threads: the embedded engine's names for the same settings, so a
        # worker can pass one set of options to either engine.
        self.host = host or DEFAULT_HOST    # the worker passes OLLAMA_HOST from its settings
        self.keep_alive = keep_alive
        self.preload = preload
        self.unload_on_close = unload_on_close
        self.load_options = {k: v for k, v in (("num_ctx", num_ctx or n_ctx),
                                               ("num_thread", num_thread or threads)) if v}
        self._client = ollama.Client(host=self.host, timeout=timeout_s)
        self.tag: str | None = None
        self.info: ModelInfo | None = None
        # What /api/show says beyond ModelInfo (parameter_size, family, format).
        self.model_details: dict = {}
        # Wall seconds load() spent making the model resident (small when it already was).
        self.load_s = 0.0

    # -- Engine protocol -----------------------------------------------------------------

    def load(self, model: str, variant: str) -> ModelInfo:
        tag = ollama_tag(model, variant)
        if tag == self.tag and self.info is not None:
            return self.info
        if self.tag is not None and self.unload_on_close:
            self._unload()    # a previous variant would otherwise compete for memory
        self.tag, self.info = None, None
        with self._errors(tag):
            shown = self._client.show(tag)
            file_bytes = self._listed_size(tag)
            self.load_s = 0.0
            if self.preload:
                # Load now, with the same load-time options every request carries, so the
                # first task is not charged the load and later ones do not trigger a reload.
                # Ollama's load reply carries no durations, so the wall time is the load time.
                started = time.perf_counter()
                self._client.generate(model=tag, options=self.load_options or None,
                                      keep_alive=self.keep_alive)
                self.load_s = time.perf_counter() - started
        self.tag = tag
        self.info = self._model_info(tag, variant, shown, file_bytes)
        return self.info

    def generate(self, request: InferenceRequest) -> Generation:
        if self.tag is None:
            raise EngineError("the Ollama engine has no model loaded: call load() first", retryable=False)
        options = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "top_k": request.top_k,
            "seed": request.seed,
            "num_predict": self._num_predict(request),
            **self.load_options,
        }
        fmt = label_schema(request.choices) if request.choices else None
        started = time.perf_counter()
        with self._errors(self.tag):
            response = self._client.chat(model=self.tag, messages=request.messages, format=fmt,
                                         options=options, keep_alive=self.keep_alive)
        e2e_s = time.perf_counter() - started
        content = response.message.content or ""
        extra = {
            "server_total_s": (response.total_duration or 0) / NS_PER_S,
            "done_reason": response.done_reason,
            "num_predict": options["num_predict"],
            "prompt_tokens_exact": False,
        }
        text = content
        if request.choices:
            extra["raw"] = content
            label = _label_from_json(content, request.choices)
            if label is None:
                # Leave the raw text for the caller's parser to judge; say why it is not a label.
                extra["parse_error"] = f"constrained output is not one of the labels (done_reason={response.done_reason})"
            else:
                text = label
        evaluated = response.prompt_eval_count or 0
        num_ctx = self.load_options.get("num_ctx")
        if num_ctx and evaluated >= num_ctx - options["num_predict"]:
            # Ollama cuts a prompt that does not fit num_ctx without a word: a prompt that filled
            # the context was (or may have been) cut, and a cut prompt is never scored.
            raise EngineError(f"the prompt filled the context ({evaluated} prompt tokens evaluated, num_ctx "
                              f"{num_ctx}, {options['num_predict']} to generate): Ollama truncates such prompts "
                              "silently; raise the worker's context size or shorten the prompt (fewer "
                              "few-shot examples)", retryable=False)
        return Generation(
            text=text,
            prompt_tokens=evaluated,
            prompt_tokens_uncached=evaluated,
            output_tokens=response.eval_count or 0,
            prompt_s=(response.prompt_eval_duration or 0) / NS_PER_S,
            decode_s=(response.eval_duration or 0) / NS_PER_S,
            load_s=(response.load_duration or 0) / NS_PER_S,
            e2e_s=e2e_s,
            extra=extra,
        )

    def close(self) -> None:
        if self.tag is not None and self.unload_on_close:
            self._unload()
        self.tag = None
        self.info = None
        self._client.close()

    # -- Also useful to a worker -----------------------------------------------------------

    def available_models(self) -> list[str]:
        """Tags pulled on this Ollama server (/api/tags), for the worker's profile."""
        with self._errors(None):
            return sorted(m.model for m in self._client.list().models if m.model)

    # -- Internals -------------------------------------------------------------------------

    def _num_predict(self, request: InferenceRequest) -> int:
        if not request.choices:
            return request.max_tokens
        # The schema forces {"label": "..."} around the answer; a budget sized for the
        # bare label (max_tokens is often 4) would cut the JSON off mid-way.
        longest = max(len(c.encode("utf-8")) for c in request.choices)
        return max(request.max_tokens, longest + _JSON_ENVELOPE_TOKENS)

    def _listed_size(self, tag: str) -> int | None:
        # A tag without ":" is listed with ":latest".
        for listed in self._client.list().models:
            if listed.model in (tag, f"{tag}:latest"):
                return int(listed.size) if listed.size is not None else None
        return None

    def _unload(self) -> None:
        # keep_alive 0 with no prompt unloads (docs/api.md "Unload a model"). Best effort:
        # an unreachable server has nothing loaded to free.
        try:
            self._client.generate(model=self.tag, keep_alive=0)
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError):
            pass

    def _model_info(self, tag: str, variant: str, shown, file_bytes: int | None) -> ModelInfo:
        details = shown.details
        model_info = dict(shown.modelinfo or {})
        self.model_details = {
            "parameter_size": details.parameter_size if details else None,
            "quantization_level": details.quantization_level if details else None,
            "family": details.family if details else None,
            "format": details.format if details else None,
        }
        parameter_count = model_info.get("general.parameter_count")
        parameter_count = int(parameter_count) if parameter_count else None
        blob = _BLOB_DIGEST.search(shown.modelfile or "")
        return ModelInfo(
            name=tag,
            quantization=(details.quantization_level if details else None) or ollama_quantization(variant or "default"),
            parameter_count=parameter_count,
            # Whole-blob bits per weight: the GGUF's metadata (a few MB) is counted too.
            bits_per_weight=round(file_bytes * 8 / parameter_count, 3) if file_bytes and parameter_count else None,
            file=blob.group(1) if blob else None,
            sha256=blob.group(2) if blob else None,
            file_bytes=file_bytes,
            context_length=_context_length(model_info),
        )

    def _errors(self, tag: str | None) -> "_OllamaErrors":
        return _OllamaErrors(self, tag)


class _OllamaErrors:
    """Turns what the client raises into EngineError, saying what to do about it."""

    def __init__(self, engine: OllamaEngine, tag: str | None):
        self.engine, self.tag = engine, tag

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, EngineError):
            return False
        host = self.engine.host
        if isinstance(exc, ConnectionError):   # the client's "Failed to connect to Ollama"
            raise EngineError(f"Ollama at {host} is unreachable (connection refused): start it with "
                              f"`ollama serve` or set OLLAMA_HOST", retryable=True) from exc
        if isinstance(exc, httpx.TimeoutException):
            raise EngineError(f"Ollama at {host} did not answer in time: {exc}", retryable=True) from exc
        if isinstance(exc, httpx.TransportError):
            raise EngineError(f"Ollama at {host} broke the connection: {exc}", retryable=True) from exc
        if isinstance(exc, ollama.ResponseError):
            raise _response_error(exc, self.tag, host, self.engine.load_options.get("num_ctx")) from exc
        return False


def _response_error(exc: ollama.ResponseError, tag: str | None, host: str, num_ctx: int | None) -> EngineError:
    message, status = str(exc.error), exc.status_code
    low = message.lower()
    if tag and (status == 404 or ("model" in low and "not found" in low)):
        return EngineError(f"model {tag} is not pulled on this worker: run `ollama pull {tag}`", retryable=False)
    if "context" in low and ("exceed" in low or "longer than" in low or "too long" in low):
        ctx = f"num_ctx={num_ctx}" if num_ctx else "the server's default num_ctx"
        return EngineError(f"prompt does not fit the context window ({ctx}) of {tag}: raise num_ctx "
                           f"or shorten the prompt (Ollama said: {message})", retryable=False)
    if "memory" in low:
        return EngineError(f"Ollama at {host} cannot run {tag}: {message}", retryable=False)
    # Busy (503), cancelled or crashed runners can succeed on a later try; bad requests cannot.
    return EngineError(f"Ollama at {host} failed (HTTP {status}): {message}", retryable=status >= 500)


def label_schema(choices) -> dict:
    """Ollama structured output that admits exactly {"label": <one of choices>}."""
    return {"type": "object",
            "properties": {"label": {"type": "string", "enum": list(choices)}},
            "required": ["label"]}


def _label_from_json(content: str, choices) -> str | None:
    try:
        label = json.loads(content).get("label")
    except (ValueError, AttributeError):
        return None
    return label if label in choices else None


def _context_length(model_info: dict) -> int | None:
    arch = model_info.get("general.architecture")
    value = model_info.get(f"{arch}.context_length")
    if value is None:
        value = next((v for k, v in model_info.items() if k.endswith(".context_length")), None)
    return int(value) if value else None
