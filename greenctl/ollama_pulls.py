"""Which Ollama tags an experiment needs that its queues' workers have not pulled. Pure.

A worker with the Ollama engine records the tags its server lists (/api/tags) when it
starts and with every heartbeat (worker_node.models); `greenctl submit` compares them with
the tags the experiment's Ollama models resolve to (shared.variants.ollama_tag, the rule the
engine loads them with) and prints the `ollama pull` lines per worker before any task fails.
"""
from __future__ import annotations

from shared.variants import ollama_tag


def _canonical(tag: str) -> str:
    """Ollama lists a tag given without one as `name:latest`; names compare case-insensitively."""
    return (tag if ":" in tag else f"{tag}:latest").lower()


def required_tags(spec) -> dict[str, list[str]]:
    """queue -> the Ollama tags its tasks load, in spec order (each once)."""
    out: dict[str, list[str]] = {}
    for m in spec.models:
        if m.engine != "ollama":
            continue
        queue = m.queue or spec.placement.queue
        for v in m.variants:
            tag = ollama_tag(m.name, v)
            if tag not in out.setdefault(queue, []):
                out[queue].append(tag)
    return out


def missing_lines(required: dict[str, list[str]], workers: dict[str, dict[str, list[str]]]) -> list[str]:
    """Warning lines: per online Ollama worker of each queue, the `ollama pull` commands for
    the tags it lacks; a queue with no such worker gets one line saying so."""
    lines = []
    for queue, tags in required.items():
        hosts = workers.get(queue, {})
        if not hosts:
            lines.append(f"warning: no online worker with the Ollama engine on queue {queue!r}: its "
                         f"{len(tags)} Ollama tag{'s' * (len(tags) != 1)} wait for one: start "
                         f"`greenctl worker --queue {queue} --engine ollama` where Ollama runs")
            continue
        for host, models in sorted(hosts.items()):
            have = {_canonical(t) for t in models}
            lacking = [t for t in tags if _canonical(t) not in have]
            if not lacking:
                continue
            lines.append(f"warning: worker {host} (queue {queue!r}) lacks {len(lacking)} of the "
                         f"{len(tags)} Ollama tags this experiment needs: tasks that need them fail on "
                         f"it until you run, on {host}:")
            lines += [f"  ollama pull {t}" for t in lacking]
    return lines
