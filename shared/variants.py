"""Variant names: quantizations, their nominal bits per weight, and how Ollama spells them.

Pure vocabulary (stdlib only). The nominal bits of a block quantization are
its block's bytes x 8 / weights per block (ggml's type table): q4_0 stores 32
weights in 18 bytes, 4.5 bits each. A real file's effective bits per weight
are higher, since some tensors stay at higher precision (see
`worker.quantize.describe_gguf`).
"""
from __future__ import annotations

import re

# ggml type -> nominal bits per weight of its main matrices.
NOMINAL_BITS: dict[str, float] = {
    "f32": 32.0, "f16": 16.0, "bf16": 16.0,
    "q8_0": 8.5, "q6_k": 6.5625, "q5_1": 6.0, "q5_0": 5.5, "q5_k": 5.5,
    "q4_1": 5.0, "q4_0": 4.5, "q4_k": 4.5, "q3_k": 3.4375, "q2_k": 2.625,
}

# What `greenctl models quantize` (worker.quantize, with the gguf package) can make, most bits first.
MAKEABLE: tuple[str, ...] = ("f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")

# A tag that already ends in a quantization: `1b-instruct-q4_K_M`, `8b-fp16`, `q8_0`.
_QUANT_SUFFIX = re.compile(r"(?:^|-)(i?q\d(?:_[0-9a-z]+)*|fp16|fp32|bf16|f16|f32)$", re.IGNORECASE)


class VariantError(ValueError):
    """A variant that cannot be had: the message names the fix."""


def base_type(variant: str) -> str:
    """The ggml type behind a variant name: q4_k_m -> q4_k, Q8_0 -> q8_0, fp16 -> f16."""
    low = variant.strip().lower()
    low = {"fp16": "f16", "fp32": "f32"}.get(low, low)
    return re.sub(r"(_k)_[sml]$", r"\1", low)


def nominal_bits(variant: str) -> float | None:
    """Bits per weight of a variant's main matrix type (q4_k_m counts as q4_k); None if unknown."""
    return NOMINAL_BITS.get(base_type(variant))


def ollama_quantization(variant: str) -> str:
    """A variant as Ollama's library spells it in tags: q4_k_m -> q4_K_M, f16 -> fp16."""
    low = variant.strip().lower()
    if low in ("f16", "f32"):
        return "fp" + low[1:]
    return re.sub(r"_k(_[a-z]+)?$", lambda m: "_K" + (m.group(1) or "").upper(), low)


def ollama_tag(model: str, variant: str) -> str:
    """The Ollama tag for `model` at `variant`.

    - variant "" or "default": `model` as given.
    - `model`'s tag already ends in a quantization: `model` as given, if the
      variant names the same one (else an error: the two disagree).
    - otherwise the variant is appended to the tag with "-":
      ("llama3.2:1b-instruct", "q4_K_M") -> "llama3.2:1b-instruct-q4_K_M".
    A model without a tag (`llama3.2`) cannot take a variant: Ollama's library
    tags put the size before the quantization, so there is nothing sensible to build.
    """
    variant = (variant or "").strip()
    if variant.lower() in ("", "default"):
        return model
    name, _, tag = model.partition(":")
    wanted = ollama_quantization(variant)
    present = _QUANT_SUFFIX.search(tag)
    if present:
        if ollama_quantization(present.group(1)) != wanted:
            raise VariantError(f"model tag {model!r} already names quantization {present.group(1)!r}, "
                               f"not variant {variant!r}: drop the quantization from the tag or use "
                               f"variant 'default'")
        return model
    if not tag:
        raise VariantError(f"model {model!r} has no tag to add variant {variant!r} to: name the tag "
                           f"without its quantization (e.g. '{name}:1b-instruct', giving "
                           f"'{name}:1b-instruct-{wanted}') or use variant 'default'")
    return f"{model}-{wanted}"
