"""The embedded engine: llama.cpp in-process through xllamacpp.

A model is loaded once per worker process and kept (up to `max_loaded`), and
the prompt cache is on: a shared instruction/few-shot prefix is evaluated once
and each request reports how many prompt tokens it really evaluated.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections import OrderedDict
from pathlib import Path

from shared import catalog
from worker import model_files
from worker.engines.base import EngineError, Generation, InferenceRequest, ModelInfo
from shared.prompts import render_plain


def choices_grammar(choices: tuple[str, ...]) -> str:
    """A GBNF grammar whose only sentences are the choices."""
    return "root ::= " + " | ".join(json.dumps(c) for c in choices)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def close_listener(address: str) -> int:
    """Shut this process's TCP listener at `address` ("http://127.0.0.1:PORT").

    Requests are made in-process (`Server.handle_*`), so the listener serves no one
    but other local users. Shutting it ends llama.cpp's accept loop, which then
    closes the socket. Returns the number of listeners shut (0 or 1).
    """
    import psutil

    try:
        port = int(address.rsplit(":", 1)[1].strip("/"))
    except (IndexError, ValueError):
        return 0
    shut = 0
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.fd >= 0:
            dup = socket.fromfd(conn.fd, conn.family, socket.SOCK_STREAM)   # a dup: closing it keeps llama's fd
            try:
                dup.shutdown(socket.SHUT_RDWR)
                shut += 1
            except OSError:
                pass
            finally:
                dup.close()
    return shut


class _Loaded:
    def __init__(self, server, info: ModelInfo, chat: bool, load_s: float):
        self.server, self.info, self.chat, self.load_s = server, info, chat, load_s


class EmbeddedEngine:
    name = "embedded"

    def __init__(self, threads: int | None = None, n_ctx: int = 2048,
                 cache_dir: Path | None = None, max_loaded: int | None = None):
        from shared.config import Settings

        self.threads = threads or default_threads()
        self.n_ctx = n_ctx
        self.cache_dir = Path(cache_dir) if cache_dir else Settings.from_env({}).cache_dir   # the default dir
        # Variants are interleaved per sample, so keep them all loaded (small models).
        self.max_loaded = max_loaded or 4
        self._models: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
        self._current: _Loaded | None = None
        self._pending_load_s = 0.0

    def load(self, model: str, variant: str) -> ModelInfo:
        key = (model, variant)
        if key in self._models:
            self._models.move_to_end(key)
            self._current = self._models[key]
            return self._current.info
        try:
            entry = catalog.entry(model)
            path = model_files.resolve(self.cache_dir, model, variant)
        except catalog.CatalogError as exc:
            raise EngineError(str(exc), retryable=False) from exc
        started = time.perf_counter()
        server = self._start_server(path)
        self._warm_up(server, entry.chat)
        load_s = time.perf_counter() - started
        while len(self._models) >= self.max_loaded:
            self._models.popitem(last=False)   # dropping the Server frees the model
        info = self._describe(model, variant, path)
        self._current = self._models[key] = _Loaded(server, info, entry.chat, load_s)
        self._pending_load_s = load_s
        return info

    def _start_server(self, path: Path):
        import xllamacpp as xlc

        params = xlc.CommonParams()
        params.model.path = str(path)
        params.n_ctx = self.n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.cache_prompt = True
        params.warmup = False
        params.verbosity = -1
        params.endpoint_metrics = False
        params.endpoint_props = False
        params.endpoint_slots = False
        # xllamacpp always opens an HTTP listener (an empty host list crashes it, a Unix
        # socket path fails to bind). Until it is shut below, a key that exists only in
        # this process's memory refuses every request but /health.
        params.api_keys = [secrets.token_urlsafe(32)]
        try:
            server = xlc.Server(params)
        except Exception as exc:
            raise EngineError(f"llama.cpp could not load {path}: {exc}", retryable=False) from exc
        close_listener(server.listening_address)
        return server

    @staticmethod
    def _warm_up(server, chat: bool) -> None:
        """One tiny request, so first-use allocation is charged to loading, not to a task."""
        body = {"max_tokens": 1, "temperature": 0.0, "cache_prompt": False}
        if chat:
            server.handle_chat_completions(body | {"messages": [{"role": "user", "content": "Hi"}]})
        else:
            server.handle_completions(body | {"prompt": "Hi"})

    @staticmethod
    def _describe(model: str, variant: str, path: Path) -> ModelInfo:
        try:
            from worker.quantize import describe_gguf
            d = describe_gguf(path)
            return ModelInfo(name=model, quantization=variant, parameter_count=d.parameter_count,
                             bits_per_weight=d.bits_per_weight, file=str(path),
                             sha256=d.sha256, file_bytes=path.stat().st_size,
                             context_length=d.context_length)
        except Exception:  # describing is informative; never let it stop an inference
            return ModelInfo(name=model, quantization=variant, file=str(path),
                             file_bytes=path.stat().st_size)

    def generate(self, request: InferenceRequest) -> Generation:
        loaded = self._current
        if loaded is None:
            raise EngineError("no model loaded: call load() first", retryable=False)
        body: dict = {
            "max_tokens": request.max_tokens, "temperature": request.temperature,
            "top_p": request.top_p, "top_k": request.top_k, "seed": request.seed,
            "cache_prompt": True,
        }
        if request.choices:
            body["grammar"] = choices_grammar(request.choices)
            # The grammar ends generation at the end of a label; room for the longest one.
            body["max_tokens"] = max(request.max_tokens, 16)
        started = time.perf_counter()
        if loaded.chat:
            body["messages"] = request.messages
            reply = loaded.server.handle_chat_completions(body)
        else:
            body["prompt"] = render_plain(request.messages)
            reply = loaded.server.handle_completions(body)
        e2e = time.perf_counter() - started
        if "error" in reply or "choices" not in reply:
            err = reply.get("error", reply)
            message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            if "context" in message.lower() and ("exceed" in message.lower() or "size" in message.lower()):
                raise EngineError(f"prompt longer than the context window ({self.n_ctx} tokens): "
                                  f"{message}", retryable=False)
            raise EngineError(f"llama.cpp: {message}", retryable=False)
        choice = reply["choices"][0]
        text = choice["message"]["content"] if loaded.chat else choice["text"]
        usage, timings = reply.get("usage", {}), reply.get("timings", {})
        load_s, self._pending_load_s = self._pending_load_s, 0.0
        return Generation(
            text=text or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            prompt_tokens_uncached=int(timings.get("prompt_n", usage.get("prompt_tokens", 0))),
            output_tokens=int(usage.get("completion_tokens", 0)),
            prompt_s=float(timings.get("prompt_ms", 0.0)) / 1000.0,
            decode_s=float(timings.get("predicted_ms", 0.0)) / 1000.0,
            load_s=load_s,
            e2e_s=e2e,
            extra={"finish_reason": choice.get("finish_reason")},
        )

    def close(self) -> None:
        self._models.clear()
        self._current = None
