"""Golden vectors for OCP MX v1.0 conversion: schema, hex codec and loader.

A golden file (``golden/<mx format>.json``, schema ``mx-spec-golden`` version 2, documented in
``golden/README.md``, JSON Schema ``golden/schema/golden.schema.json``) holds, for one MX format,
its element parameters, the exhaustive element decode table and a list of *cases*.  A case is one
call ``quantize(x, fmt, block_size=, axis=, scale_mode=, rounding=)``: its input ``x`` as exact
bit patterns and the expected E8M0 scale codes, element codes, packed bytes (``mx_spec.pack``)
and decoded values, plus the outputs under the declared policies it depends on.

Every array is stored as ONE lowercase hex string: the concatenation of the big-endian bit
patterns of its items in C order, each item a fixed number of hex digits (2 for uint8 codes,
4 for float16/bfloat16, 8 for float32, 16 for float64).  Fixed-width hex keeps the files small
and is trivially parsed from any language (split every N digits, read as an unsigned integer).

The generator is :mod:`mx_spec.conformance.golden_gen`.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from mx_spec.elements import ROUNDINGS
from mx_spec.formats import MX_FORMATS, get_format
from mx_spec.scale import SCALE_MODES

SCHEMA_NAME = "mx-spec-golden"
SCHEMA_VERSION = 2
#: The OCP rules (floor scale, ties to even): the first entry of each list.
SPEC_MODE: tuple[str, str] = (SCALE_MODES[0], ROUNDINGS[0])
#: Every (scale mode, rounding) pair; a golden file holds its cases mode by mode in this order.
ALL_MODES: tuple[tuple[str, str], ...] = tuple((s, r) for s in SCALE_MODES for r in ROUNDINGS)

#: Input dtypes a case may use, with the unsigned type that holds their bit pattern.
INPUT_DTYPES: dict[str, tuple[np.dtype, np.dtype]] = {
    "float32": (np.dtype(np.float32), np.dtype(">u4")),
    "float64": (np.dtype(np.float64), np.dtype(">u8")),
    "float16": (np.dtype(np.float16), np.dtype(">u2")),
    "bfloat16": (np.dtype(ml_dtypes.bfloat16), np.dtype(">u2")),
}

#: The output fields of a case (golden/README.md, "Semantics"): E8M0 scale codes, element codes,
#: packed bytes and the float32 / float64 decodes.
OUTPUT_FIELDS: tuple[str, ...] = ("scales", "elements", "packed", "decoded_f32", "decoded_f64")
#: The code fields: a verification is complete only when every compared case checked them.
CODE_FIELDS: tuple[str, ...] = ("scales", "elements")
#: The decode fields, with the float dtype of their items.
FLOAT_FIELDS: dict[str, str] = {"decoded_f32": "float32", "decoded_f64": "float64"}

MANIFEST_NAME = "MANIFEST.sha256"


# --------------------------------------------------------------------------- hex codec
def array_to_hex(values: np.ndarray, dtype: str | None = None) -> str:
    """Concatenated big-endian hex bit patterns of ``values`` in C order.

    ``dtype`` names a float input dtype (see ``INPUT_DTYPES``); ``None`` means uint8 codes.
    """
    if dtype is None:
        return np.ascontiguousarray(values, dtype=np.uint8).tobytes().hex()
    float_dtype, bits_dtype = INPUT_DTYPES[dtype]
    native_bits = np.dtype(bits_dtype.newbyteorder("="))
    arr = np.ascontiguousarray(values, dtype=float_dtype)
    return arr.view(native_bits).astype(bits_dtype).tobytes().hex()


def hex_to_array(text: str, dtype: str | None = None, shape: Sequence[int] | None = None) -> np.ndarray:
    """Inverse of :func:`array_to_hex`: parse fixed-width hex into uint8 codes or floats."""
    raw = bytes.fromhex(text)
    if dtype is None:
        out = np.frombuffer(raw, dtype=np.uint8).copy()
    else:
        if dtype not in INPUT_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; valid: {sorted(INPUT_DTYPES)}")
        float_dtype, bits_dtype = INPUT_DTYPES[dtype]
        bits = np.frombuffer(raw, dtype=bits_dtype).astype(bits_dtype.newbyteorder("="))
        out = bits.view(float_dtype).copy()
    return out.reshape(tuple(shape)) if shape is not None else out


def dtype_name(x: np.ndarray) -> str:
    """The ``INPUT_DTYPES`` key of ``x``'s dtype."""
    for name, (float_dtype, _) in INPUT_DTYPES.items():
        if x.dtype == float_dtype:
            return name
    raise ValueError(f"unsupported input dtype {x.dtype}; valid: {sorted(INPUT_DTYPES)}")


# --------------------------------------------------------------------------- case model
@dataclass(frozen=True)
class GoldenCase:
    """One case read back from a golden file (all arrays decoded)."""

    id: str
    fmt: str
    group: str
    note: str
    scale_mode: str
    rounding: str
    block_size: int
    axis: int
    x: np.ndarray
    scales: np.ndarray
    elements: np.ndarray
    packed: bytes
    decoded_f32: np.ndarray
    decoded_f64: np.ndarray
    policies: tuple[str, ...] = ()
    policy_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def input_dtype(self) -> str:
        return dtype_name(self.x)


@dataclass(frozen=True)
class GoldenFile:
    """A parsed golden file: its format, decode table and cases."""

    fmt: str
    element: str
    decode_codes: np.ndarray
    decode_f32: np.ndarray
    decode_f64: np.ndarray
    cases: tuple[GoldenCase, ...]


# --------------------------------------------------------------------------- loading
def default_golden_dir() -> Path:
    """``$MX_SPEC_GOLDEN_DIR`` if set, else ``golden/`` beside the ``mx_spec`` package."""
    env = os.environ.get("MX_SPEC_GOLDEN_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "golden"


class DuplicateKeyError(ValueError):
    """A JSON object names one key twice (``json`` would silently keep the last)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a key given twice in one JSON object."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            ids = [v for k, v in pairs if k == "id" and isinstance(v, str)]
            where = f"the record of case {ids[0]!r}" if ids else "one JSON object"
            raise DuplicateKeyError(f"key {key!r} appears twice in {where}; give each key once")
        out[key] = value
    return out


def read_json_document(path: str | os.PathLike, *, what: str, fix: str) -> Any:
    """Parse a ``.json`` or ``.json.gz`` file; any unreadable content -> ValueError naming the file.

    ``what`` says what the file should be ("golden file", "results file"), ``fix`` how to get a
    good one; both go into the message so a truncated or empty file is never a bare parser error.
    A key given twice in one object is an error (a reader must not guess which value was meant).
    """
    p = Path(path)
    try:
        if p.name.endswith(".gz"):
            with gzip.open(p, "rt", encoding="utf-8") as fh:
                return json.load(fh, object_pairs_hook=_unique_keys)
        with open(p, encoding="utf-8") as fh:
            return json.load(fh, object_pairs_hook=_unique_keys)
    except DuplicateKeyError as exc:
        raise ValueError(f"{p}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        detail = "it is empty" if p.stat().st_size == 0 else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{p}: not a readable {what} ({detail}); {fix}") from None


def _parse_outputs(rec: dict[str, Any], shape: Sequence[int], base_f64: np.ndarray | None) -> dict[str, Any]:
    """Decoded output fields of a case record or of one of its policy variants."""
    out: dict[str, Any] = {}
    if "scales" in rec:
        out["scales"] = hex_to_array(rec["scales"])
    if "elements" in rec:
        out["elements"] = hex_to_array(rec["elements"]).reshape(shape)
    if "packed" in rec:
        out["packed"] = bytes.fromhex(rec["packed"])
    if "decoded_f32" in rec:
        out["decoded_f32"] = hex_to_array(rec["decoded_f32"], "float32", shape)
    if "decoded_f64" in rec:
        out["decoded_f64"] = hex_to_array(rec["decoded_f64"], "float64", shape)
    elif "decoded_f32" in out:  # absent = the float32 decode widened (exact; see encode_output_fields)
        out["decoded_f64"] = out["decoded_f32"].astype(np.float64)
    elif base_f64 is not None:
        out["decoded_f64"] = base_f64
    return out


def _parse_case(fmt_name: str, rec: dict[str, Any]) -> GoldenCase:
    shape = rec["shape"]
    x = hex_to_array(rec["input"], rec["input_dtype"], shape)
    base = _parse_outputs(rec, shape, None)
    variants = {key: _parse_outputs(v, shape, base["decoded_f64"]) for key, v in rec.get("policy_outputs", {}).items()}
    return GoldenCase(
        id=rec["id"], fmt=fmt_name, group=rec["group"], note=rec.get("note", ""),
        scale_mode=rec["scale_mode"], rounding=rec["rounding"], block_size=int(rec["block_size"]),
        axis=int(rec["axis"]), x=x, scales=base["scales"], elements=base["elements"], packed=base["packed"],
        decoded_f32=base["decoded_f32"], decoded_f64=base["decoded_f64"],
        policies=tuple(rec.get("policies", ())), policy_outputs=variants,
    )


def load_golden_file(path: str | os.PathLike) -> GoldenFile:
    """Parse one golden file (``.json`` or ``.json.gz``); a wrong schema or content -> ValueError."""
    fix = "regenerate it with `mx-spec golden --out DIR` or restore it from the repository"
    doc = read_json_document(path, what=f"{SCHEMA_NAME} golden file", fix=fix)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME or doc.get("version") != SCHEMA_VERSION:
        got = (doc.get("schema"), doc.get("version")) if isinstance(doc, dict) else (type(doc).__name__, None)
        raise ValueError(f"{path}: not a {SCHEMA_NAME} v{SCHEMA_VERSION} file "
                         f"(schema={got[0]!r}, version={got[1]!r}); {fix}")
    fmt_name = doc["format"]
    table = doc["decode_table"]
    try:
        cases = tuple(_parse_case(fmt_name, rec) for rec in doc["cases"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed case ({type(exc).__name__}: {exc}); {fix}") from None
    return GoldenFile(
        fmt=fmt_name, element=doc["element"],
        decode_codes=np.array([int(r["code"], 16) for r in table], dtype=np.uint8),
        decode_f32=hex_to_array("".join(r["f32"] for r in table), "float32"),
        decode_f64=hex_to_array("".join(r["f64"] for r in table), "float64"),
        cases=cases,
    )


def golden_path(root: str | os.PathLike, fmt_name: str) -> Path:
    """``<root>/<format>.json``, or its compressed copy ``<format>.json.gz`` when only that exists."""
    plain = Path(root) / f"{fmt_name}.json"
    packed = plain.with_name(plain.name + ".gz")
    return packed if not plain.is_file() and packed.is_file() else plain


def load_golden(golden_dir: str | os.PathLike | None = None,
                formats: Iterable[str] | None = None) -> dict[str, GoldenFile]:
    """Load ``<golden_dir>/<format>.json`` (or ``.json.gz``) for the given formats (default: all six)."""
    root = Path(golden_dir) if golden_dir is not None else default_golden_dir()
    names = list(formats) if formats is not None else list(MX_FORMATS)
    out = {}
    for name in names:
        get_format(name)
        path = golden_path(root, name)
        if not path.is_file():
            raise FileNotFoundError(f"golden file {path} not found; pass golden_dir=DIR, "
                                    "set $MX_SPEC_GOLDEN_DIR, or generate it with `mx-spec golden --out DIR`")
        out[name] = load_golden_file(path)
    return out
