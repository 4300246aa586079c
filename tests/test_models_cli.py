"""`greenctl models` through click's runner, against a cache dir of its own.

The source GGUF is pulled once into GREENCTL_CACHE_DIR (else the user cache dir) and
linked into a temporary cache, so the commands never download again and the user's
cache gets no test variants.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from greenctl.cli.models import models
from shared.config import Settings
from worker import model_files

MODEL = "smollm2:135m-instruct"


@pytest.fixture(scope="session")
def cli_cache(tmp_path_factory) -> Path:
    source = model_files.pull(Settings.from_env().cache_dir, MODEL)
    cache = tmp_path_factory.mktemp("cli-cache")
    linked = model_files.model_path(cache, MODEL, "q4_1")
    linked.parent.mkdir(parents=True)
    linked.symlink_to(source)
    return cache


def invoke(cache: Path, *args: str):
    # Wide columns so rich does not wrap the text the tests look for.
    return CliRunner().invoke(models, list(args), env={"GREENCTL_CACHE_DIR": str(cache), "COLUMNS": "250"})


def test_quantize_prints_a_report_per_variant(cli_cache):
    result = invoke(cli_cache, "quantize", MODEL, "--to", "q4_0", "--to", "q8_0", "--to", "q4_1")
    assert result.exit_code == 0, result.output
    for variant in ("q4_0", "q8_0"):
        path = model_files.model_path(cli_cache, MODEL, variant)
        assert path.exists()
        assert model_files.sha256_file(path)[:12] in result.output
    assert "8.51" in result.output and "134.5M" in result.output
    assert "source" in result.output            # q4_1 is the source: reported, not remade
    assert "not f16 accuracy" in result.output

    again = invoke(cli_cache, "quantize", MODEL, "--to", "q4_0")
    assert again.exit_code == 0 and "cached" in again.output


def test_list_shows_catalog_and_cached_variants(cli_cache):
    assert invoke(cli_cache, "quantize", MODEL, "--to", "q8_0").exit_code == 0
    result = invoke(cli_cache, "list")
    assert result.exit_code == 0, result.output
    for text in (MODEL, "gemma3:270m", "q4_k_m", "Apache-2.0", "Gemma Terms of Use", "no (base)",
                 "upcast from q4_1 *", "8.51", "5.74",
                 "f16 made from a 4-bit source measures the cost of f16 compute, not f16 accuracy"):
        assert text in result.output


def test_list_json(cli_cache):
    assert invoke(cli_cache, "quantize", MODEL, "--to", "q8_0").exit_code == 0
    result = invoke(cli_cache, "list", "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    smollm = next(m for m in listing["models"] if m["name"] == MODEL)
    assert smollm["source_quantization"] == "q4_1" and smollm["chat"] is True
    assert smollm["variants"][0] == "q4_1" and "f16" in smollm["variants"]
    cached = {v["variant"]: v for v in smollm["cached"]}
    assert cached["q4_1"]["origin"] == "source"
    assert cached["q4_1"]["bits_per_weight"] == pytest.approx(5.744, abs=1e-3)
    assert cached["q8_0"]["bits_per_weight"] > cached["q4_1"]["bits_per_weight"]
    assert "not q8_0 accuracy" in cached["q8_0"]["note"]


def test_pull_reports_the_verified_file(cli_cache):
    result = invoke(cli_cache, "pull", MODEL)
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and "q4_1.gguf" in result.output


@pytest.mark.parametrize("args, expected", [
    (("quantize", "llama9:1t", "--to", "q8_0"),
     "Error: NAME: model 'llama9:1t' is not in the embedded catalog: use one of smollm2:135m-instruct, gemma3:270m"),
    (("pull", "llama9:1t"), "Error: NAME: model 'llama9:1t' is not in the embedded catalog"),
    (("quantize", MODEL, "--to", "q3_k"),
     "Error: --to: variant 'q3_k' of smollm2:135m-instruct cannot be made by greenctl"),
])
def test_bad_names_give_one_line_errors(tmp_path, args, expected):
    result = invoke(tmp_path, *args)
    assert result.exit_code == 2          # bad input, as the README promises
    assert result.output.startswith(expected)
    assert result.output.count("\n") == 1
    assert not (tmp_path / "models").exists()   # refused before any download
