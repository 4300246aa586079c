"""A timing-replay engine for the fleet benchmark: SIMULATED inference, bench only.

It sleeps the time a real SmolLM2-135M classification took on this machine and
answers a fixed label. The times come from `smollm2_timings.json` next to this
file, recorded by `python -m bench.replay_engine --record` (the real embedded
llama.cpp engine, greenctl's default protocol: label-only 3-shot, constrained,
cached prefix, via the worker's own `build_request`); the file says when, on what,
under which load. Requests take the table's rows in turn, each worker starting at
its own offset, so 50 workers do not march in step.

Never selectable by a user: it is not in `worker.engines.ENGINES` and the spec
refuses its name; only `python -m bench.fleet_worker` registers it
(`worker.engines.register_engine`). Its variant names choose the arm:
a recorded variant ("q4_0", "q8_0") replays that variant's times, "0ms" answers at once
(the coordination ceiling). Its rows carry engine "replay" and energy method
"simulated" (bench.fleet_worker's meter), and `greenctl report` labels them SIMULATED.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from worker.engines import REPLAY_ENGINE, Generation, InferenceRequest
from worker.engines.base import EngineError, ModelInfo

TIMINGS = Path(__file__).resolve().parent / "smollm2_timings.json"
ZERO = "0ms"                 # the arm with no engine time at all
FIXED_LABEL = "Neutral"      # every answer (display form of "neutral"); quality is not measured here


def load_table(path: Path = TIMINGS) -> dict:
    """The recorded table: {"recorded": {...}, "variants": {variant: [row, ...]}}; rows in seconds."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: record it with `python -m bench.replay_engine --record`")
    return json.loads(path.read_text())


def replay_s(rows: list[dict], index: int) -> dict:
    """The index-th row, cycling (times in s, tokens as recorded). Pure."""
    return rows[index % len(rows)]


class ReplayEngine:
    """Engine protocol (worker.engines.base): load() is instant, generate() sleeps the recorded time."""

    name = REPLAY_ENGINE

    def __init__(self, offset: int = 0, table: dict | None = None, **_options):
        self.table = table if table is not None else load_table()
        self._next = offset
        self._variant: str | None = None

    def load(self, model: str, variant: str) -> ModelInfo:
        if variant != ZERO and variant not in self.table["variants"]:
            raise EngineError(f"replay engine: no recorded times for variant {variant!r}: use "
                              f"{ZERO!r} or one of {sorted(self.table['variants'])}", retryable=False)
        self._variant = variant
        # Real SmolLM2-135M figures, so the estimator columns behave as with the real model.
        return ModelInfo(name=model, quantization=f"replay-{variant}", parameter_count=134_515_008,
                         bits_per_weight=4.5 if variant == "q4_0" else 8.5 if variant == "q8_0" else None,
                         file="simulated (bench/replay_engine.py)")

    def generate(self, request: InferenceRequest) -> Generation:
        if self._variant is None:
            raise EngineError("replay engine: generate() before load()", retryable=False)
        if self._variant == ZERO:
            return Generation(text=FIXED_LABEL, prompt_tokens=0, prompt_tokens_uncached=0, output_tokens=1,
                              prompt_s=0.0, decode_s=0.0, e2e_s=0.0, extra={"simulated": True})
        row = replay_s(self.table["variants"][self._variant], self._next)
        self._next += 1
        started = time.perf_counter()
        time.sleep(row["e2e_s"])
        return Generation(text=FIXED_LABEL, prompt_tokens=row["prompt_tokens"],
                          prompt_tokens_uncached=row["prompt_tokens_uncached"],
                          output_tokens=row["output_tokens"], prompt_s=row["prompt_s"], decode_s=row["decode_s"],
                          e2e_s=time.perf_counter() - started, extra={"simulated": True})

    def close(self) -> None:
        pass


def record(n: int, variants: list[str], threads: int, passes: int = 3, path: Path = TIMINGS) -> dict:
    """Run the real embedded engine on n stratified samples per variant (variants interleaved
    sample by sample) with greenctl's default protocol, `passes` times over the whole sample
    set; keep per sample its fastest pass (the machine is shared: the minimum of a few runs is
    the least disturbed one; each pass's prompt follows another sample's, so the prefix cache
    holds what it would in a worker). Writes the per-request timings table."""
    from bench import workload
    from bench.report import cores, cpu_model
    from worker.engines.embedded import EmbeddedEngine

    samples, examples = workload.samples(n, workload.DEFAULT_PROMPT["few_shot"])
    engines = {v: EmbeddedEngine(threads=threads, cache_dir=_cache_dir()) for v in variants}
    for v, e in engines.items():
        e.load(workload.MODEL, v)
    load0 = os.getloadavg()[0]
    runs: dict[str, list[list[dict]]] = {v: [[] for _ in samples] for v in variants}
    try:
        for _ in range(passes):
            for i, s in enumerate(samples):
                for v in (variants if i % 2 == 0 else variants[::-1]):
                    gen = engines[v].generate(workload.request(s.text, workload.DEFAULT_PROMPT,
                                                               workload.DEFAULT_PARAMS, examples, variant=v))
                    runs[v][i].append({"e2e_s": round(gen.e2e_s, 5), "prompt_s": round(gen.prompt_s, 5),
                                       "decode_s": round(gen.decode_s, 5), "prompt_tokens": gen.prompt_tokens,
                                       "prompt_tokens_uncached": gen.prompt_tokens_uncached,
                                       "output_tokens": gen.output_tokens})
    finally:
        for e in engines.values():
            e.close()
    table = {"recorded": {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "command": f"python -m bench.replay_engine --record --n {n} --threads {threads} "
                                     f"--passes {passes} --variants {','.join(variants)}",
                          "kept": f"per sample, the fastest of {passes} passes",
                          "model": workload.MODEL, "engine": "embedded (llama.cpp via xllamacpp)",
                          "protocol": "greenctl default: label-only 3-shot, label-constrained, max_tokens 4, "
                                      "cached prefix (worker.tasks.build_request)",
                          "threads": threads, "cpu": cpu_model(), "cores": cores(),
                          "python": platform.python_version(),
                          "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]},
             "variants": {v: [min(per, key=lambda r: r["e2e_s"]) for per in runs[v]] for v in variants},
             "all_passes_median_ms": {v: round(1e3 * sorted(r["e2e_s"] for per in runs[v] for r in per)[
                 len(samples) * passes // 2], 1) for v in variants}}
    path.write_text(json.dumps(table, indent=1) + "\n")
    return table


def _cache_dir() -> Path:
    from shared.config import Settings

    return Settings.from_env().cache_dir


def summary(table: dict) -> dict:
    """Per variant: n, median, p10, p90 and mean e2e (ms). Pure."""
    out = {}
    for v, rows in table["variants"].items():
        xs = sorted(r["e2e_s"] for r in rows)
        out[v] = {"n": len(xs), "mean_ms": round(1e3 * sum(xs) / len(xs), 1),
                  "p10_ms": round(1e3 * xs[int(0.1 * (len(xs) - 1))], 1),
                  "median_ms": round(1e3 * xs[len(xs) // 2], 1),
                  "p90_ms": round(1e3 * xs[int(0.9 * (len(xs) - 1))], 1)}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.replay_engine", description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="record the timings table with the real engine")
    parser.add_argument("--n", type=int, default=120, help="samples per variant")
    parser.add_argument("--variants", default="q4_0,q8_0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=3, help="runs per sample; the fastest is kept")
    args = parser.parse_args()
    t = record(args.n, args.variants.split(","), args.threads, args.passes) if args.record else load_table()
    print(json.dumps({"recorded": t["recorded"], "summary": summary(t)}, indent=1))
