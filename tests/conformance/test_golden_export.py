"""Flat and $readmemh exports hold exactly the golden files' cases."""
from __future__ import annotations

import numpy as np

from mx_spec.conformance.compare import scale_per_element
from mx_spec.conformance.golden import array_to_hex, load_golden
from mx_spec.conformance.golden_export import export_flat


def test_flat_and_readmemh_exports_match_the_json(tmp_path):
    gfile = load_golden(formats=["mxfp6_e2m3"])["mxfp6_e2m3"]
    export_flat(tmp_path, formats=["mxfp6_e2m3"], readmemh=True)
    lines = (tmp_path / "mxfp6_e2m3.flat.txt").read_text().splitlines()
    assert lines[0].startswith("mx-spec-flat 1 mxfp6_e2m3 kind fp bits 6 ebits 2 mbits 3 bias 1 emax 2 emin 0")
    assert len(lines) == 1 + 2 * len(gfile.cases)
    for c, head, body in zip(gfile.cases, lines[1::2], lines[2::2]):
        assert head.split()[1] == c.id and body == "input " + array_to_hex(c.x, c.input_dtype)

    mem = tmp_path / "mxfp6_e2m3"
    index = (mem / "floor_rne.cases.txt").read_text().splitlines()[1:]
    scales = (mem / "floor_rne.scales.memh").read_text().split()
    elements = (mem / "floor_rne.elements.memh").read_text().split()
    inputs = (mem / "floor_rne.input.memh").read_text().split()
    care = (mem / "floor_rne.care.memh").read_text().split()
    assert len(care) == len(elements)
    cases = {c.id: c for c in gfile.cases if c.scale_mode == "floor" and c.rounding == "rne"}
    assert [row.split()[0] for row in index] == list(cases)
    for row in index:
        t = row.split()
        c = cases[t[0]]
        i0, ni, s0, ns, e0, ne = (int(t[k]) for k in (6, 7, 9, 10, 12, 13))
        assert "".join(scales[s0:s0 + ns]) == array_to_hex(c.scales)
        assert "".join(elements[e0:e0 + ne]) == array_to_hex(c.elements)
        digits = {"float32": 8, "float64": 16, "float16": 4, "bfloat16": 4}[c.input_dtype]
        assert "".join(w[-digits:] for w in inputs[i0:i0 + ni]) == array_to_hex(c.x, c.input_dtype)
        assert all(len(w) == 16 for w in inputs[i0:i0 + ni])
        assert t[14] == "policies" and t[15] == (",".join(c.policies) or "-")
        nan_scale = np.repeat(c.scales.reshape(-1) == 0xFF, 1)  # per block, checked per element below
        want = (scale_per_element(c) != 0xFF).reshape(-1) if c.x.size else np.zeros(0, bool)
        assert [w == "1" for w in care[e0:e0 + ne]] == want.tolist()
        assert nan_scale.any() == (not want.all()) or not c.x.size
    marked = [r for r in index if not r.endswith("policies -")]
    assert marked and all("policies " in r for r in marked)
    assert "0" in care  # NaN-scale blocks exist in every mode
