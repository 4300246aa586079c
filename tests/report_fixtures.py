"""Stored experiments for the report tests, written straight into Postgres.

No model runs: rows are made with the shapes a worker writes (worker/tasks.py
result_row) and values of SmolLM2-135M on a 2-core CPU with CodeCarbon's
estimated energy. Timings follow the CPU law estimator.local fits (prefill
work per thread, decode bytes), so a refit on them is a good fit and the
estimator can stand in for an unmeasured variant.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import sqlalchemy as sa

from shared.db import session_scope
from shared.models import Experiment, Result, Task, TaskStatus, Variant

LABELS = ["positive", "negative", "neutral"]
MODEL = "smollm2:135m-instruct"
PARAMS = 134_515_008
BITS = {"f16": 16.0, "q8_0": 8.5, "q4_1": 5.0, "q4_0": 4.5}
# Share of right answers per variant, and of answers that name no label.
ACCURACY = {"f16": 0.72, "q8_0": 0.68, "q4_1": 0.64, "q4_0": 0.60}
UNPARSED_RATE = 0.06
CARBON_INTENSITY = 0.12        # kg CO2e/kWh, about CodeCarbon's figure for Canada
CPU_WATTS = 14.0


@dataclass
class Machine:
    profile: str = "cpu-test-2c"
    workers: tuple[str, ...] = ("edge-a", "edge-b")
    threads: int = 2
    speed: float = 1.0          # >1: slower machine (longer tasks, more energy)


@dataclass
class Seeded:
    experiment_id: int
    variant_ids: dict[str, int] = field(default_factory=dict)


def _timings(rng, bits: float, machine: Machine) -> dict:
    prompt_uncached = int(rng.integers(30, 90))
    output = int(rng.integers(1, 5))
    prompt_s = 30.0 * PARAMS * prompt_uncached / machine.threads / 1e12 * machine.speed
    decode_s = output * (0.004 + 150.0 * PARAMS * bits / 8 / 1e12) * machine.speed
    noise = float(rng.normal(1.0, 0.03))
    e2e = (0.015 + prompt_s + decode_s) * noise
    energy = e2e * CPU_WATTS / 3.6e6
    return dict(prompt_tokens=prompt_uncached + 120, prompt_tokens_uncached=prompt_uncached,
                output_tokens=output, prompt_s=prompt_s * noise, decode_s=decode_s * noise, e2e_s=e2e,
                threads=machine.threads, energy_cpu_kwh=energy * 0.8, energy_ram_kwh=energy * 0.2,
                energy_kwh=energy, co2_kg=energy * CARBON_INTENSITY)


def _predictions(rng, truths: list[str], accuracy: float) -> list[str | None]:
    """About `accuracy` of the answers right, UNPARSED_RATE naming no label, the rest wrong."""
    n = len(truths)
    n_right, n_unparsed = round(accuracy * n), max(1, round(UNPARSED_RATE * n))
    out: list[str | None] = []
    for truth, rank in zip(truths, rng.permutation(n)):   # a random rank decides each answer's kind
        if rank < n_right:
            out.append(truth)
        elif rank < n_right + n_unparsed:
            out.append(None)
        else:
            out.append(str(rng.choice([label for label in LABELS if label != truth])))
    return out


def seed_experiment(url: str, *, variants=("f16", "q8_0", "q4_0"), samples: int = 30,
                    failed: int = 2, unfinished: int = 0, unmeasured=(), machine: Machine | None = None,
                    name: str = "fin-sentiment-quantization", seed: int = 0, constant=()) -> Seeded:
    """One experiment: `variants` measured (f16 the baseline), `failed` failed tasks each,
    the last `unfinished` tasks of each still queued/running; `unmeasured` variants have
    tasks but no result (queued) and no model_info, as before a worker loaded them; `constant`
    variants answer "neutral" to every sample (a degenerate classifier)."""
    machine = machine or Machine()
    rng = np.random.default_rng(seed)
    truths = [LABELS[i % len(LABELS)] for i in range(samples)]
    all_variants = list(variants) + list(unmeasured)
    clock = datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc)
    partial = bool(unfinished or unmeasured)
    with session_scope(url) as s:
        exp = Experiment(name=name, status=TaskStatus.RUNNING if partial else TaskStatus.DONE,
                         n_tasks=samples * len(all_variants), created_at=clock,
                         finished_at=None if partial else clock + timedelta(hours=1),
                         spec={"name": name, "dataset": {"labels": LABELS, "sample": samples},
                               "carbon": {"country_iso_code": "CAN", "pue": 1.0}, "repeats": 1})
        s.add(exp)
        s.flush()
        out = Seeded(exp.id)
        for name_ in all_variants:
            measured = name_ in variants
            v = Variant(experiment_id=exp.id, model=MODEL, engine="embedded", variant=name_,
                        is_baseline=name_ == "f16", queue="edge",
                        params={"max_tokens": 4, "temperature": 0.0, "seed": 0},
                        model_info={"name": MODEL, "quantization": name_, "parameter_count": PARAMS,
                                    "bits_per_weight": BITS[name_]} if measured else None)
            s.add(v)
            s.flush()
            out.variant_ids[name_] = v.id
            predictions = (["neutral"] * samples if name_ in constant
                           else _predictions(rng, truths, ACCURACY[name_]))
            for i, truth in enumerate(truths):
                status = TaskStatus.DONE
                if not measured or i >= samples - unfinished:
                    status = TaskStatus.QUEUED if i % 2 or not measured else TaskStatus.RUNNING
                elif i < failed:
                    status = TaskStatus.FAILED
                worker = machine.workers[i % len(machine.workers)]
                task = Task(experiment_id=exp.id, variant_id=v.id, sample_index=i, text=f"sentence {i}",
                            label=truth, status=status, attempts=1 if status != TaskStatus.QUEUED else 0,
                            worker=worker if status != TaskStatus.QUEUED else None,
                            error="engine crashed: out of memory" if status == TaskStatus.FAILED else None)
                s.add(task)
                s.flush()
                if status != TaskStatus.DONE:
                    continue
                t = _timings(rng, BITS[name_], machine)
                clock += timedelta(seconds=t["e2e_s"] + 0.05)
                prediction = predictions[i]
                s.add(Result(task_id=task.id, experiment_id=exp.id, variant_id=v.id, worker=worker,
                             hardware_profile=machine.profile, prediction=prediction,
                             parse_ok=prediction is not None,
                             raw_output=prediction or "The sentiment is unclear.", **t,
                             energy_method="estimated", energy_detail="cpu=estimated ram=estimated gpu=none",
                             carbon_intensity_kg_per_kwh=CARBON_INTENSITY, pue=1.0, created_at=clock))
    return out


def stored_rows(url: str, experiment_id: int) -> dict[str, list[dict]]:
    """The finished rows of each variant, read back independently of greenctl.report."""
    query = sa.text("""
        select v.variant, t.label, r.prediction, r.energy_kwh, r.co2_kg, r.e2e_s, r.prompt_tokens,
               r.prompt_tokens_uncached, r.output_tokens
        from result r join task t on t.id = r.task_id join variant v on v.id = r.variant_id
        where r.experiment_id = :id order by t.id""")
    out: dict[str, list[dict]] = {}
    with session_scope(url) as s:
        for row in s.execute(query, {"id": experiment_id}).mappings():
            out.setdefault(row["variant"], []).append(dict(row))
    return out


def failed_counts(url: str, experiment_id: int) -> dict[str, int]:
    query = sa.text("""select v.variant, count(*) from task t join variant v on v.id = t.variant_id
                       where t.experiment_id = :id and t.status = 'failed' group by v.variant""")
    with session_scope(url) as s:
        return dict(s.execute(query, {"id": experiment_id}).all())


# Base-unit factors of every unit a human format may print, for parsing what a reader sees.
UNIT_FACTORS = {"kg": 1.0, "g": 1e-3, "mg": 1e-6, "µg": 1e-9, "kWh": 1.0, "Wh": 1e-3, "mWh": 1e-6, "µWh": 1e-9,
                "h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3}


def expected_metrics(rows: list[dict], labels: list[str] = LABELS) -> dict:
    """A fresh scikit-learn computation over stored rows; an answer naming no label counts as wrong."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    none = "(no label)"
    y_true = [r["label"] for r in rows]
    y_pred = [r["prediction"] or none for r in rows]
    out = {"n": len(rows), "n_unparsed": sum(r["prediction"] is None for r in rows),
           "accuracy": accuracy_score(y_true, y_pred)}
    for avg in ("weighted", "macro"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out |= {f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f}
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=labels + [none])[: len(labels)].tolist()
    for key, column in (("energy_kwh_per_inference", "energy_kwh"), ("co2_kg_per_inference", "co2_kg"),
                        ("latency_s_mean", "e2e_s"), ("prompt_tokens_mean", "prompt_tokens"),
                        ("prompt_tokens_uncached_mean", "prompt_tokens_uncached"),
                        ("output_tokens_mean", "output_tokens")):
        out[key] = float(np.mean([r[column] for r in rows]))
    return out


def seed_with_truth(url: str, **kw) -> tuple[int, dict]:
    """Seed an experiment; (its id, per-variant metrics from a fresh scikit-learn pass
    over the stored rows, with n_failed)."""
    seeded = seed_experiment(url, **kw)
    rows = stored_rows(url, seeded.experiment_id)
    truth = {name: expected_metrics(rows[name]) for name in rows}
    for name, n_failed in failed_counts(url, seeded.experiment_id).items():
        truth[name]["n_failed"] = n_failed
    return seeded.experiment_id, truth
