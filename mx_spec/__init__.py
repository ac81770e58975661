"""Bit-exact numpy model of OCP Microscaling (MX) v1.0.

Public API (see docs/MX.md, "mx_spec API"): formats table, element codecs, the rounding and
shared-exponent primitives, block quantization and byte packing.
"""

from mx_spec.elements import (
    ROUNDINGS,
    decode_elements,
    decode_table,
    encode_elements,
    round_to_element_grid,
)
from mx_spec.formats import (
    DEFAULT_BLOCK_SIZE,
    ELEMENT_FORMATS,
    MX_FORMATS,
    ElementFormat,
    MXFormat,
    get_element,
    get_format,
)
from mx_spec.packing import pack, pack_elements, packed_size, unpack, unpack_elements
from mx_spec.quantize import MXArray, dequantize, quantize, quantize_dequantize
from mx_spec.scale import (
    E8M0_BIAS,
    E8M0_NAN,
    SCALE_MODES,
    decode_e8m0,
    encode_e8m0,
    shared_exponent,
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "E8M0_BIAS",
    "E8M0_NAN",
    "ELEMENT_FORMATS",
    "MX_FORMATS",
    "ROUNDINGS",
    "SCALE_MODES",
    "ElementFormat",
    "MXArray",
    "MXFormat",
    "decode_e8m0",
    "decode_elements",
    "decode_table",
    "dequantize",
    "encode_e8m0",
    "encode_elements",
    "get_element",
    "get_format",
    "pack",
    "pack_elements",
    "packed_size",
    "quantize",
    "quantize_dequantize",
    "round_to_element_grid",
    "shared_exponent",
    "unpack",
    "unpack_elements",
]
