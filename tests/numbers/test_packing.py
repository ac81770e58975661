"""Byte layout of pack/unpack against hand-worked bytes and numpy.packbits (LSB-first streams)."""

import numpy as np
import pytest

from mx_spec import pack, pack_elements, packed_size, quantize, unpack, unpack_elements


def packbits_reference(codes: np.ndarray, bits: int) -> np.ndarray:
    """LSB-first bit stream of ``bits``-bit codes, built with numpy's own bit (un)packing."""
    stream = np.unpackbits(codes.astype(np.uint8)[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(stream.ravel(), bitorder="little")


def test_hand_worked_bytes():
    assert pack_elements(np.array([1, 2, 3], np.uint8), "e2m1").tolist() == [0x21, 0x03]
    assert pack_elements(np.array([0x3F, 0, 0, 0], np.uint8), "e3m2").tolist() == [0x3F, 0, 0]
    assert pack_elements(np.array([0, 0x3F, 0, 0], np.uint8), "e3m2").tolist() == [0xC0, 0x0F, 0]
    assert pack_elements(np.array([0, 0, 0x3F, 0], np.uint8), "e2m3").tolist() == [0, 0xF0, 0x03]
    assert pack_elements(np.array([0, 0, 0, 0x3F], np.uint8), "e2m3").tolist() == [0, 0, 0xFC]
    assert pack_elements(np.array([0x2A], np.uint8), "e3m2").tolist() == [0x2A]
    assert pack_elements(np.array([0x80, 0x7F], np.uint8), "int8").tolist() == [0x80, 0x7F]


@pytest.mark.parametrize("elem,bits", [("e2m1", 4), ("e3m2", 6), ("e2m3", 6), ("e4m3", 8), ("int8", 8)])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 31, 32, 33, 1000])
def test_matches_packbits_and_round_trips(elem, bits, n):
    codes = np.random.default_rng(n).integers(0, 1 << bits, n).astype(np.uint8)
    packed = pack_elements(codes, elem)
    assert packed.dtype == np.uint8 and packed.size == packed_size(n, elem) == -(-n * bits // 8)
    np.testing.assert_array_equal(packed, packbits_reference(codes, bits))
    np.testing.assert_array_equal(unpack_elements(packed, elem, n), codes)
    np.testing.assert_array_equal(unpack_elements(bytes(packed), elem, n), codes)


@pytest.mark.parametrize("fmt", ["mxfp4_e2m1", "mxfp6_e3m2", "mxfp8_e4m3"])
def test_mxarray_round_trip_any_axis(fmt):
    x = np.random.default_rng(1).standard_normal((3, 45, 2)).astype(np.float32)
    mx = quantize(x, fmt, axis=1)
    data = pack(mx)
    # element order: block axis last, C order
    np.testing.assert_array_equal(unpack_elements(data, mx.fmt.element, x.size), np.moveaxis(mx.elements, 1, -1).ravel())
    back = unpack(data, fmt, x.shape, axis=1, scales=mx.scales)
    np.testing.assert_array_equal(back.elements, mx.elements)
    np.testing.assert_array_equal(back.scales, mx.scales)
    assert back.axis == 1 and back.block_size == 32


def test_unpack_rejects_bad_buffers():
    with pytest.raises(ValueError, match="pack into 2 bytes"):
        unpack_elements(np.zeros(3, np.uint8), "e2m1", 3)
    with pytest.raises(ValueError, match="padding"):
        unpack_elements(np.array([0x21, 0x13], np.uint8), "e2m1", 3)
    with pytest.raises(ValueError, match="padding"):
        unpack_elements(np.array([0, 0xC0], np.uint8), "e3m2", 2)
    with pytest.raises(TypeError, match="uint8"):
        unpack_elements(np.zeros(2, np.int32), "e2m1", 4)
    with pytest.raises(ValueError, match="0..15"):
        pack_elements(np.array([16], np.uint8), "e2m1")
    mx = quantize(np.ones((2, 64), np.float32), "mxfp4_e2m1")
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        unpack(pack(mx), "mxfp4_e2m1", (2, 64), scales=mx.scales[:, :1])
    with pytest.raises(TypeError, match="MXArray"):
        pack(np.zeros(4, np.uint8))
