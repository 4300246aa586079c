"""Is each service doing its job, beyond having a live process?"""
from __future__ import annotations

import base64
import urllib.error
import urllib.request


def ping_nodes(app, nodes: list[str], timeout_s: float = 1.0) -> set[str]:
    """The Celery node names, among `nodes`, that answered a ping."""
    if not nodes:
        return set()
    try:
        # Fail fast when the broker is away; a ping would otherwise retry for long.
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        replies = app.control.ping(destination=nodes, timeout=timeout_s)
    except Exception:  # broker away: nobody answers
        return set()
    return {name for reply in replies for name in reply}


def http_status(url: str, user: str | None = None, password: str | None = None,
                timeout_s: float = 3.0) -> int | None:
    """HTTP status of a GET (None when nothing answers)."""
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def flower_ok(base_url: str) -> bool:
    # /healthcheck needs no credentials (Flower's design): it must stay on the internal network.
    return http_status(f"{base_url}/healthcheck") == 200
