"""Test only (make compose-check): answers the two Ollama calls a healthy server answers
(GET /api/version, GET /api/tags with no models), so the compose file's `worker ->
ollama: service_healthy` can be met without the ollama/ollama image, which no registry
here can serve. The check's experiment runs on the embedded engine only.

    python ollama_stub.py PORT        # listens on 127.0.0.1:PORT
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWERS = {"/api/version": {"version": "0.0.0-stub"}, "/api/tags": {"models": []}}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = ANSWERS.get(self.path.split("?")[0])
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body or {"error": "not in the stub"}).encode())


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
