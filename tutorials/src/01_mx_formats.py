# Source of tutorials/01_mx_formats.ipynb (build with: .venv/bin/python tutorials/build.py 01)

# %% [markdown]
# # 01 · The OCP MX formats, bit by bit
#
# An **MX block** (OCP Microscaling Formats specification v1.0, §5) is a group of $k = 32$
# numbers that share one scale. Each element $P_i$ is a tiny float (FP8, FP6, FP4) or an 8-bit
# integer, and the shared scale $X$ is a pure power of two stored in the 8-bit **E8M0** format:
#
# $$ v_i = 2^{X}\,P_i, \qquad i = 1,\dots,k . $$
#
# This notebook walks through every piece of that definition with the project's bit-exact
# numpy model `mx_spec`:
#
# 1. the element formats and the E8M0 scale,
# 2. all 16 FP4 (E2M1) codes decoded,
# 3. how the shared exponent is chosen — and why the block maximum can **saturate**,
# 4. rounding ties (round-half-to-even vs. round-half-away),
# 5. packing codes into bytes,
# 6. verifying an implementation (torchao) against the golden vectors.
#
# **Running it:** about 20 s and 0.5 GB of memory on 2 shared CPU cores (measured; the last cell
# prints this run's), within 40 s on the test machine; data: the golden vectors in `golden/` and
# the embedded model file (one weight read from it); command: `make tutorials` opens the folder in JupyterLab,
# `.venv/bin/python tutorials/build.py 01` rebuilds and re-executes it.
#
# **After this notebook you can** decode any MX element code and E8M0 scale by hand; explain how
# the shared exponent is chosen and when the block maximum saturates; tell the scale rules and
# tie rules of different libraries apart; count the bits an MX tensor stores; and check an MX
# implementation against the golden vectors.
#
# References: the [OCP MX v1.0 specification](https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf)
# (section numbers below are its), the dMX paper ([arXiv 2606.04115](https://arxiv.org/abs/2606.04115)),
# [torchao's MX formats](https://github.com/pytorch/ao/tree/main/torchao/prototype/mx_formats)
# and the project's [README](../README.md).
#
# One MX block, as stored:
#
# ```
#  shared scale X          32 elements P_1 ... P_32 (one element format for the whole tensor)
# +---------------+ +------+------+------+-- ... --+------+
# | E8M0, 8 bits  | | P_1  | P_2  | P_3  |         | P_32 |      v_i = 2^(X - 127) * P_i
# +---------------+ +------+------+------+-- ... --+------+      (X = 0xFF: the block is NaN)
# ```
#
# and the bit layout of each element format (S sign, E exponent, M mantissa, I integer bits),
# printed from the project's format table right after the imports.

# %%
%matplotlib inline
import resource
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import mx_spec

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (7, 3)})
start = time.perf_counter()

for name, e in mx_spec.ELEMENT_FORMATS.items():
    fields = "S " + ("E" * e.ebits + " " + "M" * e.mbits if e.kind == "fp" else "I" * (e.bits - 1))
    print(f"{name:>5}: {fields:<12} ({e.bits} bits{', two' + chr(39) + 's complement' if e.kind == 'int' else ''})")
print(f"{'E8M0':>5}: {'E' * 8:<12} (8 bits, the shared scale: no sign, no mantissa)")

# %% [markdown]
# ## 1. Element formats
#
# A floating-point element ExMy has a sign bit, $E$ exponent bits and $M$ mantissa bits
# (OCP MX v1.0 §5.3). With bias $b = 2^{E-1}-1$, a code with exponent field $e$ and mantissa
# field $m$ is worth
#
# $$ P = (-1)^s \cdot \begin{cases} 2^{e-b}\,\bigl(1 + m/2^{M}\bigr) & e > 0 \quad\text{(normal)}\\
#      2^{1-b}\,\bigl(m/2^{M}\bigr) & e = 0 \quad\text{(subnormal)} \end{cases} $$
#
# The FP6 and FP4 formats reserve **no** codes for Inf/NaN, so every code is a number; FP8 E4M3
# reserves only `S.1111.111` for NaN (max 448), FP8 E5M2 keeps IEEE-style Inf/NaN. MXINT8 is a
# two's-complement byte with an implicit scale $2^{-6}$: it has no exponent, hence no normal or
# subnormal range (its row shows "—" there; its smallest non-zero step is $2^{-6}$). The table below is read from
# `mx_spec.ELEMENT_FORMATS`, the project's single table of format facts.

# %%
rows = ["| element | bits | E | M | bias | emax | max | min normal | min subnormal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for name, e in mx_spec.ELEMENT_FORMATS.items():
    # An integer element has no exponent: "normal"/"subnormal" do not apply to it.
    lows = f"{e.min_normal:g} | {e.min_subnormal:g}" if e.kind == "fp" else "— | —"
    rows.append(f"| `{name}` | {e.bits} | {e.ebits} | {e.mbits} | {e.bias} | {e.emax} | "
                f"{e.max_normal:g} | {lows} |")
display(Markdown("\n".join(rows)))
print("MX formats:", ", ".join(f"{n} ({f.bits_per_element:g} bits/element with the scale)"
                              for n, f in mx_spec.MX_FORMATS.items()))

# %% [markdown]
# ### The E8M0 scale
#
# E8M0 (§5.4.1) is an unsigned 8-bit exponent with bias 127: code $c$ means $2^{c-127}$, code
# `0xFF` is NaN. There is no sign, no zero and no mantissa — the scale can only shift the block
# by whole binades, which is what makes MX cheap in hardware (a scale is an exponent add).

# %%
codes = np.array([0, 1, 126, 127, 128, 254, 255], dtype=np.uint8)
for c, v in zip(codes, mx_spec.decode_e8m0(codes)):
    meaning = "NaN (no power of two)" if c == mx_spec.E8M0_NAN else f"2^{int(c) - 127:+d} = {v:.6g}"
    print(f"E8M0 code 0x{c:02X} -> {meaning}")
print("bias:", mx_spec.E8M0_BIAS, " NaN code: 0x%02X" % mx_spec.E8M0_NAN)

# %% [markdown]
# ## 2. All sixteen FP4 (E2M1) codes
#
# E2M1 has 1 sign, 2 exponent and 1 mantissa bit, bias 1. The code `S EE M` decodes as:

# %%
e2m1 = mx_spec.get_element("e2m1")
values = mx_spec.decode_table("e2m1")
rows = ["| code | bits S EE M | kind | value |", "|---:|:---:|:---|---:|"]
for code, v in enumerate(values):
    s, ex, m = code >> 3, (code >> 1) & 0b11, code & 1
    kind = "zero" if v == 0 else ("subnormal" if ex == 0 else "normal")
    rows.append(f"| {code} | {s} {ex:02b} {m} | {kind} | {v:+g} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# Only eight magnitudes exist: $\{0, 0.5, 1, 1.5, 2, 3, 4, 6\}$. The spacing doubles every
# binade — relative precision is constant, absolute precision is not. The plot compares the
# positive grids of the floating-point element types (log scale).

# %%
fig, ax = plt.subplots(figsize=(7, 2.6))
for row, name in enumerate(["e2m1", "e2m3", "e3m2", "e4m3"]):
    grid = mx_spec.decode_table(name)
    grid = np.unique(grid[np.isfinite(grid) & (grid > 0)])
    ax.plot(grid, np.full(grid.shape, row), "|", markersize=12, label=f"{name}: {grid.size} values")
ax.set_xscale("log", base=2)
ax.set_yticks(range(4), ["FP4 E2M1", "FP6 E2M3", "FP6 E3M2", "FP8 E4M3"])
ax.set(xlabel="positive representable values (log scale)", ylabel="element format")
ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
ax.set_title("element grids: more E bits = wider range, more M bits = finer steps")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Choosing the shared exponent, and why the block maximum can saturate
#
# For a block with largest magnitude $a_{\max} = \max_i |V_i|$, the specification (§6.3) picks
#
# $$ X = \lfloor \log_2 a_{\max} \rfloor - e_{\max,\text{elem}}, $$
#
# where $e_{\max,\text{elem}}$ is the exponent of the element's largest normal (2 for E2M1).
# The scaled maximum $a_{\max}/2^X$ then lies in the element's top binade $[2^{e_{\max}},
# 2^{e_{\max}+1}) = [4, 8)$ for FP4. But the largest FP4 value is $6 = 1.5\cdot 2^2$, not
# $8^-$: any scaled maximum in $(6, 8)$ is **clamped to 6** (the conversion saturates,
# §6.3). In the worst case ($a_{\max}/2^X \to 8$) the block maximum loses 25 %.
#
# `mx_spec.quantize` implements this `scale_mode="floor"` rule by default and offers the
# variants used by other libraries (all in `mx_spec.scale`):
#
# * `ceil` (torchao): $X = \lceil \log_2 a_{\max} \rceil - e_{\max}$, i.e. `floor` + 1 unless
#   $a_{\max}$ is a power of two;
# * `even` (torchao): first round $a_{\max}$ to $1+M$ significant bits (the element's mantissa
#   width plus the implicit bit), then take `floor`. $X$ moves up by one exactly when that
#   rounding carries into the next binade — for FP4 ($M = 1$) when the significand of
#   $a_{\max}$ is $\ge 1.75$ — so the block maximum saturates less often than under `floor`;
# * `rceil` (NVIDIA/cuBLAS): the smallest $X$ with $a_{\max} \le 6\cdot 2^X$, so nothing
#   saturates, at the price of coarser steps for everyone else.

# %%
block = np.zeros(32, dtype=np.float32)
block[:3] = [7.5, 1.0, -0.3]
for mode in mx_spec.SCALE_MODES:
    mx = mx_spec.quantize(block, "mxfp4_e2m1", scale_mode=mode)
    X = int(mx.scales[0]) - mx_spec.E8M0_BIAS
    print(f"{mode:>5}: X = {X:+d}, dequantized first three = {mx_spec.dequantize(mx)[:3]}")

# %% [markdown]
# With `floor` the scale is $2^0$ and $7.5 \to 6$ (saturated), while $-0.3 \to -0.5$ keeps
# a small value. With `ceil`/`rceil` the scale is $2^1$: $7.5 \to 8$ is fine but $-0.3$ falls
# below half of the smallest step $2^1\cdot 0.5$ and is flushed to zero.
#
# Sweeping the significand of the block maximum shows the trade-off over a whole binade: the
# relative error of the maximum itself under each scale rule (the other 31 elements are small).

# %%
significand = np.linspace(1.0, 2.0, 401, dtype=np.float32)[:-1]
amax = (4.0 * significand).astype(np.float32)
blocks = np.zeros((amax.size, 32), dtype=np.float32)
blocks[:, 0] = amax
blocks[:, 1] = 0.7
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
# Several rules give the same error over parts of the binade: wide pale lines under narrow dashed
# ones keep every rule visible where their curves coincide.
STYLES = {"floor": ("-", 5.0), "ceil": ("--", 3.5), "even": (":", 2.5), "rceil": ("-.", 1.2)}
for mode in mx_spec.SCALE_MODES:
    qdq = mx_spec.quantize_dequantize(blocks, "mxfp4_e2m1", scale_mode=mode)
    style, width = STYLES[mode]
    for ax, column, value in ((axes[0], 0, amax), (axes[1], 1, 0.7)):
        ax.plot(amax, np.abs(qdq[:, column] - value) / value, style, lw=width, alpha=0.8, label=mode)
axes[0].axvspan(6, 8, color="red", alpha=0.1, label="floor saturates")
axes[0].set(xlabel="block maximum $a_{max}$", ylabel="relative error", title="error of the block maximum")
axes[1].set(xlabel="block maximum $a_{max}$", ylabel="relative error", title="error of a small element (0.7)")
axes[0].legend(fontsize=8, loc="upper left")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The running example: one real layer
#
# Through all four notebooks we follow one real layer of the SmolLM2-135M model that ships with
# the project: `model.layers.29.mlp.down_proj`, the MLP down-projection of its last decoder block
# (`tutorials/example_layer.py` reads its weight from the model file). Here: what MXFP4 does to its
# weight, block by block: the first block's maximum, shared exponent and first codes, and over all
# blocks how often the block maximum saturates and how many bits the tensor takes.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(mx_spec.__file__).resolve().parents[1] / "tutorials"))
from example_layer import NAME, example_weight

weight = example_weight()
q = mx_spec.quantize(weight, "mxfp4_e2m1")  # blocks of 32 along the rows (the reduction dimension)
first = weight[0, :32]
X = int(q.scales[0, 0]) - mx_spec.E8M0_BIAS
print(f"{NAME}: weight {weight.shape}, {q.scales.size:,} MX blocks of 32")
print(f"first block: max |v| = {np.abs(first).max():.5f}, shared exponent X = {X}, "
      f"scaled maximum {np.abs(first).max() / 2.0**X:.3f} (FP4's largest value is 6)")
print("first 6 elements:", " ".join(f"{v:+.4f}" for v in first[:6]))
print("their FP4 codes: ", " ".join(f"{c:04b}" for c in q.elements[0, :6]))
print("decoded:         ", " ".join(f"{v:+.4f}" for v in mx_spec.dequantize(q)[0, :6]))
block_max = np.abs(weight.reshape(weight.shape[0], -1, 32)).max(axis=-1)
scaled_max = block_max / 2.0 ** (q.scales.astype(np.float64) - mx_spec.E8M0_BIAS)
print(f"blocks whose maximum saturates (scaled maximum above 6): {np.mean(scaled_max > 6):.1%}")
print(f"stored: {mx_spec.pack(q).size + q.scales.size:,} bytes in MXFP4 against {weight.nbytes:,} in float32")

# %% [markdown]
# ## 4. Rounding ties
#
# After scaling, each element is rounded to the nearest grid point; the specification's choice
# for a tie (a value exactly halfway) is **round half to even** (`rounding="rne"`): the code
# with an even last mantissa bit wins. Some libraries (e.g. microxcaling) round ties **away from
# zero** (`rounding="away"`). On the FP4 grid the midpoints 0.25, 1.25, 2.5 and 5 differ:

# %%
ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=np.float32)
rows = ["| scaled value | RNE code → value | away code → value |", "|---:|:---:|:---:|"]
rne = mx_spec.encode_elements(ties, "e2m1", rounding="rne")
away = mx_spec.encode_elements(ties, "e2m1", rounding="away")
for y, a, b in zip(ties, rne, away):
    va, vb = mx_spec.decode_elements(np.array([a, b], dtype=np.uint8), "e2m1")
    rows.append(f"| {y:g} | `{a:04b}` → {va:g} | `{b:04b}` → {vb:g} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# RNE is unbiased on average (half the ties go down, half up); "away" pushes every tie
# outwards and so inflates magnitudes slightly. The difference is invisible on random data but
# a bit-exact implementation must agree on every tie — the golden vectors test exactly these.
#
# ## 5. Packing
#
# MX stores the element codes densely and the E8M0 scale beside them (one byte per block).
# `mx_spec.pack` writes FP4 two codes per byte, **even-index element in the low nibble**; FP6
# as a little-endian bit stream (four codes in three bytes); FP8 and INT8 one code per byte.
# A 32-element FP4 block is therefore 16 bytes + 1 scale byte = **4.25 bits per element**.

# %%
x = np.linspace(-3.0, 3.0, 32, dtype=np.float32)
mx = mx_spec.quantize(x, "mxfp4_e2m1")
packed = mx_spec.pack(mx)
print("scale code:", hex(int(mx.scales[0])), "-> 2^%d" % (int(mx.scales[0]) - 127))
print("first codes:", " ".join(f"{c:X}" for c in mx.elements[:4]))
print("first bytes:", " ".join(f"{b:02X}" for b in packed[:2]), "(low nibble = even element)")
print(f"{x.size} elements -> {packed.size} element bytes + {mx.scales.size} scale byte")
back = mx_spec.unpack(packed, "mxfp4_e2m1", x.shape, scales=mx.scales)
assert np.array_equal(back.elements, mx.elements)
fp6 = mx_spec.quantize(x, "mxfp6_e3m2")
print("FP6 E3M2:", x.size, "elements ->", mx_spec.pack(fp6).size, "bytes")

# %% [markdown]
# ## 6. Verifying an implementation against the golden vectors
#
# `golden/<format>.json` holds, for every MX format, inputs (as exact bit patterns) and the
# expected scale codes, element codes, packed bytes and decoded values, covering the spec rule
# and the scale/rounding variants: exhaustive grids, every tie, saturation, signed zeros,
# all-zero blocks, scale clamping, float32 subnormals, NaN/Inf, float64/float16/bfloat16 inputs
# and random blocks. `mx_spec.conformance.verify.verify_quantizer(fn, ...)` runs a candidate
# `fn(x, fmt, *, block_size, axis, scale_mode, rounding)` over the golden inputs and compares
# its `(scales, elements)` codes bit for bit; a candidate raises `NotImplementedError` for
# inputs it does not support, which are counted as *skipped*, never as passed.
#
# As the example we verify **torchao**'s MX emulation (`torchao.prototype.mx_formats`). All we
# have to write is a thin adapter that speaks the verifier's contract: torchao blocks the last
# axis of a float32/bfloat16 tensor and returns FP4 codes packed two per byte, which we unpack.
# (The complete adapter, with all formats and scale modes, is
# `benchmarks/torchao_mx_adapter.py`; this one covers the spec mode only.)
#
# **Expect a FAIL below.** torchao is known to disagree with the specification in a few corner
# cases that do not occur in LLM tensors (explained after the output), so the report prints
# `FAIL` with the list of those mismatches. This is the verifier doing its job, not a broken
# notebook.

# %%
import contextlib
import io
import logging

import torch

logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # a torch deprecation note
# torchao prints notes about its optional CUDA kernels while importing; they do not matter here.
with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
    warnings.simplefilter("ignore")
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.kernels import unpack_uint4
    from torchao.prototype.mx_formats.mx_tensor import to_mx

TORCHAO_DTYPES = {"mxfp8_e4m3": torch.float8_e4m3fn, "mxfp4_e2m1": torch.float4_e2m1fn_x2}


def torchao_quantizer(x, fmt, *, block_size, axis, scale_mode, rounding):
    """torchao to_mx in mx_spec's code layout; NotImplementedError outside what it supports."""
    if fmt not in TORCHAO_DTYPES or (scale_mode, rounding) != ("floor", "rne"):
        raise NotImplementedError(f"this adapter covers {sorted(TORCHAO_DTYPES)} in floor/rne only")
    if x.dtype != np.float32 or x.size == 0 or axis not in (-1, x.ndim - 1) or x.shape[-1] % block_size:
        raise NotImplementedError("torchao blocks the last axis of non-empty float32 input, whole blocks only")
    if x.size % 2:
        raise NotImplementedError("torchao packs FP4 codes in pairs")
    scale, data = to_mx(torch.from_numpy(x), TORCHAO_DTYPES[fmt], block_size, ScaleCalculationMode.FLOOR)
    scales = scale.view(torch.uint8).numpy().reshape(*x.shape[:-1], -1)
    raw = data.view(torch.uint8).contiguous()
    codes = unpack_uint4(raw) if fmt == "mxfp4_e2m1" else raw
    return scales, codes.numpy().reshape(x.shape)


from mx_spec.conformance.verify import verify_quantizer

# The golden inputs include NaN/Inf blocks on purpose; silence numpy's "invalid value" notes.
with np.errstate(invalid="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    report = verify_quantizer(torchao_quantizer, formats=["mxfp8_e4m3", "mxfp4_e2m1"],
                              modes=[("floor", "rne")])
print(report.summary(max_mismatches=3))

# Where does torchao disagree?  Case ids read format/scale mode/rounding/group/number.
from collections import Counter

groups = Counter(m.case_id.split("/")[3] for m in report.mismatches)
element_mm = [m for m in report.mismatches if m.field == "elements"]
in_scale0 = sum("scale 0x00" in m.detail for m in element_mm)
print("\nmismatching items per case group:", dict(groups))
print(f"{in_scale0} of {len(element_mm)} element mismatches lie in blocks whose scale code is 0x00")
print("scale-code mismatches (expected, got):",
      dict(Counter((m.expected, m.actual) for m in report.mismatches if m.field == "scales")))

# %% [markdown]
# The table shows how many golden cases torchao matches bit for bit, how many it does not
# support through this adapter (skipped: float64/float16 inputs, ragged blocks, other axes) and
# which items differ. Each mismatch names the case, the element, the expected and the actual
# code and the input bit pattern, so a disagreement can be traced to a rule. torchao's
# differences are confined to corner cases that do not occur in LLM tensors: blocks whose scale
# is the smallest E8M0 value $2^{-127}$ (all element mismatches, in the `scale_clamp`, `scale_boundary`,
# `fp32_subnormal`, `random` and `layout` groups: for such tiny blocks torchao divides by
# $2^{-126}$ instead, a clamp that avoids a float32 subnormal) and blocks holding ±Inf
# (`nan_inf`: torchao gives a finite scale, the spec conversion a NaN scale `0xff`). The test suite pins
# these deviations one by one in `tests/numbers/test_peers_torchao.py`, so any change on either side
# is noticed.
#
# The verifier catches real bugs too. Here is `mx_spec.quantize` itself with the *wrong tie
# rule* (ties away from zero while the golden file asks for ties to even):

# %%
def away_instead_of_even(x, fmt, **kwargs):
    kwargs["rounding"] = "away"  # the bug: ignore the requested rounding
    return mx_spec.quantize(x, fmt, **kwargs)


with np.errstate(invalid="ignore"):
    buggy = verify_quantizer(away_instead_of_even, formats=["mxfp4_e2m1"], modes=[("floor", "rne")])
    correct = verify_quantizer(mx_spec.quantize, formats=["mxfp4_e2m1"], modes=[("floor", "rne")])
print(buggy.summary(max_mismatches=3))
print()
print("mx_spec.quantize itself:", "PASS" if correct.ok else "FAIL",
      f"({correct.n_passed} cases)")

# %% [markdown]
# Only the tie cases fail, and the first mismatch pinpoints it: input `0x3e800000` is 0.25,
# exactly halfway between FP4's 0 and 0.5; RNE gives code `0b0000`, the buggy version `0b0001`.
#
# **To verify your own MX implementation**, wrap it like `torchao_quantizer` above and call
# `verify_quantizer`, or write its outputs to a JSON/NPZ file and run `mx-spec verify FILE`
# (see `golden/README.md` for the schema).
#
# ## Recap
#
# | concept | rule | in `mx_spec` |
# |---|---|---|
# | MX block | 32 elements share one E8M0 scale: $v_i = 2^X P_i$ | `quantize`, `dequantize` |
# | element ExMy | $(-1)^s 2^{e-b}(1 + m/2^M)$, subnormal at $e = 0$; FP4/FP6 have no Inf/NaN | `ELEMENT_FORMATS`, `decode_table` |
# | E8M0 | $2^{c-127}$, `0xFF` = NaN | `decode_e8m0` |
# | shared exponent | $X = \lfloor\log_2 a_{\max}\rfloor - e_{\max}$ (`floor`); maxima above the grid saturate | `scale_mode` |
# | ties | round half to even (spec) vs away | `rounding` |
# | storage | element bits + 8/32 for the scale (FP4: 4.25) | `pack`, `MX_FORMATS` |
# | checking an implementation | bit-exact against the golden vectors | `verify.verify_quantizer`, `mx-spec verify` |
#
# ## Exercises
#
# 1. Decode the FP6 E2M3 code `0b001010` by hand, then check with `mx_spec.decode_elements`.
# 2. A block's largest magnitude is 13.0 and the other elements are small. Which shared
#    exponent $X$ does the `floor` rule pick for MXFP4, and what does 13.0 become? Does any rule
#    of section 3 keep it exactly?
# 3. How many bits per element does MXFP6 store with blocks of 32, and with blocks of 16?
# 4. **Build it, then check it.** Write an MXFP4 quantizer in about 20 lines of numpy, without
#    calling `mx_spec`'s quantizer: `my_mxfp4(x, fmt, *, block_size, axis, scale_mode,
#    rounding)` returning `(scales, elements)` as uint8 codes laid out like `mx_spec.quantize`'s,
#    raising `NotImplementedError` for any other format or mode. Then make
#    `verify_quantizer(my_mxfp4, formats=["mxfp4_e2m1"], modes=[("floor", "rne")])` print
#    `PASS` (no case failed, none skipped). The golden cases will teach you the corners: inputs
#    in float64, float16 and bfloat16, blocks along another axis, a short last block, an empty
#    tensor, all-zero blocks, NaN and Inf, float32 subnormals.
#
# Each solution below is a collapsed code cell (click to open it): it computes the answer and
# asserts it, and the build runs it, so a solution that stops being true fails the build.
#
# <details><summary>Solution notes (click)</summary>
#
# 1. `0 01 010`: sign +, exponent field 1 with bias 1, so $2^0$; mantissa field 2 of $2^3$: the
#    value is $1 + 2/8$ (the cell prints it).
# 2. $X = \lfloor\log_2 13\rfloor - 2$; 13.0 scaled by $2^{-X}$ lies above FP4's largest value 6
#    and saturates. `rceil` avoids the clamp with a scale one binade larger, but the scaled value
#    then falls between two FP4 grid points: neither rule keeps 13 exactly (the cell prints both).
# 3. The element bits plus one 8-bit scale shared by the block: $6 + 8/k$ for blocks of $k$.
# 4. The collapsed cell holds one way (21 lines): compute in float64 (every input dtype converts
#    exactly), move the blocked axis last and pad a short block with zeros (they do not change its
#    maximum), take $X = \lfloor\log_2 a_{\max}\rfloor - 2$ with `np.frexp` (exact, subnormals
#    too) clamped to $[-127, 127]$, round $|y|$ on steps of 0.5, 1, 2 per binade with
#    `np.round` (half to even: the even multiple of the step is the even code), saturate at 6,
#    and give a block holding NaN or Inf the NaN scale `0xFF`.
#
# </details>

# %% [solution]
# Exercise 1: decode 0b001010 as E2M3.
claimed = 1.25
value = float(mx_spec.decode_elements(np.array([0b001010], dtype=np.uint8), "e2m3")[0])
print(f"exercise 1: E2M3 code 0b001010 = {value:g}")
assert value == claimed, (value, claimed)

# %% [solution]
# Exercise 2: a block whose maximum is 13.0, under the floor rule and under rceil.
claimed = {"floor": (1, 12.0), "rceil": (2, 12.0)}
block13 = np.zeros(32, dtype=np.float32)
block13[:2] = [13.0, 0.01]
for mode, (claimed_x, claimed_value) in claimed.items():
    q = mx_spec.quantize(block13, "mxfp4_e2m1", scale_mode=mode)
    x_scale, back = int(q.scales[0]) - mx_spec.E8M0_BIAS, float(mx_spec.dequantize(q)[0])
    print(f"exercise 2, {mode:>5}: X = {x_scale}, 13.0 -> {back:g}")
    assert (x_scale, back) == (claimed_x, claimed_value)
assert all(float(mx_spec.quantize_dequantize(block13, "mxfp4_e2m1", scale_mode=m)[0]) != 13.0 for m in mx_spec.SCALE_MODES)

# %% [solution]
# Exercise 3: stored bits per element of MXFP6, counted from what mx_spec.pack stores.
claimed = {32: 6.25, 16: 6.5}
x256 = np.linspace(-3.0, 3.0, 256, dtype=np.float32)
for k, claimed_bits in claimed.items():
    q = mx_spec.quantize(x256, "mxfp6_e2m3", block_size=k)
    bits = 8 * (mx_spec.pack(q).size + q.scales.size) / x256.size
    print(f"exercise 3: MXFP6 with blocks of {k}: {bits:g} bits per element")
    assert bits == claimed_bits


# %% [solution]
# Exercise 4: an MXFP4 quantizer in numpy, checked against the golden vectors.
def my_mxfp4(x, fmt, *, block_size, axis, scale_mode, rounding):
    """MXFP4 (E2M1) codes of x: OCP MX v1.0 §6.3 floor scale, round half to even, saturate at 6."""
    if (fmt, scale_mode, rounding) != ("mxfp4_e2m1", "floor", "rne"):
        raise NotImplementedError("only MXFP4 with the spec's floor scale and ties to even")
    v = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)  # every input dtype is exact in float64
    n = v.shape[-1]
    pad = -n % block_size  # a short last block: zeros do not change its maximum
    blocks = np.pad(v, [(0, 0)] * (v.ndim - 1) + [(0, pad)]).reshape(*v.shape[:-1], (n + pad) // block_size, block_size)
    amax = np.max(np.abs(blocks), axis=-1, keepdims=True)  # NaN if the block holds a NaN
    exponent = np.frexp(np.where(amax > 0, amax, 1.0))[1] - 1  # floor(log2 amax), exact, subnormals too
    X = np.clip(np.where(amax > 0, exponent - 2, -127), -127, 127)  # emax of E2M1 is 2; a zero block: 2^-127
    y = np.abs(blocks) / 2.0**X
    step = 2.0 ** (np.maximum(np.floor(np.log2(np.maximum(y, 1.0))), 0) - 1)  # 0.5 below 2, then 1, then 2
    mag = np.minimum(np.round(y / step) * step, 6.0)  # np.round: half to even; saturate at 6
    index = np.searchsorted([0, 0.5, 1, 1.5, 2, 3, 4, 6], mag)  # the code of each magnitude
    codes = (np.signbit(blocks) << 3 | index).astype(np.uint8)
    bad = ~np.isfinite(amax)  # NaN or Inf in the block: NaN scale, codes 0
    codes = np.where(bad, 0, codes).reshape(*v.shape[:-1], n + pad)[..., :n]
    scales = np.where(bad, 255, X + 127).astype(np.uint8)[..., 0]
    return np.moveaxis(scales, -1, axis), np.moveaxis(codes, -1, axis)


mine = verify_quantizer(my_mxfp4, formats=["mxfp4_e2m1"], modes=[("floor", "rne")])
print("exercise 4:", mine.summary().splitlines()[-1])
assert mine.verdict == "PASS", mine.summary(max_mismatches=3)

# %%
usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
print(f"notebook ran in {time.perf_counter() - start:.0f} s, peak memory {usage:.0f} MiB")
