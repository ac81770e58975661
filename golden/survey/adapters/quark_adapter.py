"""Adapter: AMD Quark's MX quantiser (``real_quantize_mxfp``) in the verifier's contract.

Public API only: ``quark.torch.kernel.hw_emulation.hw_emulation_interface.real_quantize_mxfp``
(``mx_element_dtype`` ``fp4`` / ``fp6_e2m3`` / ``fp6_e3m2``), which returns per block of 32 the
float scale followed by the 32 element values; both are turned into codes exactly.  It is the
only Quark entry point that returns the scale: ``fake_quantize_mx`` (FP8, INT8, and the ceil /
even scale modes) returns dequantised values only, from which the codes cannot be recovered
exactly, so MXFP8 / MXINT8 are not surveyed.  ``real_quantize_mxfp`` uses the floor scale and
rounds to nearest even; other scale modes, ``away``, block sizes other than 32 and ragged blocks
raise ``NotImplementedError``.
"""
from __future__ import annotations

import warnings
from importlib.metadata import version

import numpy as np
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from quark.torch.kernel.hw_emulation.hw_emulation_interface import real_quantize_mxfp
from survey_codes import element_codes, in_input_layout, rows_of, scale_codes

VERSION = version("amd-quark")
API = "quark.torch.kernel.hw_emulation.hw_emulation_interface.real_quantize_mxfp (fp4, fp6_e2m3, fp6_e3m2)"
ELEMENT = {"mxfp4_e2m1": "fp4", "mxfp6_e2m3": "fp6_e2m3", "mxfp6_e3m2": "fp6_e3m2"}


def quark_quantize(x: np.ndarray, fmt: str, *, block_size: int = 32, axis: int = -1, scale_mode: str = "floor",
                   rounding: str = "rne") -> tuple[np.ndarray, np.ndarray]:
    """Quark's real MX quantisation of ``x`` blocked along ``axis``: (scale codes, element codes)."""
    if fmt not in ELEMENT:
        raise NotImplementedError(f"Quark's real_quantize_mxfp has no {fmt} (fake_quantize_mx hides the scale)")
    if scale_mode != "floor" or rounding != "rne" or block_size != 32:
        raise NotImplementedError("Quark's real_quantize_mxfp: floor scale, nearest even, blocks of 32")
    moved, rows = rows_of(x, axis, block_size, "Quark's real_quantize_mxfp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        out = real_quantize_mxfp(rows, ELEMENT[fmt], -1, 32).double().numpy()
    out = out.reshape(rows.shape[0], -1, 33)
    return in_input_layout(scale_codes(out[..., 0], "Quark"), element_codes(out[..., 1:], fmt, "Quark"), moved, axis)
