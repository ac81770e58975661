"""Adapter: torchao's MX emulation (``to_mx`` / ``to_dtype``) in ``mx_spec``'s code layout.

Not part of the library: the benchmark and the peer tests load it to compare torchao with
``mx_spec`` bit for bit.  torchao (``torchao.prototype.mx_formats``) quantizes along the last
dimension of a contiguous float32/bfloat16 tensor whose length is a multiple of the block size,
with round-to-nearest-even elements and four scale modes; it has no MXINT8 and no ties-away
rounding.  Anything outside that raises ``NotImplementedError`` (the verifier counts it as
skipped).  Code layouts returned by torchao: FP8 as ``torch.float8_*`` (viewed as uint8 here),
FP6 as one uint8 per element with the 6-bit code in the low bits, FP4 packed two per byte with
the even-index element in the low nibble (unpacked here).
"""
from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.constants import DTYPE_FP6_E2M3, DTYPE_FP6_E3M2
    from torchao.prototype.mx_formats.kernels import unpack_uint4
    from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx

TORCHAO_ELEM_DTYPES = {
    "mxfp8_e4m3": torch.float8_e4m3fn,
    "mxfp8_e5m2": torch.float8_e5m2,
    "mxfp6_e3m2": DTYPE_FP6_E3M2,
    "mxfp6_e2m3": DTYPE_FP6_E2M3,
    "mxfp4_e2m1": torch.float4_e2m1fn_x2,
}
TORCHAO_SCALE_MODES = {
    "floor": ScaleCalculationMode.FLOOR,
    "ceil": ScaleCalculationMode.CEIL,
    "even": ScaleCalculationMode.EVEN,
    "rceil": ScaleCalculationMode.RCEIL,
}


def to_torch(x: np.ndarray) -> torch.Tensor:
    """float32 or bfloat16 numpy array -> torch tensor of the same dtype (bits preserved)."""
    if x.dtype == np.float32:
        return torch.from_numpy(np.ascontiguousarray(x))
    if x.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(x).view(np.uint16).astype(np.int16)).view(torch.bfloat16)
    raise NotImplementedError(f"torchao to_mx takes float32 or bfloat16, not {x.dtype}")


def check_supported(x: np.ndarray, fmt: str, block_size: int, axis: int, scale_mode: str, rounding: str) -> None:
    """Raise NotImplementedError for what torchao's to_mx does not implement."""
    if fmt not in TORCHAO_ELEM_DTYPES:
        raise NotImplementedError(f"torchao has no {fmt}")
    if rounding != "rne":
        raise NotImplementedError(f"torchao rounds elements to nearest even only, not {rounding!r}")
    if scale_mode not in TORCHAO_SCALE_MODES:
        raise NotImplementedError(f"torchao has no scale mode {scale_mode!r}")
    if x.ndim == 0 or x.shape[axis] % block_size != 0:
        raise NotImplementedError("torchao needs the block axis to be a multiple of the block size (no ragged blocks)")
    if fmt == "mxfp4_e2m1" and x.size % 2:
        raise NotImplementedError("torchao packs FP4 in pairs")


def torchao_quantize(x: np.ndarray, fmt: str, *, block_size: int = 32, axis: int = -1,
                     scale_mode: str = "floor", rounding: str = "rne") -> tuple[np.ndarray, np.ndarray]:
    """torchao ``to_mx`` on ``x`` blocked along ``axis``: (scale codes, element codes) as uint8.

    The block axis is moved last (torchao blocks the last dimension); both outputs are moved
    back, so they line up with ``mx_spec.quantize(...).scales`` / ``.elements``.
    """
    check_supported(x, fmt, block_size, axis, scale_mode, rounding)
    moved = np.moveaxis(x, axis, -1)
    t = to_torch(moved)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scale, data = to_mx(t, TORCHAO_ELEM_DTYPES[fmt], block_size, TORCHAO_SCALE_MODES[scale_mode])
    scales = scale.view(torch.uint8).numpy().reshape(*moved.shape[:-1], moved.shape[-1] // block_size)
    if fmt == "mxfp4_e2m1":
        codes = unpack_uint4(data.view(torch.uint8).contiguous()).numpy().reshape(moved.shape)
    elif fmt.startswith("mxfp8"):
        codes = data.view(torch.uint8).numpy().reshape(moved.shape)
    else:
        codes = data.numpy().reshape(moved.shape)
    return np.moveaxis(scales, -1, axis).copy(), np.moveaxis(codes, -1, axis).copy()


def torchao_quantize_dequantize_last_axis(t: torch.Tensor, fmt: str, block_size: int = 32,
                                          scale_mode: str = "floor") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchao ``to_mx`` + ``to_dtype`` on a float32 tensor: (scales, raw element data, float32 values)."""
    elem = TORCHAO_ELEM_DTYPES[fmt]
    scale, data = to_mx(t, elem, block_size, TORCHAO_SCALE_MODES[scale_mode])
    back = to_dtype(data, scale, elem, block_size, torch.float32)
    return scale, data, back
