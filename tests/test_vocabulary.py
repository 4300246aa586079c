"""One source of truth: what the spec accepts is what the worker can run.

Oracles come from outside the vocabulary: the gguf package's own type table
(block sizes) and the quantizer's mapping, not `shared.variants` itself.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from scheduler.spec import SpecError, parse_spec
from tests.conftest import SYSTEM_REDIS, redis_db
from shared import catalog, variants

MODEL = "smollm2:135m-instruct"
DATA = Path(__file__).resolve().parents[1] / "greenctl" / "data" / "financial_sentiment.csv"


def demo_spec() -> dict:
    return {"name": "vocab", "dataset": {"path": str(DATA), "labels": ["positive", "negative", "neutral"],
                                         "sample": 6},
            "models": [{"name": MODEL, "engine": "embedded", "variants": ["q8_0"]}]}


def test_nominal_bits_agree_with_ggml_block_sizes():
    for name, bits in variants.NOMINAL_BITS.items():
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[name.upper()]]
        assert bits == size * 8 / block, name
    assert variants.nominal_bits("q4_k_m") == variants.nominal_bits("Q4_K_S") == 4.5


def test_what_the_quantizer_makes_is_what_the_vocabulary_names():
    from worker.quantize import VARIANTS

    assert tuple(VARIANTS) == variants.MAKEABLE


@pytest.mark.parametrize("variant", ["q4_k_m", "q6_k", "bf16", "q3", "f16", "q8_0", "q4_0", "q4_1"])
def test_the_spec_accepts_exactly_the_variants_the_worker_can_make(variant):
    from worker.quantize import VARIANTS

    can_make = variant in VARIANTS or variant == catalog.CATALOG[MODEL].source_quantization
    spec = demo_spec()
    spec["models"][0]["variants"] = [variant]
    spec["models"][0].pop("baseline", None)
    if can_make:
        parse_spec(spec)
    else:
        with pytest.raises(SpecError, match=f"'{variant}'.*use one of"):
            parse_spec(spec)


def test_q4_k_m_for_smollm2_is_rejected_at_submit_with_nothing_written(tmp_path, fresh_db_url):
    import sqlalchemy as sa
    import yaml

    spec = demo_spec()
    spec["models"][0]["variants"] = ["q8_0", "q4_k_m"]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {"GREENCTL_DATABASE_URL": fresh_db_url,
           "GREENCTL_BROKER_URL": f"{SYSTEM_REDIS}/{redis_db('vocabulary+worker_cli')}",
           "GREENCTL_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "greenctl", "submit", str(path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "q4_k_m" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    with sa.create_engine(fresh_db_url, poolclass=sa.pool.NullPool).connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM experiment")).scalar()
    assert count == 0


def test_the_vocabulary_layer_imports_only_the_standard_library():
    code = ("import sys; import shared.variants, shared.catalog, shared.prompts, shared.status; "
            "heavy = {'numpy', 'sqlalchemy', 'celery', 'gguf', 'pydantic', 'yaml'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
