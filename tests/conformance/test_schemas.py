"""The JSON Schemas in golden/schema/ describe the golden files and results files truthfully."""
from __future__ import annotations

import json

import jsonschema
import pytest

import mx_spec
from mx_spec.formats import MX_FORMATS
from mx_spec.conformance.golden import array_to_hex, default_golden_dir, load_golden

SCHEMA_DIR = default_golden_dir() / "schema"


def _validator(name: str):
    schema = json.loads((SCHEMA_DIR / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("fmt", list(MX_FORMATS))
def test_golden_files_follow_the_golden_schema(fmt):
    doc = json.loads((default_golden_dir() / f"{fmt}.json").read_text())
    errors = list(_validator("golden.schema.json").iter_errors(doc))
    assert not errors, [e.message for e in errors[:3]]


def test_golden_schema_rejects_an_unknown_field_and_bad_hex():
    doc = json.loads((default_golden_dir() / "mxfp4_e2m1.json").read_text())
    v = _validator("golden.schema.json")
    doc["cases"] = doc["cases"][:2]
    assert v.is_valid(doc)
    doc["cases"][0]["scale"] = "7f"
    assert not v.is_valid(doc)
    del doc["cases"][0]["scale"]
    doc["cases"][1]["elements"] = "7"
    assert not v.is_valid(doc)


def test_results_schema_accepts_what_the_verifier_accepts_and_rejects_typos():
    v = _validator("results.schema.json")
    golden = load_golden(formats=["mxint8"])
    recs = []
    for c in golden["mxint8"].cases[:20]:
        mx = mx_spec.quantize(c.x, "mxint8", block_size=c.block_size, axis=c.axis, scale_mode=c.scale_mode,
                              rounding=c.rounding)
        recs.append({"id": c.id, "scales": array_to_hex(mx.scales), "elements": array_to_hex(mx.elements),
                     "decoded_f32": array_to_hex(mx_spec.dequantize(mx), "float32")})
    assert v.is_valid({"cases": recs})
    assert not v.is_valid({"cases": [{"id": recs[0]["id"], "scale": "7f"}]})  # misspelt field
    assert not v.is_valid({"cases": [{"id": recs[0]["id"]}]})  # nothing to compare
    assert not v.is_valid({"cases": [{"id": recs[0]["id"], "decoded_f32": "3f80"}]})  # half a float32
