"""dMX: differentiable per-layer MX mixed-precision assignment."""

from dmx.anneal import (
    SCHEDULES,
    ConstantTemperature,
    HoldThenCosine,
    HoldThenExponential,
    HoldThenLinear,
    RoundSTE,
    get_schedule,
)
from dmx.autograd import mx_qdq_minifloat, mx_qdq_standard
from dmx.family import FAMILIES, FormatFamily, get_family
from dmx.linear import DMXLinear, DMXLinearConfig
from dmx.offset import hard_beta, offset_to_beta
from dmx.regularizer import average_bits, bit_budget_penalty, dmx_objective, storage_bits
from dmx.wrap import apply_schedule, dmx_layers, set_fixed_format, set_temperature, wrap_linears

__all__ = [
    "SCHEDULES",
    "ConstantTemperature",
    "HoldThenCosine",
    "HoldThenExponential",
    "HoldThenLinear",
    "RoundSTE",
    "get_schedule",
    "mx_qdq_minifloat",
    "mx_qdq_standard",
    "FAMILIES",
    "FormatFamily",
    "get_family",
    "DMXLinear",
    "DMXLinearConfig",
    "hard_beta",
    "offset_to_beta",
    "average_bits",
    "bit_budget_penalty",
    "dmx_objective",
    "storage_bits",
    "apply_schedule",
    "dmx_layers",
    "set_fixed_format",
    "set_temperature",
    "wrap_linears",
]
