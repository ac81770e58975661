"""Adapter: compressed-tensors' MX quantiser (MXFP4 / MXFP6 / MXFP8 presets) in the verifier's contract.

Written from the public API only: the ``MXFP4A16`` / ``MXFP6A16`` / ``MXFP8A16`` weight presets
(``compressed_tensors.quantization.quant_scheme``: float, group 32, ``scale_dtype=torch.uint8``),
``calculate_qparams(min, max, args)`` for the per-group scale and ``quantize(x, scale, zp, args)``
for the elements, as llm-compressor calls them.  The library has one scale rule and one
rounding, so ``scale_mode`` is ignored (the survey runs it against every golden mode and reports
the one it matches); ``away`` rounding, block sizes other than 32, ragged blocks and the formats
without a preset (MXFP6 E3M2, MXFP8 E5M2, MXINT8) raise ``NotImplementedError``.

Outputs: ``quantize`` returns element *values* on the element grid (float) and the scale as a
float power of two; both are turned into codes exactly (the values by an ``ml_dtypes`` cast, which
is exact on the grid, the scale by its exponent) -- a value off the grid or a scale that is not
an E8M0 power of two raises ``ValueError`` (the case fails with that message).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from survey_codes import element_codes, in_input_layout, rows_of, scale_codes

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import compressed_tensors
    from compressed_tensors.quantization.lifecycle.forward import quantize
    from compressed_tensors.quantization.quant_scheme import MXFP4A16, MXFP6A16, MXFP8A16
    from compressed_tensors.quantization.utils import calculate_qparams

VERSION = compressed_tensors.__version__
API = "compressed_tensors.quantization: MXFP4A16/MXFP6A16/MXFP8A16 presets, calculate_qparams, quantize"
PRESETS = {"mxfp4_e2m1": MXFP4A16, "mxfp6_e2m3": MXFP6A16, "mxfp8_e4m3": MXFP8A16}
def ct_quantize(x: np.ndarray, fmt: str, *, block_size: int = 32, axis: int = -1, scale_mode: str = "floor",
                rounding: str = "rne") -> tuple[np.ndarray, np.ndarray]:
    """compressed-tensors' MX quantisation of ``x`` blocked along ``axis``: (scale codes, element codes)."""
    if fmt not in PRESETS:
        raise NotImplementedError(f"compressed-tensors has no {fmt} preset")
    if rounding != "rne" or block_size != 32:
        raise NotImplementedError("compressed-tensors' MX presets: group size 32, round to nearest even")
    moved, rows = rows_of(x, axis, block_size, "compressed-tensors")
    args = PRESETS[fmt]["weights"]
    groups = rows.reshape(rows.shape[0], -1, block_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        scale, zp = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
        q = quantize(rows, scale, zp, args)
    codes = element_codes(q.double().numpy(), fmt, "compressed-tensors")
    return in_input_layout(scale_codes(scale.double().numpy(), "compressed-tensors"), codes, moved, axis)
