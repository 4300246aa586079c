"""The inputs every benchmark shares: samples, requests, a loaded engine, a meter.

Requests are built by the worker's own `build_request` from an in-memory job,
so a bare loop here sends llama.cpp exactly what a worker would.
"""
from __future__ import annotations

import functools
from pathlib import Path

from sklearn.metrics import f1_score

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "greenctl" / "data" / "financial_sentiment.csv"
LABELS = ["positive", "negative", "neutral"]
MODEL = "smollm2:135m-instruct"
VARIANT = "q4_0"
GEMMA = ("gemma3:270m", "q4_k_m")

# greenctl's default protocol (demo.yaml): label-only, constrained, cached shared prefix.
DEFAULT_PROMPT = {"template": "label-only", "few_shot": 3, "output": "label"}
DEFAULT_PARAMS = {"max_tokens": 4, "temperature": 0.0, "top_p": 0.9, "top_k": 50, "seed": 0}
# The seed paper's protocol: Figure 2 prompt, free text with reasoning, its Table II params.
PAPER_PROMPT = {"template": "paper-checklist", "few_shot": 0, "output": "free"}
PAPER_PARAMS = {"max_tokens": 512, "temperature": 0.7, "top_p": 0.9, "top_k": 50, "seed": 0}


def dataset_spec(sample: int | None, seed: int = 42, path: Path = DATASET):
    from scheduler.spec import DatasetSpec

    return DatasetSpec(path=path, labels=LABELS, sample=sample, stratify=True, seed=seed)


def samples(n: int, few_shot: int, seed: int = 42):
    """(samples, few-shot examples) exactly as `greenctl submit` would choose them."""
    from scheduler.dataset import load_samples

    return load_samples(dataset_spec(n, seed), few_shot)


def request(text: str, prompt: dict, params: dict, examples=(), model: str = MODEL,
            variant: str = VARIANT):
    """The InferenceRequest a worker builds for this text (worker.tasks.build_request)."""
    from worker.store import Job
    from worker.tasks import build_request

    job = Job(task_id=0, experiment_id=0, variant_id=0, text=text, label="", attempt=1,
              model=model, engine="embedded", variant=variant, params=dict(params),
              spec={"prompt": prompt, "dataset": {"labels": LABELS},
                    "few_shot_examples": [list(e) for e in examples]})
    return build_request(job)


@functools.lru_cache(maxsize=4)
def engine(threads: int):
    """One embedded engine per thread count, shared by the benchmarks of one process."""
    from shared.config import Settings
    from worker.engines.embedded import EmbeddedEngine

    return EmbeddedEngine(threads=threads, cache_dir=Settings.from_env().cache_dir)


def loaded(threads: int, model: str = MODEL, variant: str = VARIANT):
    e = engine(threads)
    e.load(model, variant)
    return e


@functools.lru_cache(maxsize=1)
def meter(**options):
    """The worker's meter (one long-lived CodeCarbon tracker); starting it costs seconds."""
    from worker.energy import EnergyMeter

    return EnergyMeter(**options)


def macro_f1(truth: list[str], predicted: list[str | None]) -> float:
    """Macro-F1 over the labels; an answer naming no label counts as wrong."""
    return float(f1_score(truth, [p or "none" for p in predicted], labels=LABELS,
                          average="macro", zero_division=0))


def interleaved(n: int, arms: tuple[str, str]):
    """(index, arm) pairs, a b b a a b …: each arm goes first as often as the other."""
    for i in range(n):
        first, second = arms if i % 2 == 0 else arms[::-1]
        yield i, first
        yield i, second
