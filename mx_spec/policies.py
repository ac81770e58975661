"""Declared policies: the points where real MX implementations legitimately differ from mx_spec.

OCP MX v1.0 leaves a few corners open (or real hardware deviates on purpose).  ``mx_spec`` and the
golden files take one choice for each (the *default*); an implementation that takes the other one
declares it (``mx-spec verify --policy inf=saturate,int8=full-range``) and is then checked against
the outputs that choice implies, and the report names the policies it follows.

=========== ============ =================================================================
policy      choices      rule (default first)
=========== ============ =================================================================
``inf``     ``nan``      a block holding ±Inf (and no NaN) gets the NaN scale 0xFF
            ``saturate`` it gets a finite scale X (implementation-defined, at least the
                         scale of its finite values); ±Inf saturates like any overflowing
                         value (±max normal; MXINT8 -Inf under int8=full-range: -2.0,
                         0x80) and every other element is rounded at 2^X (torchao, gfloat)
``int8``    ``symmetric`` MXINT8 elements saturate to ±127/64 (0x81 .. 0x7F)
            ``full-range`` negative values saturate to -2.0 (0x80); |x/2^X| >= 127.5/64
                         rounds to 0x80 (gfloat, TOSA)
``rceil``   ``exact``    X = ceil(log2(amax / max_normal)) evaluated exactly
            ``float32``  X = ceil(float32 log2(float32(amax / max_normal))): the rounded
                         quotient or logarithm can land on an integer and give X one lower
                         (cuBLAS, torchao); float32, bfloat16 and float16 inputs only
``ftz``     ``off``      float32 subnormal inputs are quantized like any value
            ``inputs``   float32 and bfloat16 inputs with a zero exponent field are taken as
                         zeros of their sign before the block is quantized (microxcaling)
=========== ============ =================================================================

The golden files tag every case whose outputs depend on a policy (``"policies"``) and carry the
expected outputs under the fixed-output policies (``int8``, ``rceil``, ``ftz`` and their
combinations, ``"policy_outputs"``); ``inf=saturate`` leaves the scale to the implementation, so
the verifier checks it by rule (:func:`expected_under_policies` with the implementation's scales).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations

import numpy as np

from mx_spec.blocks import block_amax, from_blocks, scales_shape, to_blocks
from mx_spec.elements import encode_elements, round_to_element_grid
from mx_spec.formats import get_format
from mx_spec.packing import pack
from mx_spec.quantize import MXArray, dequantize, quantize
from mx_spec.scale import E8M0_BIAS, E8M0_MAX_EXP, E8M0_MIN_EXP, E8M0_NAN, encode_e8m0, shared_exponent

#: policy name -> its choices, the default (mx_spec's) first.
POLICY_CHOICES: dict[str, tuple[str, ...]] = {
    "inf": ("nan", "saturate"),
    "int8": ("symmetric", "full-range"),
    "rceil": ("exact", "float32"),
    "ftz": ("off", "inputs"),
}
#: Policies whose expected outputs are fixed (stored in the golden files); ``inf=saturate`` is
#: checked by rule against the implementation's own scale.
FIXED_OUTPUT_POLICIES: tuple[str, ...] = ("int8=full-range", "rceil=float32", "ftz=inputs")
INF_SATURATE = "inf=saturate"
NON_DEFAULT_POLICIES: tuple[str, ...] = tuple(f"{k}={v}" for k, c in POLICY_CHOICES.items() for v in c[1:])


def choices_text(choices: Mapping[str, Sequence[str]]) -> str:
    """``"inf=nan|saturate, int8=symmetric|full-range"``: every key with its choices, default first."""
    return ", ".join(f"{key}={'|'.join(values)}" for key, values in choices.items())


def parse_choices(text: str | Iterable[str] | None, choices: Mapping[str, Sequence[str]], what: str) -> frozenset[str]:
    """The non-default ``key=value`` items of ``"k1=v1,k2=v2"`` (or a list of them) against ``choices``
    (``{key: (default, other, ...)}``); defaults are dropped. Shared by policies and layouts.

    Raises:
        ValueError: an unknown key or value (the message names ``what`` and lists the valid ones),
            or one key given two different values.
    """
    if text is None:
        return frozenset()
    items = text.split(",") if isinstance(text, str) else list(text)
    valid = choices_text(choices)
    out: set[str] = set()
    seen: dict[str, str] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key not in choices or value not in choices[key]:
            raise ValueError(f"unknown {what} {item!r}; valid: {valid}")
        if seen.setdefault(key, value) != value:
            raise ValueError(f"conflicting {what} declarations {key}={seen[key]} and {key}={value}: "
                             f"declare one choice per {what}")
        if value != choices[key][0]:
            out.add(f"{key}={value}")
    return frozenset(out)


def parse_policies(text: str | Iterable[str] | None) -> frozenset[str]:
    """The non-default policies of ``"inf=saturate,int8=full-range"`` (defaults are dropped).

    Raises:
        ValueError: an unknown policy or choice; the message lists the valid ones.
    """
    return parse_choices(text, POLICY_CHOICES, "policy")


def policy_key(policies: Iterable[str]) -> str:
    """Stable key of a policy set in the golden files: sorted names joined by '+'."""
    return "+".join(sorted(policies))


# --------------------------------------------------------------------------- blocks
def flush_subnormal_inputs(x: np.ndarray) -> np.ndarray:
    """``ftz=inputs``: float32/bfloat16 values below 2^-126 in magnitude become zeros of their sign.

    Other dtypes are returned unchanged (float16 subnormals are float32 normals; float64 inputs
    are outside the policy).
    """
    if x.dtype.name not in ("float32", "bfloat16"):
        return x
    wide = x.astype(np.float32)
    tiny = (np.abs(wide) < np.float32(2.0**-126)) & (wide != 0)
    if not tiny.any():
        return x
    return np.where(tiny, np.copysign(np.float32(0.0), wide), wide).astype(x.dtype)


def rceil_float32_exponent(amax: np.ndarray, max_normal: float) -> np.ndarray:
    """``rceil=float32``: X = ceil(float32(log2(float32(amax / max_normal)))), clamped to [-127, 127].

    The quotient is an IEEE float32 division (deterministic).  Its logarithm rounded to float32
    is taken from the float64 ``log2``: the result only matters next to an integer, where the
    float64 value is far closer than half a float32 ulp to either side of the rounding point.
    Zero amax clamps to -127 and a quotient that underflows to 0 does too; NaN/Inf give NaN.
    """
    a32 = np.asarray(amax, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore", over="ignore"):
        q = a32 / np.float32(max_normal)
        lg = np.log2(q.astype(np.float64)).astype(np.float32)
    x = np.ceil(lg.astype(np.float64))
    x = np.where(q == 0, float(E8M0_MIN_EXP), x)
    x = np.clip(x, E8M0_MIN_EXP, E8M0_MAX_EXP)
    return np.where(np.isfinite(a32), x, np.nan)


def _block_exponents(blocks: np.ndarray, fmt_name: str, scale_mode: str, policies: frozenset[str],
                     float32_input: bool) -> np.ndarray:
    """Shared exponent per block (NaN for blocks holding NaN or Inf) under the policies."""
    elem = get_format(fmt_name).element
    finite = np.where(np.isfinite(blocks), blocks, 0.0)
    amax = block_amax(finite)
    if scale_mode == "rceil" and "rceil=float32" in policies and float32_input:
        x = rceil_float32_exponent(amax, elem.max_normal)
    else:
        x = shared_exponent(amax, elem.emax, scale_mode, mbits=elem.mbits, max_normal=elem.max_normal)
    special = ~np.isfinite(blocks).all(axis=-1)
    return np.where(special, np.nan, x)


def _encode_at(blocks: np.ndarray, exps: np.ndarray, fmt_name: str, rounding: str,
               policies: frozenset[str]) -> np.ndarray:
    """Element codes of ``blocks`` scaled by 2^-X per block (X NaN -> codes 0); ±Inf saturates."""
    elem = get_format(fmt_name).element
    nan_block = np.isnan(exps)
    scale = np.ldexp(1.0, -np.where(nan_block, 0, exps).astype(np.int32))[..., None]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        y = blocks * scale
    y = np.where(np.isnan(y), 0.0, np.clip(y, -elem.max_normal, elem.max_normal) if elem.kind == "fp" else y)
    if elem.kind == "int":
        codes = encode_elements(np.clip(y, -elem.max_normal, elem.max_normal), elem, rounding)
        if "int8=full-range" in policies:
            # the extended grid reaches -2.0: round |y| on the element grid capped at 2.0
            top = round_to_element_grid(np.minimum(np.abs(y), 2.0), emin=elem.emin, mbits=elem.mbits,
                                                max_normal=2.0, rounding=rounding)
            codes = np.where((y < 0) & (top == 2.0), np.uint8(0x80), codes).astype(np.uint8)
    else:
        codes = encode_elements(y, elem, rounding)
    codes[np.broadcast_to(nan_block[..., None], codes.shape)] = 0
    return codes


def quantize_under_policies(x: np.ndarray, fmt_name: str, *, block_size: int, axis: int, scale_mode: str,
                            rounding: str, policies: frozenset[str],
                            inf_scales: np.ndarray | None = None) -> MXArray:
    """The MX conversion of ``x`` under ``policies`` (the default rules where none is declared).

    ``inf_scales``: with ``inf=saturate``, the implementation's scale codes (shaped like the
    golden scales); blocks holding ±Inf and no NaN take their exponent from it.  Without it such
    blocks keep the NaN scale.  With no policies this equals ``mx_spec.quantize`` (tested).
    """
    axis = axis % x.ndim
    src = flush_subnormal_inputs(x) if "ftz=inputs" in policies else x
    blocks = to_blocks(np.asarray(src, dtype=np.float64), axis, block_size)
    float32_input = x.dtype.name in ("float32", "bfloat16", "float16")
    exps = _block_exponents(blocks, fmt_name, scale_mode, policies, float32_input)
    if INF_SATURATE in policies and inf_scales is not None:
        inf_only = np.isinf(blocks).any(axis=-1) & ~np.isnan(blocks).any(axis=-1)
        given = np.moveaxis(np.asarray(inf_scales).reshape(scales_shape(x.shape, axis, block_size)), axis, -1)
        given_exp = np.where(given == E8M0_NAN, np.nan, given.astype(np.float64) - E8M0_BIAS)
        exps = np.where(inf_only, given_exp, exps)
    codes = _encode_at(blocks, exps, fmt_name, rounding, policies)
    elements = from_blocks(codes, axis, x.shape[axis])
    scales = np.ascontiguousarray(np.moveaxis(encode_e8m0(exps), -1, axis))
    return MXArray(get_format(fmt_name), scales, elements, axis, block_size, scale_mode, rounding)


def inf_block_mask(x: np.ndarray, axis: int, block_size: int) -> np.ndarray:
    """Per block (golden scales layout): the block holds ±Inf and no NaN (``inf`` policy blocks)."""
    blocks = to_blocks(np.asarray(x, dtype=np.float64), axis % x.ndim, block_size)
    mask = np.isinf(blocks).any(axis=-1) & ~np.isnan(blocks).any(axis=-1)
    return np.ascontiguousarray(np.moveaxis(mask, -1, axis % x.ndim))


def min_inf_block_exponent(x: np.ndarray, fmt_name: str, *, block_size: int, axis: int, scale_mode: str,
                           policies: frozenset[str]) -> np.ndarray:
    """Per block: the smallest exponent ``inf=saturate`` accepts (the finite values' own X)."""
    ax = axis % x.ndim
    src = flush_subnormal_inputs(x) if "ftz=inputs" in policies else x
    blocks = to_blocks(np.asarray(src, dtype=np.float64), ax, block_size)
    finite = np.where(np.isfinite(blocks), blocks, 0.0)
    exps = _block_exponents(finite, fmt_name, scale_mode, policies, x.dtype.name != "float64")
    return np.ascontiguousarray(np.moveaxis(exps, -1, ax))


def outputs_of(mx: MXArray) -> dict[str, np.ndarray]:
    """All schema fields of an MXArray: scales, elements, packed bytes, float32/float64 decodes."""
    with np.errstate(over="ignore"):
        return {"scales": mx.scales.reshape(-1), "elements": mx.elements,
                "packed": np.asarray(pack(mx), dtype=np.uint8),
                "decoded_f32": dequantize(mx, dtype=np.float32),
                "decoded_f64": dequantize(mx, dtype=np.float64)}


# --------------------------------------------------------------------------- case tagging
def applicable_policies(x: np.ndarray, fmt_name: str, scale_mode: str) -> tuple[str, ...]:
    """Non-default policies that can change this input's outputs (a superset of those that do)."""
    out = []
    if np.isinf(x).any():
        out.append(INF_SATURATE)
    if get_format(fmt_name).element.kind == "int":
        out.append("int8=full-range")
    if scale_mode == "rceil" and x.dtype.name != "float64":
        out.append("rceil=float32")
    if x.dtype.name in ("float32", "bfloat16"):
        wide = np.abs(x.astype(np.float32))
        if ((wide < np.float32(2.0**-126)) & (wide != 0)).any():
            out.append("ftz=inputs")
    return tuple(out)


def _same(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], name: str) -> bool:
    u, v = np.asarray(a[name]), np.asarray(b[name])
    if u.dtype.kind == "f":
        return u.shape == v.shape and bool(np.all((u.view(f"u{u.itemsize}") == v.view(f"u{v.itemsize}"))
                                                  | (np.isnan(u) & np.isnan(v))))
    return np.array_equal(u, v)


def policy_variants(x: np.ndarray, fmt_name: str, *, block_size: int, axis: int, scale_mode: str,
                    rounding: str) -> tuple[tuple[str, ...], dict[str, dict[str, np.ndarray]]]:
    """(policies the case depends on, {policy key: the output fields that differ from the default}).

    Every non-empty combination of the applicable fixed-output policies is evaluated; a
    combination is stored when its outputs differ from the default ones.  A reader whose declared
    set is D uses the entry keyed by D ∩ (the case's policies), or the default outputs when there
    is none: a policy left out of the case's list changes nothing in any combination.  ``inf=saturate`` is
    listed when the input holds a block with ±Inf and no NaN (its outputs are checked by rule).
    """
    kw = dict(block_size=block_size, axis=axis, scale_mode=scale_mode, rounding=rounding)
    applicable = applicable_policies(x, fmt_name, scale_mode) if x.size else ()
    depends: set[str] = set()
    if INF_SATURATE in applicable and inf_block_mask(x, axis, block_size).any():
        depends.add(INF_SATURATE)
    fixed = [p for p in applicable if p in FIXED_OUTPUT_POLICIES]
    if not fixed:
        return tuple(sorted(depends)), {}
    outs = {frozenset(combo): outputs_of(quantize_under_policies(x, fmt_name, policies=frozenset(combo), **kw))
            for r in range(len(fixed) + 1) for combo in combinations(fixed, r)}
    base = outs[frozenset()]
    variants: dict[str, dict[str, np.ndarray]] = {}
    for combo, out in outs.items():
        diff = {k: v for k, v in out.items() if not _same(out, base, k)}
        if combo and diff:
            variants[policy_key(combo)] = diff
        # a policy matters when adding it to some combination changes the outputs
        depends.update(p for p in combo if any(not _same(out, outs[combo - {p}], k) for k in out))
    if INF_SATURATE in depends:
        depends.update(_matters_under_inf_saturate(x, fmt_name, fixed, kw))
    # a combination holding a policy that never matters repeats a smaller one: readers never ask for it
    kept = {k: v for k, v in variants.items() if set(k.split("+")) <= depends}
    return tuple(sorted(depends)), dict(sorted(kept.items()))


def _matters_under_inf_saturate(x: np.ndarray, fmt_name: str, fixed: list[str], kw: dict) -> set[str]:
    """Fixed-output policies that change the outputs once ±Inf blocks saturate (e.g. -Inf -> -2.0
    under int8=full-range), evaluated at the lowest scale ``inf=saturate`` accepts."""
    out: set[str] = set()
    for r in range(1, len(fixed) + 1):
        for combo in combinations(fixed, r):
            with_inf = frozenset(combo) | {INF_SATURATE}
            lowest = min_inf_block_exponent(x, fmt_name, policies=with_inf, block_size=kw["block_size"],
                                            axis=kw["axis"], scale_mode=kw["scale_mode"]) + E8M0_BIAS
            codes = lowest.astype(np.uint8)
            full = outputs_of(quantize_under_policies(x, fmt_name, policies=with_inf, inf_scales=codes, **kw))
            for p in combo:
                less = outputs_of(quantize_under_policies(x, fmt_name, policies=with_inf - {p}, inf_scales=codes,
                                                          **kw))
                if any(not _same(full, less, k) for k in full):
                    out.add(p)
    return out
