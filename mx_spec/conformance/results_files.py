"""Reading an implementation's outputs for the verifier: golden-schema ``.json`` / ``.json.gz``
files, ``.npz`` archives, or a directory of them (``golden/README.md``, "Checking an
implementation").

* golden schema: a JSON object whose ``cases`` list holds objects with ``id`` and any of
  ``scales``, ``elements``, ``packed``, ``decoded_f32``, ``decoded_f64`` as hex strings;
* ``.npz``: keys ``"<case id>/<field>"`` (uint8 codes / bytes, float32 / float64 decodes); a bare
  ``"<case id>"`` key holds that case's element codes.

Unreadable content is a ValueError that names the file and how to write a good one.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mx_spec.conformance.compare import check_field_names
from mx_spec.conformance.golden import FLOAT_FIELDS, OUTPUT_FIELDS, SCHEMA_NAME, hex_to_array, read_json_document

RESULTS_FIX = ('write {"cases": [{"id": "<case id>", "scales": "<hex>", "elements": "<hex>", ...}]} '
               "as described in golden/README.md")
NPZ_KEY_FORM = "'<case id>/<field>', e.g. 'mxfp4_e2m1/floor/rne/ties/0000/scales'"


def _npz_fields(p: Path) -> dict[str, dict[str, Any]]:
    """{case id: {field: array}} of an ``.npz`` results file; bad content -> ValueError naming it."""
    fix = f"write it with numpy.savez(path, **{{key: array}}) using keys {NPZ_KEY_FORM}"
    try:
        npz = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{p}: not a readable .npz archive ({type(exc).__name__}); {fix}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{p}: holds a single array, not an .npz archive of named arrays; {fix}")
    out: dict[str, dict[str, Any]] = {}
    with npz:
        for key in npz.files:
            cid, _, name = key.rpartition("/")
            if name not in OUTPUT_FIELDS:  # a bare case id holds that case's element codes
                cid, name = key, "elements"
            if cid.count("/") != 4:
                raise ValueError(f"{p}: key {key!r} is not of the form {NPZ_KEY_FORM} "
                                 f"(fields: {list(OUTPUT_FIELDS)}; a bare '<case id>' key holds element codes)")
            try:
                out.setdefault(cid, {})[name] = npz[key]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise ValueError(f"{p}: array {key!r} is unreadable ({type(exc).__name__}); {fix}") from None
    return out


def _json_fields(p: Path) -> dict[str, dict[str, Any]]:
    """{case id: {field: array}} of a golden-schema results file (.json / .json.gz)."""
    doc = read_json_document(p, what="results file", fix=RESULTS_FIX)
    if isinstance(doc, dict) and (doc.get("schema") == SCHEMA_NAME or "decode_table" in doc):
        raise ValueError(f"{p} is a golden file (schema {SCHEMA_NAME!r}, the expected outputs), not an "
                         "implementation's results: verifying it against itself proves nothing. Give the "
                         f"outputs of the implementation under test; {RESULTS_FIX}")
    cases = doc.get("cases") if isinstance(doc, dict) else None
    if not isinstance(cases, list):
        raise ValueError(f"{p}: expected a JSON object with a 'cases' list (golden schema); {RESULTS_FIX}")
    out: dict[str, dict[str, Any]] = {}
    for n, rec in enumerate(cases):
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
            raise ValueError(f"{p}: cases[{n}] has no string 'id'; {RESULTS_FIX}")
        cid = rec["id"]
        if cid in out:
            raise ValueError(f"{p}: duplicate result id {cid!r} (cases[{n}]); each case may appear once")
        check_field_names(set(rec) - {"id"} - _IGNORED_RECORD_KEYS, f"{p}: case {cid!r}")
        fields: dict[str, Any] = {}
        for name in OUTPUT_FIELDS:
            if name in rec:
                try:
                    fields[name] = hex_to_array(rec[name], FLOAT_FIELDS.get(name))
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{p}: case {cid!r} field {name!r} is not a hex string of whole items "
                                     f"({exc}); see golden/README.md 'Array encoding'") from None
        out[cid] = fields
    return out


#: Keys a results record may carry besides the output fields (a copy of the golden record is fine).
_IGNORED_RECORD_KEYS = frozenset({"group", "note", "scale_mode", "rounding", "block_size", "axis", "shape",
                                  "input_dtype", "input", "policies", "policy_outputs"})


#: File name endings read in a results directory (names are case-sensitive).
RESULTS_SUFFIXES: tuple[str, ...] = (".json", ".json.gz", ".npz")


@dataclass
class ResultsRead:
    """What :func:`read_results` read: {case id: {field: array}}, the files read and those ignored."""

    results: dict[str, dict[str, Any]]
    files_read: list[str] = field(default_factory=list)
    files_ignored: list[tuple[str, str]] = field(default_factory=list)


def _ignore_reason(entry: Path) -> str:
    """Why a directory entry is not read as results (said in the report, never silently)."""
    if entry.is_dir():
        return "a directory (results directories are not searched recursively)"
    if entry.name.lower().endswith(RESULTS_SUFFIXES):
        return f"names are case-sensitive: rename it to end in {' / '.join(RESULTS_SUFFIXES)}"
    return f"not a results file type ({' / '.join(RESULTS_SUFFIXES)})"


def _read_file(p: Path) -> dict[str, dict[str, Any]]:
    if not p.is_file():
        raise FileNotFoundError(f"results file {p} not found")
    if p.name.endswith(".npz"):
        return _npz_fields(p)
    if p.name.endswith((".json", ".json.gz")):
        return _json_fields(p)
    raise ValueError(f"{p}: unsupported results file type {p.suffix!r}; valid: .json / .json.gz (golden schema), "
                     ".npz (names are case-sensitive)")


def read_results(path: str | os.PathLike) -> ResultsRead:
    """Read an implementation's outputs from a file or a directory, saying which files were read.

    A directory is read file by file (every ``*.json``, ``*.json.gz`` and ``*.npz`` in it, names
    case-sensitive); every other entry is listed in ``files_ignored`` with the reason.  A field
    given twice for one case is an error, and so is a golden file given as results.
    """
    p = Path(path)
    if not p.is_dir():
        return ResultsRead(_read_file(p), [str(p)])
    entries = sorted(p.iterdir())
    files = [e for e in entries if e.is_file() and e.name.endswith(RESULTS_SUFFIXES)]
    ignored = [(str(e), _ignore_reason(e)) for e in entries if e not in files]
    if not files:
        why = "; ".join(f"{Path(n).name}: {r}" for n, r in ignored[:5])
        raise FileNotFoundError(f"{p} holds no *.json, *.json.gz or *.npz results files" + (f" ({why})" if why else ""))
    merged: dict[str, dict[str, Any]] = {}
    for f in files:
        for cid, fields in _read_file(f).items():
            have = merged.setdefault(cid, {})
            twice = sorted(set(have) & set(fields))
            if twice:
                raise ValueError(f"{f}: case {cid!r} field(s) {twice} were already given by another file in {p}")
            have.update(fields)
    return ResultsRead(merged, [str(f) for f in files], ignored)


def load_results(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read an implementation's outputs: {case id: {field: array}} (see :func:`read_results`)."""
    return read_results(path).results
