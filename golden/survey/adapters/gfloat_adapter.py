"""Adapter: Graphcore's gfloat block conversion (OCP MX v1.0 6.3 in float64 numpy) in the
verifier's contract; used by the survey and by ``tests/numbers/test_peers_gfloat.py``.

Public API only: ``compute_scale_amax``, ``round_ndarray``, ``encode_ndarray`` and the
``format_info_mx*`` block formats.  gfloat implements the floor scale with ties-to-even or
ties-away elements; other scale modes raise ``NotImplementedError``.
"""
from __future__ import annotations

from importlib.metadata import version

import numpy as np
from gfloat import RoundMode, compute_scale_amax, encode_ndarray, round_ndarray
from gfloat import formats as gf

VERSION = version("gfloat")
API = "gfloat: compute_scale_amax, round_ndarray(sat=True), encode_ndarray, format_info_mx*"

GFLOAT_BLOCK_FORMATS = {
    "mxfp8_e4m3": gf.format_info_mxfp8_e4m3,
    "mxfp8_e5m2": gf.format_info_mxfp8_e5m2,
    "mxfp6_e3m2": gf.format_info_mxfp6_e3m2,
    "mxfp6_e2m3": gf.format_info_mxfp6_e2m3,
    "mxfp4_e2m1": gf.format_info_mxfp4_e2m1,
    "mxint8": gf.format_info_mxint8,
}
GFLOAT_ROUNDING = {"rne": RoundMode.TiesToEven, "away": RoundMode.TiesToAway}


def gfloat_quantize(x: np.ndarray, fmt: str, *, block_size: int = 32, axis: int = -1,
                    scale_mode: str = "floor", rounding: str = "rne") -> tuple[np.ndarray, np.ndarray]:
    """gfloat's block conversion of ``x`` along ``axis``: (E8M0 scale codes, element codes).

    Per block: ``scale = compute_scale_amax(emax_elem, block)`` (float64 ``floor(log2(amax))``,
    clipped to 2^[-127, 127], 2^-127 for an all-zero block), then each ``v / scale`` is rounded
    with saturation and encoded.  The input is widened to float64 first, which is exact.
    Elements of a NaN-scale block are set to code 0 (they are don't-care, and gfloat cannot
    encode NaN in element types without NaN).
    """
    if scale_mode != "floor":
        raise NotImplementedError(f"gfloat implements only the spec's floor scale, not {scale_mode!r}")
    bfi = GFLOAT_BLOCK_FORMATS[fmt]
    with np.errstate(invalid="ignore"):  # widening a bfloat16/float16 NaN warns, harmlessly
        moved = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    n = moved.shape[-1]
    n_blocks = -(-n // block_size)
    rows = moved.reshape(-1, n)
    scales = np.empty((rows.shape[0], n_blocks), dtype=np.float64)
    per_elem = np.empty_like(rows)
    for b in range(n_blocks):
        sl = slice(b * block_size, min(n, (b + 1) * block_size))
        for r in range(rows.shape[0]):
            with np.errstate(invalid="ignore"):
                scales[r, b] = compute_scale_amax(bfi.etype.emax, rows[r, sl])
        per_elem[:, sl] = scales[:, b:b + 1]
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = rows / per_elem
        rounded = round_ndarray(bfi.etype, scaled, GFLOAT_ROUNDING[rounding], sat=True)
    rounded = np.where(np.isnan(per_elem), 0.0, rounded)
    codes = np.asarray(encode_ndarray(bfi.etype, rounded), dtype=np.int64) & ((1 << bfi.etype.k) - 1)
    scale_codes = np.asarray(encode_ndarray(bfi.stype, scales.reshape(-1)), dtype=np.uint8)
    out_scales = scale_codes.reshape(*moved.shape[:-1], n_blocks)
    out_codes = codes.astype(np.uint8).reshape(moved.shape)
    return np.moveaxis(out_scales, -1, axis), np.moveaxis(out_codes, -1, axis)
