"""The format table against the OCP MX v1.0 / OFP8 tables (hand-copied) and ml_dtypes.finfo."""

import ml_dtypes
import numpy as np
import pytest

from brute_force_mx import ML_DTYPES
from mx_spec import ELEMENT_FORMATS, MX_FORMATS, get_element, get_format
from mx_spec.formats import ElementFormat, MXFormat

# OCP MX v1.0 Table 1 and §5.3: (bits, bias, emax, max normal, min subnormal), copied by hand.
SPEC = {
    "e4m3": (8, 7, 8, 448.0, 2.0**-9),
    "e5m2": (8, 15, 15, 57344.0, 2.0**-16),
    "e3m2": (6, 3, 4, 28.0, 2.0**-4),
    "e2m3": (6, 1, 2, 7.5, 2.0**-3),
    "e2m1": (4, 1, 2, 6.0, 2.0**-1),
    "int8": (8, 0, 0, 127 / 64, 2.0**-6),
}


@pytest.mark.parametrize("name", list(SPEC))
def test_element_table_matches_spec(name):
    e = get_element(name)
    bits, bias, emax, max_normal, min_sub = SPEC[name]
    assert (e.bits, e.bias, e.emax, e.max_normal, e.min_subnormal) == (bits, bias, emax, max_normal, min_sub)


@pytest.mark.parametrize("name", list(ML_DTYPES))
def test_element_table_matches_ml_dtypes_finfo(name):
    e, fi = get_element(name), ml_dtypes.finfo(ML_DTYPES[name])
    assert e.max_normal == float(fi.max)
    assert e.min_normal == float(fi.smallest_normal)
    assert e.min_subnormal == float(fi.smallest_subnormal)
    assert (e.ebits, e.mbits) == (fi.nexp, fi.nmant)


def test_special_codes():
    assert get_element("e4m3").nan_code == 0x7F and get_element("e4m3").inf_code is None
    assert get_element("e4m3").max_code == 0x7E
    assert get_element("e5m2").inf_code == 0x7C and get_element("e5m2").nan_code == 0x7F
    assert get_element("e5m2").max_code == 0x7B
    for name in ("e3m2", "e2m3", "e2m1", "int8"):
        assert get_element(name).nan_code is None and get_element(name).inf_code is None
    assert get_element("int8").max_code == 0x7F


def test_mx_formats_table():
    assert set(MX_FORMATS) == {"mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8"}
    assert set(ELEMENT_FORMATS) == {"e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"}
    for f in MX_FORMATS.values():
        assert f.block_size == 32 and f.name.endswith(f.element.name)
    assert get_format("mxfp4_e2m1").bits_per_element == 4.25


def test_lookup_passthrough_and_errors():
    f = get_format("mxint8")
    assert get_format(f) is f and isinstance(f, MXFormat)
    assert isinstance(get_element(f.element), ElementFormat)
    with pytest.raises(ValueError, match="mxfp8_e4m3"):
        get_format("mxfp8")
    with pytest.raises(ValueError, match="e2m1"):
        get_element("fp4")
    with pytest.raises(TypeError, match="valid names"):
        get_format(4)
    with pytest.raises(TypeError, match="valid names"):
        get_element(None)


def test_table_is_frozen():
    with pytest.raises(Exception):
        get_element("e4m3").max_normal = 1.0  # type: ignore[misc]
    assert np.isfinite(get_element("e5m2").max_normal)


def test_float_formats_are_the_fp_formats_narrowest_first():
    from mx_spec.formats import FLOAT_FORMATS

    assert FLOAT_FORMATS == ("mxfp4_e2m1", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2")
