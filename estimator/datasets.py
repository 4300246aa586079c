"""Reading the bundled benchmark data (the only I/O in the fitting path).

Files live in estimator/data (see ATTRIBUTION.md there):
- HELM idealized runtimes on A100 (Megatron-LM, fp16, batch 1): the training set.
- GPUs per HELM model, parsed from the HELM-efficiency A100 profiling logs.
- LLM-Perf leaderboard, 1xA100-80GB, unquantized PyTorch rows: the validation set.
- model_cards.csv: parameter counts (and depth) of every model named above.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd

DATA = Path(__file__).parent / "data"
HELM_RUNTIMES = DATA / "helm_idealized_runtimes_a100.json"
HELM_GPUS = DATA / "helm_a100_gpus_per_model.csv"
LLM_PERF = DATA / "llm_perf_a100_unquantized.csv"
MODEL_CARDS = DATA / "model_cards.csv"

# MT-NLG 530B was profiled on 8 GPUs holding a third of its layers and its runtimes
# were multiplied by 3 (HELM-efficiency notebook); the whole model spans 3 x 8 GPUs.
_WHOLE_MODEL_GPUS = {"microsoft/TNLGv2_530B": 24}

HELM_BITS = 16  # Megatron-LM ran every HELM model in fp16.
_DTYPE_BITS = {"float16": 16, "bfloat16": 16, "float32": 32}


@functools.lru_cache(maxsize=1)
def model_cards() -> pd.DataFrame:
    """model -> params (count), layers, moe (0/1), used_by, aliases (space-separated Ollama tags)."""
    return pd.read_csv(MODEL_CARDS, keep_default_na=False, na_values={"params": [""], "layers": [""]}
                       ).set_index("model")


def _ollama_name(name: str) -> str:
    """An Ollama model name as its library resolves it: lower case, `:latest` when untagged."""
    low = name.strip().lower()
    return low if ":" in low else f"{low}:latest"


def card_name(name: str) -> str | None:
    """The model_cards row a model name refers to, or None.

    Exact names first (facebook/opt-6.7b, smollm2:135m-instruct); then Ollama tags:
    an alias matches the whole tag or its prefix up to a "-" (llama3.2:1b matches
    llama3.2:1b-instruct-q4_K_M), the longest alias winning; a bare name means
    its :latest tag (mistral -> mistral:latest), as Ollama resolves it."""
    cards = model_cards()
    if name in cards.index:
        return name
    wanted = _ollama_name(name)
    best, best_len = None, 0
    for model, aliases in cards["aliases"].items():
        for alias in str(aliases).split():
            alias = alias.lower()
            if (wanted == alias or wanted.startswith(alias + "-")) and len(alias) > best_len:
                best, best_len = model, len(alias)
    return best


def helm_models() -> pd.DataFrame:
    """One row per HELM model: profile (Megatron run it shares), params, layers, bits,
    devices, per_token_s (beta, s/token)."""
    runtimes = json.loads(HELM_RUNTIMES.read_text())
    gpus = pd.read_csv(HELM_GPUS).set_index("helm_model")
    cards = model_cards()
    rows = [
        {
            "model": name,
            "profile": gpus.loc[name, "megatron_profile"],
            "params": float(cards.loc[name, "params"]),
            "layers": int(cards.loc[name, "layers"]),
            "bits": HELM_BITS,
            "devices": int(_WHOLE_MODEL_GPUS.get(name, gpus.loc[name, "a100_gpus_world_size"])),
            "per_token_s": float(entry["runtime_per_output_token"]),
        }
        for name, entry in runtimes.items()
    ]
    return pd.DataFrame(rows)


def helm_prompt_encoding() -> pd.DataFrame:
    """One row per (HELM model, prompt length): the helm_models columns plus prompt_tokens
    and prompt_encoding_s (s to encode the prompt and emit the first token)."""
    runtimes = json.loads(HELM_RUNTIMES.read_text())
    models = helm_models().set_index("model")
    rows = [
        {"model": name, **models.loc[name].drop("per_token_s").to_dict(),
         "prompt_tokens": int(p), "prompt_encoding_s": float(seconds)}
        for name, entry in runtimes.items()
        for p, seconds in entry["runtime_for_prompt_tokens"].items()
    ]
    return pd.DataFrame(rows)


def llm_perf_validation() -> pd.DataFrame:
    """LLM-Perf 1xA100 unquantized rows with the ground truth of the R-ICE protocol.

    e2e_s = prefill latency + decode latency (optimum-benchmark defines decode as
    generate minus prefill). energy_kwh = prompt tokens / prefill tokens-per-kWh +
    (new tokens - 1) / decode tokens-per-kWh, i.e. energy from the leaderboard's
    tokens/kWh as the paper does; it equals the metered prefill + decode energy
    (GPU via NVML, CPU and RAM as CodeCarbon estimates them).
    """
    df = pd.read_csv(LLM_PERF)
    cards = model_cards()
    unknown = sorted(set(df["model"]) - set(cards.index))
    if unknown:
        raise ValueError(f"model_cards.csv lacks parameter counts for {unknown}")
    df["params"] = df["model"].map(cards["params"])
    df["layers"] = df["model"].map(cards["layers"])
    df["moe"] = df["model"].map(cards["moe"]).astype(bool)
    df["bits"] = df["torch_dtype"].map(_DTYPE_BITS)
    df["output_tokens"] = df["new_tokens"]
    df["e2e_s"] = df["prefill_latency_s"] + df["decode_latency_s"]
    df["energy_kwh"] = (df["prompt_tokens"] / df["prefill_tokens_per_kwh"]
                        + (df["new_tokens"] - 1) / df["decode_tokens_per_kwh"])
    return df
