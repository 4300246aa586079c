"""Make quantization variants of a GGUF file with the `gguf` package, and describe any GGUF.

Tensor types follow llama.cpp's `llama-quantize` for the legacy block types:
- 1-D tensors (norms, biases) and any tensor stored as F32 (or integers) stay as they are;
- the other weight matrices are dequantized to float32 and re-encoded as the variant
  (copied unchanged when they already have the variant's type);
- the output projection (or the token embedding when it doubles as output) gets
  Q8_0 under a 4/5-bit variant: llama.cpp gives it Q6_K when its rows are a multiple
  of 256 and Q8_0 otherwise, and gguf has no Q6_K quantizer;
- rows whose length is not a multiple of the block size fall back to F16, as in llama.cpp.

A variant with more bits than its source (f16 from Q4_1, say) carries only the
source's information: it measures the cost of that format's compute, not its accuracy.
"""
from __future__ import annotations

import hashlib
import math
import mmap
import os
import struct
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, Keys, LlamaFileType
from gguf.quants import dequantize, quantize

from shared.variants import nominal_bits

__all__ = ["VARIANTS", "QuantizeError", "GGUFDescription", "QuantizeReport", "describe_gguf",
           "quantize_file", "variant_of_file_type", "nominal_bits"]

Q = GGMLQuantizationType

# variant name -> (type of the weight matrices, file type recorded in general.file_type), for every
# name in shared.variants.MAKEABLE (tests/test_vocabulary.py checks that the two agree).
VARIANTS: dict[str, tuple[GGMLQuantizationType, LlamaFileType]] = {
    "f16": (Q.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (Q.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q5_1": (Q.Q5_1, LlamaFileType.MOSTLY_Q5_1),
    "q5_0": (Q.Q5_0, LlamaFileType.MOSTLY_Q5_0),
    "q4_1": (Q.Q4_1, LlamaFileType.MOSTLY_Q4_1),
    "q4_0": (Q.Q4_0, LlamaFileType.MOSTLY_Q4_0),
}

# Stored at full precision (or as integers) by the converter on purpose: never re-encoded.
_KEPT_AS_IS = {Q.F32, Q.F64, Q.I8, Q.I16, Q.I32, Q.I64}

# Rows converted per step: bounds the float32 intermediate (Gemma's 262k-row embedding
# would otherwise need ~670 MB at once).
_ROWS_PER_CHUNK = 8192

class QuantizeError(ValueError):
    pass


@dataclass(frozen=True)
class GGUFDescription:
    """What a GGUF file holds, read from its header and tensor table only."""
    path: Path
    variant: str                  # from general.file_type: "q4_1", "f16", "q4_k_m", ...
    architecture: str
    parameter_count: int          # elements over all tensors
    tensor_bytes: int
    bits_per_weight: float        # tensor bytes * 8 / parameter count
    file_bytes: int
    context_length: int | None
    tensor_types: dict[str, int]  # ggml type name -> number of tensors

    @cached_property
    def sha256(self) -> str:
        """sha256 of the whole file: computed on first use, since it reads every byte."""
        return _sha256(self.path)


@dataclass(frozen=True)
class QuantizeReport:
    path: Path
    variant: str
    source_variant: str
    bits_per_weight: float
    file_bytes: int
    parameter_count: int
    sha256: str
    seconds: float
    tensor_types: dict[str, int] = field(default_factory=dict)


def variant_of_file_type(file_type: int | None) -> str:
    """'q4_k_m' for LlamaFileType.MOSTLY_Q4_K_M; 'unknown' when absent or unrecognised."""
    try:
        name = LlamaFileType(file_type).name
    except (TypeError, ValueError):
        return "unknown"
    return "f32" if name == "ALL_F32" else name.removeprefix("MOSTLY_").lower()


def _field(reader: GGUFReader, key: str):
    f = reader.get_field(key)
    return f.contents() if f is not None else None


_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


def _read_header(path: Path) -> tuple[dict[str, object], list[tuple[str, tuple[int, ...], GGMLQuantizationType]]]:
    """Scalar and string KVs (arrays skipped) and (name, ggml dims, type) of every tensor.

    GGUFReader builds numpy views of every token and merge (~1.5 s for a 49k-token
    vocabulary); this walks the same header with struct and skips arrays, in milliseconds.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        magic, version = struct.unpack_from("<II", buf, 0)
        if magic != GGUF_MAGIC:
            raise QuantizeError(f"{path} is not a GGUF file")
        order = "<" if version < 0x10000 else ">"   # a big-endian file reads a byte-swapped version
        n_tensors, n_kv = struct.unpack_from(order + "QQ", buf, 8)
        off = 24

        def read(fmt: str):
            nonlocal off
            values = struct.unpack_from(order + fmt, buf, off)
            off += struct.calcsize(order + fmt)
            return values[0] if len(values) == 1 else values

        def read_str() -> bytes:
            nonlocal off
            n = read("Q")
            off += n
            return bytes(buf[off - n:off])

        def skip(vtype: int) -> None:
            nonlocal off
            if vtype == GGUFValueType.STRING:
                n = read("Q")   # read before `off +=` loads off, or its advance is lost
                off += n
            elif vtype == GGUFValueType.ARRAY:
                item_type, count = read("IQ")
                if item_type in (GGUFValueType.STRING, GGUFValueType.ARRAY):
                    for _ in range(count):
                        skip(item_type)
                else:
                    off += count * struct.calcsize(_SCALAR_FORMATS[GGUFValueType(item_type)])
            else:
                off += struct.calcsize(_SCALAR_FORMATS[GGUFValueType(vtype)])

        kv: dict[str, object] = {}
        for _ in range(n_kv):
            key = read_str().decode("utf-8")
            vtype = read("I")
            if vtype == GGUFValueType.STRING:
                kv[key] = read_str().decode("utf-8", errors="replace")
            elif vtype == GGUFValueType.ARRAY:
                skip(vtype)
            else:
                kv[key] = read(_SCALAR_FORMATS[GGUFValueType(vtype)])
        tensors = []
        for _ in range(n_tensors):
            name = read_str().decode("utf-8")
            n_dims = read("I")
            dims = tuple(read("Q") for _ in range(n_dims))
            qtype = GGMLQuantizationType(read("I"))
            read("Q")   # data offset
            tensors.append((name, dims, qtype))
    return kv, tensors


def describe_gguf(path: Path) -> GGUFDescription:
    """Variant, parameter count and bits per weight of any GGUF file, from its header alone."""
    path = Path(path)
    kv, tensors = _read_header(path)
    arch = str(kv.get(Keys.General.ARCHITECTURE, "unknown"))
    params = sum(math.prod(dims) for _, dims, _ in tensors)
    nbytes = sum(math.prod(dims) // GGML_QUANT_SIZES[t][0] * GGML_QUANT_SIZES[t][1] for _, dims, t in tensors)
    return GGUFDescription(
        path=path,
        variant=variant_of_file_type(kv.get(Keys.General.FILE_TYPE)),
        architecture=arch,
        parameter_count=params,
        tensor_bytes=nbytes,
        bits_per_weight=nbytes * 8 / params if params else 0.0,
        file_bytes=path.stat().st_size,
        context_length=kv.get(Keys.LLM.CONTEXT_LENGTH.format(arch=arch)),
        tensor_types=dict(Counter(t.name for _, _, t in tensors)),
    )


def _target_type(name: str, shape: tuple[int, ...], source: GGMLQuantizationType,
                 matrix_type: GGMLQuantizationType, output_name: str) -> GGMLQuantizationType:
    if len(shape) < 2 or source in _KEPT_AS_IS:
        return source
    if name == output_name and matrix_type not in (Q.F16, Q.Q8_0):
        matrix_type = Q.Q8_0
    if shape[-1] % GGML_QUANT_SIZES[matrix_type][0] != 0:
        return Q.F16
    return matrix_type


def _stored_shape(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> tuple[int, ...]:
    """Shape of the array holding a tensor: elements for F16/F32, bytes for block types."""
    if qtype in (Q.F16, Q.F32):
        return shape
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return (*shape[:-1], shape[-1] // block_size * type_size)


def _convert(data: np.ndarray, shape: tuple[int, ...], source: GGMLQuantizationType,
             target: GGMLQuantizationType) -> np.ndarray:
    if source == target:
        return data
    out_shape = _stored_shape(shape, target)
    rows = data.reshape(-1, data.shape[-1])
    out = np.empty((rows.shape[0], out_shape[-1]), dtype=np.float16 if target == Q.F16 else np.uint8)
    for start in range(0, rows.shape[0], _ROWS_PER_CHUNK):
        chunk = dequantize(rows[start:start + _ROWS_PER_CHUNK], source)
        out[start:start + _ROWS_PER_CHUNK] = quantize(chunk, target)
    return out.reshape(out_shape)


def _copy_metadata(reader: GGUFReader, writer: GGUFWriter, file_type: LlamaFileType) -> None:
    for f in reader.fields.values():
        # GGUF.* are header values, not keys; the writer adds general.architecture itself.
        if f.name.startswith("GGUF.") or f.name == Keys.General.ARCHITECTURE:
            continue
        vtype = f.types[0]
        sub_type = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        if f.name == Keys.General.FILE_TYPE:
            writer.add_key_value(f.name, int(file_type), GGUFValueType.UINT32)
        elif GGUFValueType.STRING in (vtype, sub_type):
            # Raw bytes, not decoded text: tokens need not be valid UTF-8 and must survive as-is.
            raw = [f.parts[i].tobytes() for i in f.data]
            writer.add_key_value(f.name, raw if sub_type else raw[0], vtype, sub_type=sub_type)
        else:
            writer.add_key_value(f.name, f.contents(), vtype, sub_type=sub_type)
    if reader.get_field(Keys.General.FILE_TYPE) is None:
        writer.add_key_value(Keys.General.FILE_TYPE, int(file_type), GGUFValueType.UINT32)


def _write_variant(reader: GGUFReader, path: Path, matrix_type: GGMLQuantizationType,
                   file_type: LlamaFileType) -> None:
    names = {t.name for t in reader.tensors}
    # Tied embeddings: without output.weight the token embedding is also the output projection.
    output_name = "output.weight" if "output.weight" in names else "token_embd.weight"
    writer = GGUFWriter(path, arch=_field(reader, Keys.General.ARCHITECTURE), endianess=reader.endianess)
    alignment = _field(reader, Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment
    _copy_metadata(reader, writer, file_type)

    # Tensor infos first, data after: one converted tensor in memory at a time.
    plan = []
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))   # numpy order: row length last
        target = _target_type(t.name, shape, t.tensor_type, matrix_type, output_name)
        block_size, type_size = GGML_QUANT_SIZES[target]
        stored_dtype = {Q.F16: np.float16, Q.F32: np.float32}.get(target, np.uint8)
        writer.add_tensor_info(t.name, _stored_shape(shape, target), np.dtype(stored_dtype),
                               int(t.n_elements) // block_size * type_size, raw_dtype=target)
        plan.append((t, shape, target))

    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t, shape, target in plan:
            writer.write_tensor_data(_convert(t.data, shape, t.tensor_type, target),
                                     tensor_endianess=reader.endianess)
    finally:
        writer.close()


def quantize_file(src: Path, dst: Path, variant: str) -> QuantizeReport:
    """Write `variant` of the GGUF `src` to `dst` (atomically) and report what it is."""
    if variant not in VARIANTS:
        raise QuantizeError(f"variant {variant!r} is not supported: use one of {', '.join(VARIANTS)}")
    started = time.perf_counter()
    matrix_type, file_type = VARIANTS[variant]
    reader = GGUFReader(src, "r")
    source_variant = variant_of_file_type(_field(reader, Keys.General.FILE_TYPE))
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as dst, so os.replace is atomic: readers see the old file or the whole new one.
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_variant(reader, tmp, matrix_type, file_type)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except NotImplementedError as exc:  # a source tensor type gguf cannot dequantize
        raise QuantizeError(f"{src}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)

    out = describe_gguf(dst)
    return QuantizeReport(
        path=dst,
        variant=variant,
        source_variant=source_variant,
        bits_per_weight=out.bits_per_weight,
        file_bytes=out.file_bytes,
        parameter_count=out.parameter_count,
        sha256=_sha256(dst),
        seconds=time.perf_counter() - started,
        tensor_types=out.tensor_types,
    )


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
