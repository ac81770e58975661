"""Adapter: Brevitas' OCP MX quantisers (``brevitas.quant.mx_quant_ocp``) in the verifier's contract.

Public API only: ``MXFloat8e4m3Act`` (and, as Brevitas' own LLM example builds MXFP4/MXFP6/E5M2,
the same quantiser with ``.let(bit_width=, exponent_bit_width=, mantissa_bit_width=)``) and
``MXInt8Act``, in a ``brevitas.nn.QuantIdentity(act_quant=..., return_quant_tensor=True)`` with
``group_dim=-1`` and ``group_size=block_size``; the block axis is moved last first.  The returned
``GroupwiseFloatQuantTensor`` / ``GroupwiseIntQuantTensor`` gives the values and the per-element
scale; element values (value / scale) and scales are turned into codes exactly.  Brevitas has
one scale rule (``scale_mode`` is ignored: the survey reports the golden mode it matches) and
rounds to nearest even (``away`` raises ``NotImplementedError``, as do ragged blocks).
"""
from __future__ import annotations

import warnings
from importlib.metadata import version

import numpy as np
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import brevitas.nn as qnn
    from brevitas.quant.mx_quant_ocp import MXFloat8e4m3Act, MXInt8Act
from survey_codes import element_codes, in_input_layout, rows_of, scale_codes

VERSION = version("brevitas")
API = "brevitas.nn.QuantIdentity with brevitas.quant.mx_quant_ocp.MXFloat8e4m3Act (.let bit widths) / MXInt8Act"
FLOAT_BITS = {"mxfp8_e4m3": (8, 4, 3), "mxfp8_e5m2": (8, 5, 2), "mxfp6_e3m2": (6, 3, 2), "mxfp6_e2m3": (6, 2, 3),
              "mxfp4_e2m1": (4, 2, 1)}


def _quantizer(fmt: str, block_size: int):
    if fmt == "mxint8":
        quant = MXInt8Act.let(group_dim=-1, group_size=block_size)
    else:
        bits, e, m = FLOAT_BITS[fmt]
        quant = MXFloat8e4m3Act.let(bit_width=bits, exponent_bit_width=e, mantissa_bit_width=m, group_dim=-1,
                                    group_size=block_size)
    q = qnn.QuantIdentity(act_quant=quant, return_quant_tensor=True)
    q.eval()
    return q


def brevitas_quantize(x: np.ndarray, fmt: str, *, block_size: int = 32, axis: int = -1, scale_mode: str = "floor",
                      rounding: str = "rne") -> tuple[np.ndarray, np.ndarray]:
    """Brevitas' MX quantisation of ``x`` blocked along ``axis``: (scale codes, element codes)."""
    if rounding != "rne":
        raise NotImplementedError("Brevitas' MX quantisers round to nearest even")
    moved, rows = rows_of(x, axis, block_size, "Brevitas")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        y = _quantizer(fmt, block_size)(rows)
        value, scale = y.value.double().numpy(), y.scale.double().numpy()
    scale = np.broadcast_to(scale, value.shape).reshape(rows.shape[0], -1, block_size)[..., 0]
    per_elem = np.repeat(scale, block_size, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        elems = value / per_elem
    # the scale first: a scale that is no E8M0 value is the finding, not the elements it gives
    scales = scale_codes(scale, "Brevitas", shift=6 if fmt == "mxint8" else 0)
    if fmt == "mxint8":  # Brevitas' integer q in -128..127 with scale 2^(X - 6): element q / 64
        if not np.all(np.isnan(elems) | (elems == np.round(elems))):
            raise ValueError("Brevitas MXINT8 value / scale is not an integer")
        codes = np.where(np.isnan(elems), 0, elems).astype(np.int64).astype(np.int8).view(np.uint8)
    else:
        codes = element_codes(elems, fmt, "Brevitas")
    return in_input_layout(scales, codes, moved, axis)
