"""A tiny HTTP server that answers like Ollama from recorded response files.

No Ollama server exists on the test machine. This one listens on 127.0.0.1 at a
random port and answers each request with a JSON file from
tests/fixtures/ollama/, so the real `ollama` client talks real HTTP to it. It
keeps every request body it got, so tests can assert on what the client sent.
(The idea follows ml-energy/zeus's ReplayZeusMonitor: replay what a real
system recorded instead of mocking the code under test.)

    with OllamaReplay() as server:
        server.on("/api/chat", "chat_label.json")
        server.on("/api/chat", "chat_missing_model.json", status=404,
                  when=lambda body: body["model"].endswith("fp16"))
        ...  # OllamaEngine(host=server.host)
        server.requests("/api/chat")  # -> the JSON bodies the client sent
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ollama"


@dataclass(frozen=True)
class Route:
    path: str
    fixture: str
    status: int
    when: Callable[[dict], bool] | None


class OllamaReplay:
    def __init__(self, fixtures: Path = FIXTURES):
        self.fixtures = fixtures
        self._routes: list[Route] = []
        self._received: list[tuple[str, str, dict]] = []   # (method, path, body)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def on(self, path: str, fixture: str, status: int = 200,
           when: Callable[[dict], bool] | None = None) -> None:
        """Answer `path` with `fixture`; the route added last wins when several match."""
        if not (self.fixtures / fixture).is_file():
            raise FileNotFoundError(self.fixtures / fixture)
        self._routes.insert(0, Route(path, fixture, status, when))

    def requests(self, path: str | None = None) -> list[dict]:
        """Bodies received (on `path`, or all), oldest first."""
        with self._lock:
            return [body for _, p, body in self._received if path is None or p == path]

    def __enter__(self) -> "OllamaReplay":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop answering; the port then refuses connections. Safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def _answer(self, method: str, path: str, body: dict) -> tuple[int, bytes]:
        with self._lock:
            self._received.append((method, path, body))
        for route in self._routes:
            if route.path == path and (route.when is None or route.when(body)):
                return route.status, (self.fixtures / route.fixture).read_bytes()
        # What Ollama's router (gin) says for a path it does not serve.
        return 404, b"404 page not found"

    def _handler_class(self):
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                status, payload = replay._answer(self.command, self.path, body)
                self.send_response(status)
                is_json = payload[:1] in (b"{", b"[")
                self.send_header("Content-Type", "application/json; charset=utf-8" if is_json
                                 else "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _reply

            def log_message(self, *args) -> None:   # keep pytest output clean
                pass

        return Handler
