"""P3 prefix reuse: prompt tokens llama.cpp really evaluates per sample, against
the tokens the sample itself brings.

The label-only prompt puts instructions and few-shot turns first, so with the
prompt cache only the sample (and the few tokens after it) is evaluated. A
sample's own tokens = prompt tokens with its text - prompt tokens with an empty
text. Gemma 3 uses sliding-window attention: llama.cpp cannot keep a reusable
cache for a prefix that slid out of the window, so reuse may be lost there.
"""
from __future__ import annotations

from bench import workload
from bench.report import LoadWatch, Report, cores, machine, mean

# 20-shot makes the shared prefix (~650-900 tokens) longer than Gemma 3's 512-token window.
SIZES = {"full": dict(n=20, shots=(0, 3, 6, 20), gemma=True),
         "quick": dict(n=6, shots=(3, 20), gemma=True),
         "smoke": dict(n=2, shots=(3,), gemma=False)}


def sliding_window(model: str, variant: str) -> int | None:
    """The model's attention window in tokens (GGUF header), None for full attention."""
    from shared.config import Settings
    from worker import model_files
    from worker.quantize import _read_header

    kv, _ = _read_header(model_files.resolve(Settings.from_env().cache_dir, model, variant))
    return next((int(v) for k, v in kv.items() if k.endswith(".attention.sliding_window")), None)


def measure(threads: int, model: str, variant: str, shots: int, n: int) -> dict:
    chosen, examples = workload.samples(n, shots)
    engine = workload.loaded(threads, model, variant)
    prompt = workload.DEFAULT_PROMPT | {"few_shot": shots}

    def gen(text: str):
        return engine.generate(workload.request(text, prompt, workload.DEFAULT_PARAMS, examples, model, variant))

    template = gen("")          # also leaves the shared prefix in the cache, as after a first task
    rows = []
    for s in chosen:
        g = gen(s.text)
        own = max(1, g.prompt_tokens - template.prompt_tokens)
        rows.append((own, g.prompt_tokens, g.prompt_tokens_uncached, g.prompt_s))
    own = mean(r[0] for r in rows)
    total = mean(r[1] for r in rows)
    uncached = mean(r[2] for r in rows)
    return {"model": f"{model} {variant}", "few_shot": shots, "own_tokens": own, "prompt_tokens": total,
            "uncached_tokens": uncached, "uncached_over_own": mean(r[2] / r[0] for r in rows),
            "without_reuse_over_own": mean(r[1] / r[0] for r in rows),
            "reused_share": 1 - uncached / total, "prefill_ms": 1e3 * mean(r[3] for r in rows),
            "cache_reused": uncached < 0.9 * total, "sliding_window": sliding_window(model, variant)}


def run(size: str = "full") -> Report:
    cfg, threads, watch = SIZES[size], cores(), LoadWatch()
    models = [(workload.MODEL, workload.VARIANT)] + ([workload.GEMMA] if cfg["gemma"] else [])
    rows = [measure(threads, m, v, k, cfg["n"]) for m, v in models for k in cfg["shots"]]
    figures, notes = {}, []
    for r in rows:
        key = f"{r['model'].split(':')[0]} {r['few_shot']}-shot"
        figures[f"{key}: uncached / own tokens"] = r["uncached_over_own"]
        figures[f"{key}: all prompt / own tokens (no reuse)"] = r["without_reuse_over_own"]
        figures[f"{key}: prompt tokens not evaluated (%)"] = 100 * r["reused_share"]
        window = r["sliding_window"]
        if window is None:
            continue
        beyond = r["prompt_tokens"] > window
        figures[f"{key}: prompt longer than the {window}-token window"] = beyond
        if not r["cache_reused"]:
            notes.append(f"{r['model']} {r['few_shot']}-shot: the prompt cache was NOT reused "
                         f"({r['uncached_tokens']:.0f} of {r['prompt_tokens']:.0f} tokens evaluated per sample): "
                         "sliding-window attention keeps no reusable cache for the shared prefix")
        elif beyond:
            notes.append(f"{r['model']} {r['few_shot']}-shot: sliding-window attention ({window} tokens) and a "
                         f"{r['prompt_tokens']:.0f}-token prompt, yet the cache WAS reused "
                         f"({r['uncached_tokens']:.0f} tokens evaluated): llama.cpp here keeps context "
                         "checkpoints for SWA models (swa_full off, n_ctx_checkpoints 32) and restores one "
                         "instead of re-evaluating the prefix")
    notes.append("uncached tokens include the few tokens after the text (\"\\nSentiment:\" and the "
                 "chat template's assistant header): they follow the sample, so no cache can hold them")
    return Report(
        bench="p3-prefix", title="prefix reuse: uncached prompt tokens per sample / the sample's own tokens",
        size=size,
        inputs={"models": ", ".join(f"{m} {v}" for m, v in models), "N": cfg["n"], "threads": threads,
                "few_shot": list(cfg["shots"]), "prompt": "label-only, label-constrained"},
        figures=figures,
        details={"rows": rows},
        notes=notes,
        machine=machine(watch),
    )
