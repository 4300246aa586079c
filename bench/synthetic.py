"""Synthetic data for the database benchmarks: a dataset of any size, an
experiment written by the scheduler's own code, and realistic result rows."""
from __future__ import annotations

import csv
import random
from pathlib import Path

from bench.workload import DATASET, LABELS


def dataset(path: Path, rows: int, seed: int = 0) -> Path:
    """`rows` labelled texts drawn (with replacement) from the bundled data, numbered so each is distinct."""
    with DATASET.open(encoding="utf-8") as f:
        source = list(csv.DictReader(f))
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        for i in range(rows):
            row = rng.choice(source)
            out.writerow([f"{row['text']} (#{i})", row["label"]])
    return path


def spec(dataset_path: Path, queue: str, name: str = "bench"):
    """greenctl's default experiment over every row of `dataset_path`."""
    from scheduler.spec import parse_spec

    from bench.workload import DEFAULT_PARAMS, DEFAULT_PROMPT, MODEL

    return parse_spec({
        "name": name,
        "dataset": {"path": str(dataset_path), "labels": LABELS, "stratify": False},
        "prompt": DEFAULT_PROMPT,
        "models": [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"], "params": DEFAULT_PARAMS}],
        "placement": {"queue": queue},
    })


def experiment(db: str, dataset_path: Path, queue: str) -> tuple[int, list[int], int]:
    """Write an experiment over the whole dataset; (experiment id, task ids, variant id)."""
    import sqlalchemy as sa

    from scheduler.dataset import load_samples
    from scheduler.submit import write_experiment
    from shared.db import session_scope

    s = spec(dataset_path, queue)
    samples, examples = load_samples(s.dataset, s.prompt.few_shot)
    eid = write_experiment(db, s, samples, examples)
    with session_scope(db) as session:
        rows = session.execute(sa.text("SELECT id, variant_id FROM task WHERE experiment_id = :e ORDER BY id"),
                               {"e": eid}).all()
    return eid, [r[0] for r in rows], rows[0][1]


def result_row(task_id: int, experiment_id: int, variant_id: int) -> dict:
    """A result as `worker.tasks.result_row` makes it, with typical values."""
    return dict(
        task_id=task_id, experiment_id=experiment_id, variant_id=variant_id,
        worker="bench:bench", hardware_profile="bench-2c", prediction="neutral", parse_ok=True,
        raw_output="neutral", prompt_tokens=119, prompt_tokens_uncached=17, output_tokens=2,
        load_s=0.0, prompt_s=0.05, decode_s=0.02, e2e_s=0.08, threads=2,
        energy_cpu_kwh=1e-6, energy_ram_kwh=1e-7, energy_gpu_kwh=0.0, energy_kwh=1.1e-6,
        co2_kg=3e-8, energy_method="estimated", idle_energy_kwh=None,
        energy_detail="cpu=estimated ram=estimated gpu=none",
        carbon_intensity_kg_per_kwh=0.03, pue=1.0,
    )
