"""Edits of an experiment spec for tests: one field replaced or deleted by dotted path."""
from __future__ import annotations

from typing import Callable


def edit(path: str, value) -> Callable[[dict], dict]:
    """An edit of the good spec: the field at dotted `path` ([i] for list items) set to
    `value`, or deleted when value is DELETE."""
    def apply(spec: dict) -> dict:
        parts = path.replace("[", ".").replace("]", "").split(".")
        node = spec
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
        last = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
        return spec
    return apply


DELETE = object()
