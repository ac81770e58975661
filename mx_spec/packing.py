"""Byte layout of MX element codes: ``pack`` / ``unpack`` (scales are stored separately).

Element order: the elements of an :class:`~mx_spec.quantize.MXArray` are serialised with the
block axis moved last and then in C (row-major) order, so each block's elements are contiguous
and blocks follow the order of ``np.moveaxis(mx.scales, axis, -1)`` in C order.  For
``axis=-1`` (the usual case) that is simply ``mx.elements.ravel()``.

Per element width (n = number of elements):

* 8-bit (MXFP8, MXINT8): one code per byte; n bytes.
* FP6 (E3M2, E2M3): an LSB-first bit stream, element i in stream bits 6i..6i+5 (its LSB first),
  stream bit j in bit (j mod 8) of byte j // 8.  Four elements fill three bytes:
  ``b0 = c0 | c1 << 6``, ``b1 = c1 >> 2 | c2 << 4``, ``b2 = c2 >> 4 | c3 << 2`` (mod 256).
  ceil(6n / 8) bytes; unused high bits of the final byte are zero.
* FP4 (E2M1): two codes per byte, the even-index element in the low nibble; ceil(n / 2) bytes;
  for odd n the final high nibble is zero.

``unpack`` rejects a byte string whose length is not exactly that size, and (for FP6/FP4)
non-zero padding bits, so a truncated or mis-typed buffer cannot decode silently.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt

from mx_spec.elements import check_codes
from mx_spec.formats import ElementFormat, MXFormat, get_element, get_format
from mx_spec.blocks import check_axis, check_block_size
from mx_spec.quantize import MXArray

__all__ = ["pack", "unpack", "pack_elements", "unpack_elements", "packed_size"]


def packed_size(count: int, elem: str | ElementFormat) -> int:
    """Bytes needed for ``count`` codes of ``elem``: ceil(count * bits / 8)."""
    fmt = get_element(elem)
    return -(-count * fmt.bits // 8)


def pack_elements(codes: npt.ArrayLike, elem: str | ElementFormat) -> np.ndarray:
    """Pack a flat sequence of element codes (C order of ``codes``) into uint8 bytes."""
    fmt = get_element(elem)
    c = check_codes(codes, fmt).astype(np.uint8, copy=False).ravel()
    n = c.size
    if fmt.bits == 8:
        return c.copy()
    if fmt.bits == 4:
        c = np.concatenate([c, np.zeros(c.size % 2, np.uint8)])
        return c[0::2] | (c[1::2] << 4)
    if fmt.bits == 6:
        c = np.concatenate([c, np.zeros(-c.size % 4, np.uint8)]).reshape(-1, 4)
        out = np.empty((c.shape[0], 3), np.uint8)
        out[:, 0] = c[:, 0] | (c[:, 1] << 6)
        out[:, 1] = (c[:, 1] >> 2) | (c[:, 2] << 4)
        out[:, 2] = (c[:, 2] >> 4) | (c[:, 3] << 2)
        return out.ravel()[: packed_size(n, fmt)]
    raise AssertionError(f"no byte layout for {fmt.bits}-bit elements")  # table has 4/6/8 only


def unpack_elements(data: npt.ArrayLike | bytes, elem: str | ElementFormat, count: int) -> np.ndarray:
    """Inverse of :func:`pack_elements`: ``count`` uint8 codes from packed bytes.

    Raises:
        ValueError: ``data`` is not exactly ``packed_size(count, elem)`` bytes, or its padding
            bits are not zero.
    """
    fmt = get_element(elem)
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data)
    if buf.dtype != np.uint8:
        raise TypeError(f"packed data must be bytes or a uint8 array, got dtype {buf.dtype}")
    buf = buf.ravel()
    need = packed_size(count, fmt)
    if buf.size != need:
        raise ValueError(f"{count} {fmt.name} codes pack into {need} bytes, got {buf.size}")
    if fmt.bits == 8:
        return buf.copy()
    if fmt.bits == 4:
        out = np.empty(buf.size * 2, np.uint8)
        out[0::2] = buf & 0x0F
        out[1::2] = buf >> 4
    else:
        full = np.concatenate([buf, np.zeros(-buf.size % 3, np.uint8)]).reshape(-1, 3)
        out = np.empty((full.shape[0], 4), np.uint8)
        out[:, 0] = full[:, 0] & 0x3F
        out[:, 1] = (full[:, 0] >> 6) | ((full[:, 1] & 0x0F) << 2)
        out[:, 2] = (full[:, 1] >> 4) | ((full[:, 2] & 0x03) << 4)
        out[:, 3] = full[:, 2] >> 2
        out = out.ravel()
    if np.any(out[count:]):
        raise ValueError(f"packed {fmt.name} data has non-zero padding bits after element {count}")
    return out[:count].copy()


def pack(mx: MXArray) -> np.ndarray:
    """Packed element bytes (uint8, 1-D) of an :class:`MXArray`, in the order documented above.

    The scales are not included: store ``mx.scales`` (one E8M0 byte per block) alongside.
    """
    if not isinstance(mx, MXArray):
        raise TypeError(f"pack expects an MXArray (from quantize), got {type(mx).__name__}")
    ordered = np.moveaxis(mx.elements, mx.axis, -1)
    return pack_elements(ordered, mx.fmt.element)


def unpack(
    data: npt.ArrayLike | bytes,
    fmt: str | MXFormat,
    shape: Sequence[int],
    axis: int = -1,
    *,
    scales: npt.ArrayLike,
    block_size: int | None = None,
) -> MXArray:
    """Rebuild an :class:`MXArray` of ``shape`` from :func:`pack` bytes and its E8M0 ``scales``.

    Raises:
        ValueError: wrong byte count, non-zero padding, bad axis/block size, or ``scales`` of
            the wrong shape (it must be ``shape`` with ``shape[axis]`` -> ceil(n / block_size)).
    """
    f = get_format(fmt)
    bs = check_block_size(f.block_size if block_size is None else block_size)
    shape = tuple(int(s) for s in shape)
    ax = check_axis(axis, len(shape))
    moved_shape = shape[:ax] + shape[ax + 1 :] + (shape[ax],)
    codes = unpack_elements(data, f.element, int(np.prod(shape, dtype=np.int64)))
    elements = np.ascontiguousarray(np.moveaxis(codes.reshape(moved_shape), -1, ax))
    sc = np.asarray(scales)
    want = shape[:ax] + (-(-shape[ax] // bs),) + shape[ax + 1 :]
    if sc.shape != want or sc.dtype != np.uint8:
        raise ValueError(f"scales must be a uint8 array of shape {want}, got {sc.dtype} {sc.shape}")
    return MXArray(f, sc.copy(), elements, ax, bs)
