"""Format families: widths, bits and standard end points."""

from __future__ import annotations

import pytest
import torch

from dmx.family import FAMILIES, FormatFamily, get_family
from mx_spec.formats import get_format


def test_fp8_fp4_widths_bits_and_formats():
    f = get_family("fp8_fp4")
    assert [(f.ebits(b), f.mbits(b), f.element_bits(b)) for b in (0.0, 1.0, 2.0)] == [
        (2.0, 1.0, 4.0), (3.0, 2.0, 6.0), (4.0, 3.0, 8.0)
    ]
    assert [f.format_at(b) for b in (0, 1, 2)] == ["mxfp4_e2m1", "mxfp6_e3m2", "mxfp8_e4m3"]
    assert f.bits_range == (4.0, 8.0)
    assert f.element_bits(0.5) == pytest.approx(5.0)


def test_fp6_fp4_widths_bits_and_formats():
    f = get_family("fp6_fp4")
    assert [(f.ebits(b), f.mbits(b)) for b in (0.0, 2.0)] == [(2.0, 1.0), (2.0, 3.0)]
    assert (f.format_at(0), f.format_at(2)) == ("mxfp4_e2m1", "mxfp6_e2m3")
    assert f.bits_range == (4.0, 6.0)
    with pytest.raises(ValueError, match="no standard MX format"):
        f.format_at(1)  # E2M2 is a 5-bit format that OCP does not define


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_end_points_agree_with_the_format_table(name):
    f = FAMILIES[name]
    for beta, fmt in ((0.0, f.low_format), (f.beta_max, f.high_format)):
        elem = get_format(fmt).element
        assert (f.ebits(beta), f.mbits(beta)) == (elem.ebits, elem.mbits)
        assert f.element_bits(beta) == elem.bits


def test_widths_are_differentiable_in_beta():
    beta = torch.tensor(0.7, requires_grad=True)
    f = get_family("fp8_fp4")
    f.element_bits(beta).backward()
    assert beta.grad.item() == pytest.approx(2.0)  # dE/dbeta + dM/dbeta
    beta.grad = None
    get_family("fp6_fp4").element_bits(beta).backward()
    assert beta.grad.item() == pytest.approx(1.0)


def test_new_family_can_be_added_and_is_validated():
    fam = FormatFamily("fp6e3_fp4", 2.0, 0.5, 1.0, 0.5, "mxfp4_e2m1", "mxfp6_e3m2")
    assert fam.format_at(2) == "mxfp6_e3m2" and fam.bits_range == (4.0, 6.0)
    with pytest.raises(ValueError, match="not those of"):
        FormatFamily("bad", 2.0, 1.0, 1.0, 1.0, "mxfp4_e2m1", "mxfp6_e2m3")


def test_targets_and_names_are_validated():
    f = get_family("fp8_fp4")
    assert f.validate_target(6.5) == 6.5
    for bad in (3.9, 8.1):
        with pytest.raises(ValueError, match=r"outside the range of family 'fp8_fp4': \[4, 8\]"):
            f.validate_target(bad)
    with pytest.raises(ValueError, match="valid families: \\['fp6_fp4', 'fp8_fp4'\\]"):
        get_family("fp16_fp4")


def test_standard_element_widths_come_from_the_format_table():
    from dmx.family import STANDARD_ELEMENT_WIDTHS

    assert STANDARD_ELEMENT_WIDTHS == {(2, 1): "mxfp4_e2m1", (3, 2): "mxfp6_e3m2", (2, 3): "mxfp6_e2m3",
                                       (4, 3): "mxfp8_e4m3"}
