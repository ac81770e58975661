"""Golden vector generator: the expected outputs of every case input and the golden files
(``mx-spec golden --out DIR``).

The inputs are :mod:`mx_spec.conformance.golden_inputs`'s (deterministic, one function per case group); the
schema, the hex codec and the loader live in :mod:`mx_spec.conformance.golden`.  JSON is written with a fixed
key order and separators, so ``mx-spec golden --out DIR`` rebuilds byte-identical files.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import mx_spec.conformance.golden_inputs as golden_inputs
from mx_spec.atomic import atomic_write_bytes, atomic_write_text
from mx_spec.elements import decode_elements
from mx_spec.formats import MX_FORMATS, get_element, get_format
from mx_spec.conformance.golden import ALL_MODES, MANIFEST_NAME, SCHEMA_NAME, SCHEMA_VERSION, array_to_hex, dtype_name
from mx_spec.conformance.golden_inputs import CaseInput
from mx_spec.policies import POLICY_CHOICES, outputs_of, policy_variants
from mx_spec.quantize import quantize

#: Bumped whenever an expected output or input of an existing case changes (see golden/CHANGELOG.md).
CONTENT_VERSION = 3
#: Version of this generator (changes when the files' bytes change for any reason).
GENERATOR_VERSION = "mx_spec.golden_gen 3"


# --------------------------------------------------------------------------- expected outputs
def encode_output_fields(out: dict[str, np.ndarray], float64_input: bool) -> dict[str, str]:
    """Schema fields (hex strings) of a case's outputs (any subset of the output fields).

    ``decoded_f64`` is written only where it adds information: float64 inputs, or a float32
    decode that is inexact (overflow to Inf, rounding in the float32 subnormal range); elsewhere
    it is the float32 decode widened, and readers derive it so.
    """
    fields: dict[str, str] = {}
    for name in ("scales", "elements", "packed"):
        if name in out:
            fields[name] = array_to_hex(np.asarray(out[name]).reshape(-1))
    if "decoded_f32" in out:
        fields["decoded_f32"] = array_to_hex(out["decoded_f32"], "float32")
    if "decoded_f64" in out:
        dec64 = np.asarray(out["decoded_f64"])
        widened = out.get("decoded_f32")
        same = widened is not None and np.array_equal(np.asarray(widened).astype(np.float64), dec64, equal_nan=True)
        if float64_input or not same:
            fields["decoded_f64"] = array_to_hex(dec64, "float64")
    return fields


def expected_fields(case: CaseInput, fmt_name: str, scale_mode: str, rounding: str) -> dict[str, Any]:
    """The expected outputs of one case, as schema fields (hex strings), with its policy variants."""
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs are deliberate
        mx = quantize(case.x, fmt_name, block_size=case.block_size, axis=case.axis,
                              scale_mode=scale_mode, rounding=rounding)
        depends, variants = policy_variants(case.x, fmt_name, block_size=case.block_size, axis=case.axis,
                                            scale_mode=scale_mode, rounding=rounding)
    float64_input = case.x.dtype == np.float64
    fields: dict[str, Any] = encode_output_fields(outputs_of(mx), float64_input)
    if depends:
        fields["policies"] = list(depends)
    if variants:
        fields["policy_outputs"] = {key: encode_output_fields(out, float64_input) for key, out in variants.items()}
    return fields


def build_case(case: CaseInput, fmt_name: str, scale_mode: str, rounding: str, index: int) -> dict[str, Any]:
    """A golden case record (ordered dict) for one input under one mode."""
    record: dict[str, Any] = {
        "id": f"{fmt_name}/{scale_mode}/{rounding}/{case.group}/{index:04d}",
        "group": case.group,
        "note": case.note,
        "scale_mode": scale_mode,
        "rounding": rounding,
        "block_size": int(case.block_size),
        "axis": int(case.axis),
        "shape": [int(s) for s in case.x.shape],
        "input_dtype": dtype_name(case.x),
        "input": array_to_hex(case.x, dtype_name(case.x)),
    }
    record.update(expected_fields(case, fmt_name, scale_mode, rounding))
    return record


def decode_table_records(elem_name: str) -> list[dict[str, str]]:
    """Every element code with its value as float32 and float64 bit patterns."""
    elem = get_element(elem_name)
    codes = np.arange(1 << elem.bits, dtype=np.uint8)
    values = np.asarray(decode_elements(codes, elem_name, dtype=np.float64), dtype=np.float64)
    return [{"code": f"{int(c):02x}", "f32": array_to_hex(np.float32(v), "float32"),
             "f64": array_to_hex(np.float64(v), "float64")} for c, v in zip(codes, values)]


def element_params(elem_name: str) -> dict[str, Any]:
    """The element facts an implementer needs, from the one format table (``mx_spec.formats``)."""
    elem = get_element(elem_name)
    return {"kind": elem.kind, "ebits": int(elem.ebits), "mbits": int(elem.mbits), "bias": int(elem.bias),
            "emax": int(elem.emax), "emin": int(elem.emin), "max_normal": float(elem.max_normal),
            "min_normal": float(elem.min_normal), "min_subnormal": float(elem.min_subnormal),
            "has_inf": bool(elem.has_inf), "has_nan": bool(elem.has_nan)}


def iter_cases(fmt_name: str, modes: Iterable[tuple[str, str]] = ALL_MODES) -> Iterator[dict[str, Any]]:
    """All case records of one format, mode by mode, numbered per (mode, group)."""
    edges = golden_inputs.edge_inputs(fmt_name)
    for scale_mode, rounding in modes:
        counters: dict[str, int] = {}
        for case in edges + golden_inputs.random_inputs(fmt_name, scale_mode, rounding):
            index = counters.get(case.group, 0)
            counters[case.group] = index + 1
            yield build_case(case, fmt_name, scale_mode, rounding, index)


def render_file(fmt_name: str, modes: Iterable[tuple[str, str]] = ALL_MODES) -> str:
    """The golden file text of one format: fixed key order, one case per line."""
    fmt = get_format(fmt_name)
    header: dict[str, Any] = {
        "schema": SCHEMA_NAME,
        "version": SCHEMA_VERSION,
        "content_version": CONTENT_VERSION,
        "generator_version": GENERATOR_VERSION,
        "format": fmt_name,
        "element": fmt.element.name,
        "element_bits": int(fmt.element.bits),
        "element_params": element_params(fmt.element.name),
        "scale": "e8m0",
        "array_encoding": "concatenated big-endian hex bit patterns, C order "
                          "(2 digits per uint8 code, 4 float16/bfloat16, 8 float32, 16 float64)",
        "generator": "mx-spec golden --out DIR",
        "modes": [list(m) for m in modes],
        "policies": {k: list(v) for k, v in POLICY_CHOICES.items()},
        "decode_table": decode_table_records(fmt.element.name),
    }
    lines = ["{"]
    for key, value in header.items():
        if key == "decode_table":
            rows = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in value)
            lines.append(f' "decode_table": [\n{rows}\n ],')
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, separators=(',', ':'))},")
    case_lines = ",\n".join("  " + json.dumps(c, separators=(",", ":")) for c in iter_cases(fmt_name, header["modes"]))
    lines.append(f' "cases": [\n{case_lines}\n ]')
    lines.append("}")
    return "\n".join(lines) + "\n"


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no file name, mtime 0): the same input gives the same bytes."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def manifest_text(out_dir: str | os.PathLike) -> str:
    """``sha256sum`` lines of every golden file in ``out_dir`` (``sha256sum -c`` checks them)."""
    root = Path(out_dir)
    lines = []
    for name in MX_FORMATS:
        for path in (root / f"{name}.json", root / f"{name}.json.gz"):
            if path.is_file():
                lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}")
    return "\n".join(lines) + "\n"


def write_golden(out_dir: str | os.PathLike, formats: Iterable[str] | None = None,
                 modes: Sequence[tuple[str, str]] = ALL_MODES, progress: bool = True,
                 compress: bool = False) -> list[Path]:
    """Generate ``<out_dir>/<format>.json`` (``.json.gz`` with ``compress``) for each format,
    then ``MANIFEST.sha256`` over every golden file in ``out_dir``; returns the written paths.

    Each file is written atomically as soon as it is complete, so an interrupted run keeps the
    formats already done.
    """
    names = list(formats) if formats is not None else list(MX_FORMATS)
    for name in names:
        get_format(name)  # raises with the valid names
    written = []
    for name in tqdm(names, desc="golden", unit="format", disable=not progress):
        data = render_file(name, modes).encode("utf-8")
        path = Path(out_dir) / (f"{name}.json.gz" if compress else f"{name}.json")
        atomic_write_bytes(path, gzip_bytes(data) if compress else data)
        written.append(path)
    manifest = Path(out_dir) / MANIFEST_NAME
    atomic_write_text(manifest, manifest_text(out_dir))
    return written + [manifest]
