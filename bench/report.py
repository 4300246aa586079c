"""What a benchmark prints: its inputs, the machine and its load, figures, goals.

One `Report` per benchmark: readable text, or one JSON line for scripts.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field


def cpu_model() -> str:
    from worker.hardware import _cpu_model

    return _cpu_model()


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)   # idle + iowait
    return sum(values) - idle, sum(values)


class LoadWatch:
    """Load average at start and end, and how busy the CPUs were in between.

    Other developers run tests on this machine: a figure means little without
    the load it was measured under.
    """

    def __init__(self) -> None:
        self.load_start = os.getloadavg()[0]
        self.started = time.monotonic()
        self._jiffies = _cpu_jiffies()

    def summary(self) -> dict:
        busy0, total0 = self._jiffies
        busy1, total1 = _cpu_jiffies()
        share = (busy1 - busy0) / (total1 - total0) if total1 > total0 else None
        return {"load_avg_1m_start": round(self.load_start, 2),
                "load_avg_1m_end": round(os.getloadavg()[0], 2),
                "cpu_busy_pct": None if share is None else round(100 * share, 1),
                "wall_s": round(time.monotonic() - self.started, 1)}


@dataclass
class Goal:
    what: str             # e.g. "throughput(b)/throughput(a) >= 0.97"
    value: float | None
    met: bool | None      # None: not measured in this size


@dataclass
class Report:
    bench: str            # short name, e.g. "p1-pipeline"
    title: str
    size: str
    inputs: dict
    figures: dict
    goals: list[Goal] = field(default_factory=list)
    details: dict = field(default_factory=dict)   # breakdowns and per-arm numbers
    notes: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps(asdict(self), default=_plain, separators=(",", ":"))

    def as_text(self) -> str:
        lines = [f"== {self.bench}: {self.title} [{self.size}]"]
        lines.append("inputs:  " + _kv(self.inputs))
        lines.append("machine: " + _kv(self.machine))
        lines.append("figures:")
        lines += [f"  {k:<44} {_fmt(v)}" for k, v in self.figures.items()]
        if self.details:
            lines.append("details:")
            for k, v in self.details.items():
                text = json.dumps(v, default=_plain) if isinstance(v, (dict, list)) else _fmt(v)
                lines.append(f"  {k}: {text}")
        for g in self.goals:
            state = "n/a (smoke size)" if g.met is None else ("MET" if g.met else "MISSED")
            lines.append(f"goal:    {g.what}: {_fmt(g.value)} -> {state}")
        lines += [f"note:    {n}" for n in self.notes]
        return "\n".join(lines)


def machine(watch: LoadWatch) -> dict:
    return {"cpu": cpu_model(), "cores": cores(), "python": platform.python_version()} | watch.summary()


def _plain(value):
    if hasattr(value, "item"):          # numpy scalars
        return value.item()
    return str(value)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _kv(d: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in d.items())


def joules(kwh: float) -> float:
    return kwh * 3.6e6


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def median(values) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
