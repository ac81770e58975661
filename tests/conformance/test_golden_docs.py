"""golden/README.md's table of the exact ±Inf / NaN codes per format and policy is what mx_spec
(and so the golden files and the verifier) does: each row is parsed and re-derived."""
from __future__ import annotations

import re

import numpy as np
import pytest

import mx_spec
from mx_spec.formats import MX_FORMATS
from mx_spec.conformance.golden import default_golden_dir
from mx_spec.policies import min_inf_block_exponent, quantize_under_policies

ROW = re.compile(r"^\| (mx\w+) \| scale 0xFF, elements don't-care \| (0x[0-9A-F]+) \(.*?\) \| (0x[0-9A-F]+) \(.*?\) "
                 r"\| (.*?) \|$")


def _table() -> dict[str, tuple[int, int, str]]:
    text = (default_golden_dir() / "README.md").read_text()
    return {m.group(1): (int(m.group(2), 16), int(m.group(3), 16), m.group(4))
            for m in map(ROW.match, text.splitlines()) if m}


def _saturated(fmt: str, policies: frozenset[str]) -> tuple[int, int]:
    x = np.array([[np.inf, -np.inf, 1.0, -0.5] + [0.25] * 28], dtype=np.float32)
    lowest = min_inf_block_exponent(x, fmt, block_size=32, axis=-1, scale_mode="floor", policies=policies) + 127
    mx = quantize_under_policies(x, fmt, block_size=32, axis=-1, scale_mode="floor", rounding="rne",
                                 policies=policies, inf_scales=lowest.astype(np.uint8))
    return int(mx.elements[0, 0]), int(mx.elements[0, 1])


def test_table_has_every_format():
    assert set(_table()) == set(MX_FORMATS)


@pytest.mark.parametrize("fmt", list(MX_FORMATS))
def test_inf_nan_codes_match_mx_spec(fmt):
    plus, minus, full_range = _table()[fmt]
    for head in ([np.inf], [-np.inf], [np.nan], [np.nan, np.inf]):
        x = np.array([head + [1.0] * (32 - len(head))], dtype=np.float32)
        assert int(mx_spec.quantize(x, fmt).scales[0, 0]) == 0xFF
    assert _saturated(fmt, frozenset({"inf=saturate"})) == (plus, minus)
    if fmt == "mxint8":
        assert full_range.startswith("**0x80") and _saturated(fmt, frozenset({"inf=saturate", "int8=full-range"}))[1] == 0x80
    else:
        assert full_range == "n/a"
