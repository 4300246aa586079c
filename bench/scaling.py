"""Scaling on this 2-core machine, and the cost curve of energy vs prompt length.

Workers: the same N samples through the full pipeline with 1 worker x 2 threads
and with 2 workers x 1 thread (each on its own queue, all started before timing;
runs alternate 1x2, 2x1, 2x1, 1x2). Throughput = N / (submit -> last result row).

Cost curve: in-process engine + the worker's meter, greenctl's default prompt
(cached shared prefix), sample texts of growing length, interleaved across
lengths; energy and time per sample against the prompt tokens evaluated.
"""
from __future__ import annotations

import csv
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from bench import servers, workload
from bench.report import LoadWatch, Report, cores, joules, machine, mean

SIZES = {"full": dict(n=60, repeats=2, lengths=(16, 64, 256, 1024), per_length=8),
         "quick": dict(n=20, repeats=1, lengths=(16, 128, 512), per_length=3),
         "smoke": dict(n=2, repeats=1, lengths=(16, 64), per_length=1, warm_up=False)}  # code path only
LAYOUTS = {"1x2": (1, 2), "2x1": (2, 1)}   # (workers, threads per worker)


def _submit(db: str, broker: str, spec_path: Path) -> int:
    """What `greenctl submit` does, in this process (no CLI start-up in the timing)."""
    from scheduler.spec import load_spec
    from scheduler.submit import submit
    from shared.celery_app import configure

    return submit(db, configure(broker, db), load_spec(spec_path))


def _rows(db: str, experiment_id: int) -> list:
    from shared.db import session_scope

    with session_scope(db) as s:
        return s.execute(sa.text("SELECT created_at, energy_kwh, e2e_s FROM result WHERE experiment_id = :e "
                                 "ORDER BY created_at"), {"e": experiment_id}).all()


def timed_run(srv, spec_path: Path, n: int) -> dict:
    """One experiment through the workers. Besides the energy the workers record per task,
    this process's own tracker (machine mode) is open over the whole run: the machine's
    energy per sample, which overlapping worker windows cannot double-count."""
    # An observer over the workers' windows: it must not take the host-wide measuring lock
    # the workers take turns on, or no worker could measure while it is open.
    meter = workload.meter(host_lock=None)
    t0 = time.time()
    meter.begin("bench-scaling-run")
    try:
        experiment_id = _submit(srv.db, srv.broker, spec_path)
        servers.wait_for_results(srv.db, experiment_id, n, timeout=60 + 30 * n, poll_s=0.5)
    finally:
        machine_j = joules(meter.end("bench-scaling-run").total_kwh)
    rows = _rows(srv.db, experiment_id)
    wall = rows[-1].created_at.timestamp() - t0
    return {"throughput": n / wall, "energy_j": joules(mean(r.energy_kwh for r in rows)),
            "machine_energy_j": machine_j / n, "engine_s": mean(r.e2e_s for r in rows)}


def workers_layouts(cfg: dict, tmp: Path) -> tuple[dict, str]:
    runs = {name: [] for name in LAYOUTS}
    tag = uuid.uuid4().hex[:6]
    queues = {name: f"bench-scale-{name}-{tag}" for name in LAYOUTS}
    layout = [(queues[name], threads) for name, (count, threads) in LAYOUTS.items() for _ in range(count)]
    with servers.servers() as srv, servers.workers(srv.env(), layout, tmp):
        specs, warm = {}, {}
        for name, (count, _) in LAYOUTS.items():
            specs[name] = servers.write_spec(tmp / f"scale-{name}.yaml", sample=cfg["n"], queue=queues[name])
            warm[name] = servers.write_spec(tmp / f"warm-{name}.yaml", sample=2 * count, seed=7,
                                            queue=queues[name])
        workload.meter(host_lock=None)   # this process's tracker, started before timing
        for name, path in warm.items() if cfg.get("warm_up", True) else ():
            # every worker loads the model before timing
            servers.wait_for_results(srv.db, _submit(srv.db, srv.broker, path), 2 * LAYOUTS[name][0], 300)
        for rep in range(cfg["repeats"]):
            for name in (("1x2", "2x1") if rep % 2 == 0 else ("2x1", "1x2")):
                runs[name].append(timed_run(srv, specs[name], cfg["n"]))
        kind = srv.kind
    return {name: {k: mean(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}, kind


def texts_of_length(tokens: int, count: int, seed: int) -> list[str]:
    """`count` texts of about `tokens` tokens, made by joining dataset sentences (~4 chars/token)."""
    with workload.DATASET.open(encoding="utf-8") as f:
        sentences = [r["text"] for r in csv.DictReader(f)]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        text = ""
        while len(text) < 4 * tokens:
            text += sentences[rng.integers(len(sentences))] + " "
        out.append(text[: 4 * tokens].strip())
    return out


def cost_curve(cfg: dict, threads: int) -> list[dict]:
    _, examples = workload.samples(30, workload.DEFAULT_PROMPT["few_shot"])
    engine, meter = workload.loaded(threads), workload.meter()
    def req(text):
        return workload.request(text, workload.DEFAULT_PROMPT, workload.DEFAULT_PARAMS, examples)
    engine.generate(req("warm-up"))
    texts = {n: texts_of_length(n, cfg["per_length"], seed=n) for n in cfg["lengths"]}
    measured = {n: [] for n in cfg["lengths"]}
    for i in range(cfg["per_length"]):
        for n in cfg["lengths"]:   # round robin: drift of the machine hits every length alike
            started = time.perf_counter()
            meter.begin("bench-curve")
            try:
                gen = engine.generate(req(texts[n][i]))
            finally:
                reading = meter.end("bench-curve")
            measured[n].append((gen.prompt_tokens_uncached, time.perf_counter() - started,
                                joules(reading.total_kwh)))
    return [{"target_tokens": n, "tokens_evaluated": mean(m[0] for m in ms),
             "ms": 1e3 * mean(m[1] for m in ms), "energy_j": mean(m[2] for m in ms)}
            for n, ms in measured.items()]


def run(size: str = "full") -> Report:
    cfg, watch = SIZES[size], LoadWatch()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        layouts, kind = workers_layouts(cfg, Path(tmp))
    curve = cost_curve(cfg, cores())
    machine_j = {name: layout["machine_energy_j"] for name, layout in layouts.items()}
    slope, _ = np.polyfit([c["tokens_evaluated"] for c in curve], [c["energy_j"] for c in curve], 1)
    figures = {
        "throughput 2x1 / 1x2": layouts["2x1"]["throughput"] / layouts["1x2"]["throughput"],
        "throughput 1 worker x 2 threads (samples/s)": layouts["1x2"]["throughput"],
        "throughput 2 workers x 1 thread (samples/s)": layouts["2x1"]["throughput"],
        "engine time per task 1x2 / 2x1 (ms)": f"{1e3 * layouts['1x2']['engine_s']:.0f} / "
                                               f"{1e3 * layouts['2x1']['engine_s']:.0f}",
        "machine energy per sample 1x2 / 2x1 (J)": f"{layouts['1x2']['machine_energy_j']:.2f} / "
                                                  f"{layouts['2x1']['machine_energy_j']:.2f}",
        "machine energy per sample 2x1 / 1x2": machine_j["2x1"] / machine_j["1x2"],
        "recorded (sum of task windows) / machine energy, 1x2": layouts["1x2"]["energy_j"] / machine_j["1x2"],
        "recorded (sum of task windows) / machine energy, 2x1": layouts["2x1"]["energy_j"] / machine_j["2x1"],
    }
    for c in curve:
        figures[f"~{c['tokens_evaluated']:.0f} prompt tokens evaluated: J / ms per sample"] = \
            f"{c['energy_j']:.2f} J / {c['ms']:.0f} ms"
    figures["energy per 1000 prompt tokens (J, linear fit)"] = 1000 * slope
    figures["energy ratio longest / shortest prompt"] = curve[-1]["energy_j"] / curve[0]["energy_j"]
    return Report(
        bench="scaling", title="1 worker x 2 threads vs 2 workers x 1 thread; energy vs prompt length",
        size=size,
        inputs={"model": f"{workload.MODEL} {workload.VARIANT}", "N": cfg["n"], "repeats": cfg["repeats"],
                "layouts": "1x2, 2x1 (workers x threads)", "servers": kind,
                "curve": f"{cfg['per_length']} samples per length {list(cfg['lengths'])}, 3-shot cached prefix"},
        figures=figures,
        details={"layouts": layouts, "curve": curve},
        notes=["each worker's CodeCarbon tracker measures the whole machine (machine mode), so with two "
               "workers on one host each task's window also counts the other worker's CPU: the energy the "
               "result rows record is double-counted in the 2x1 layout (about 2x the machine's); greenctl's "
               "design is one worker per host (worker_concurrency=1)",
               "machine energy = this process's own tracker open over each whole run / N; it also counts "
               "whatever else runs on the machine (other developers' tests)",
               "energy is CodeCarbon's TDP estimate: estimated, not measured"],
        machine=machine(watch),
    )
