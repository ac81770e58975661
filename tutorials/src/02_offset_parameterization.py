# Source of tutorials/02_offset_parameterization.ipynb (build: .venv/bin/python tutorials/build.py 02)

# %% [markdown]
# # 02 · The offset parameterization: one real number moves a layer between MX formats
#
# dMX learns **one format per layer** by gradient descent. Formats are discrete, so dMX embeds
# them in a continuous family of minifloats controlled by a real *offset* $\beta$:
#
# $$ E(\beta) = 2 + \beta, \qquad M(\beta) = 1 + \beta, \qquad
#    b(\beta) = 1 + E(\beta) + M(\beta) = 4 + 2\beta \ \text{bits}, \qquad \beta \in [0, 2]. $$
#
# At the integer points the family *is* a standard MX format: $\beta=0$ is MXFP4 E2M1,
# $\beta=1$ MXFP6 E3M2, $\beta=2$ MXFP8 E4M3. In between, $E$ and $M$ are fractional and the
# "format" is a generalised minifloat (`mx_spec.minifloat`) that still uses an E8M0 power-of-two
# block scale. This notebook shows how the grid, the largest value and the bits move with
# $\beta$, derives the gradient $\partial \mathcal{L}/\partial\beta$, and introduces the second
# family, `fp6_fp4`.
#
# **After this notebook you can** compute $E$, $M$ and the bits of the family at any $\beta$;
# say how range and precision change with $\beta$; state the two block-scale rules at fractional
# widths (`maxfloat`, the default, and `emax`) and where the default's error cliffs lie; derive
# $\partial\mathcal{L}/\partial\beta$ through the quantizer and say what it does not see; and
# tell which formats a family can deploy.
#
# **Running it:** about 10 s and 0.35 GB of memory on 2 shared CPU cores (measured; the last cell
# prints this run's), within 40 s on the test machine; data: random Gaussian weights and one weight of the embedded
# model file (the running example);
# command: `make tutorials` opens the folder in JupyterLab, `.venv/bin/python tutorials/build.py 02`
# rebuilds and re-executes it.
#
# References: the [OCP MX v1.0 specification](https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf),
# the dMX paper ([arXiv 2606.04115](https://arxiv.org/abs/2606.04115)),
# [torchao's MX formats](https://github.com/pytorch/ao/tree/main/torchao/prototype/mx_formats)
# and the project's [README](../README.md).

# %%
%matplotlib inline
import resource
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import mx_spec
from dmx.autograd import mx_qdq_minifloat
from dmx.family import FAMILIES, get_family
from mx_spec.minifloat import FRACTIONAL_SCALES, minifloat_params, quantize_dequantize_minifloat

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (7, 3)})
start = time.perf_counter()
fp8_fp4 = get_family("fp8_fp4")
rows = ["| family | $E(\\beta)$ | $M(\\beta)$ | bits at $\\beta$ = 0, 1, 2 | formats at the ends |",
        "|---|---|---|---|---|"]
for name, fam in FAMILIES.items():
    bits = ", ".join(f"{float(fam.element_bits(b)):g}" for b in (0.0, 1.0, 2.0))
    rows.append(f"| `{name}` | {fam.ebits0:g} + {fam.ebits_slope:g}β | {fam.mbits0:g} + "
                f"{fam.mbits_slope:g}β | {bits} | {fam.low_format} → {fam.high_format} |")
display(Markdown("\n".join(rows)))
print("fp8_fp4 at beta = 0, 1, 2:", [fp8_fp4.format_at(b) for b in (0, 1, 2)])

# %% [markdown]
# ## 1. A minifloat with real-valued widths
#
# For real $E \ge 1$, $M \ge 0$ the formulas of an ExMy format (OCP MX v1.0 §5.3, all exponent
# codes normal, no Inf/NaN) are kept as they are:
#
# $$ \text{bias} = 2^{E-1}-1,\quad e_{\max} = 2^{E-1},\quad e_{\min} = 1-\text{bias} = 2 - 2^{E-1},
#    \quad \text{max} = \min\bigl((2-2^{-M})\,2^{e_{\max}},\ 448\bigr). $$
#
# The cap 448 makes the $\beta = 2$ end exactly E4M3 (which reserves `S.1111.111` for NaN). A
# block is scaled by a power of two $2^X$ (the E8M0 scale; section 2 shows the two rules for
# $X$ at fractional widths) and each scaled value $y$ is rounded to the grid of step
# $\Delta(y) = 2^{\max(\lfloor \log_2 |y|\rfloor,\ e_{\min}) - M}$, saturating at ±max.
# **$M$ alone sets the relative precision** ($2^M$ steps per binade); **$E$ moves the range**:
# the saturation point grows doubly exponentially with $E$, the subnormal threshold shrinks.

# %%
betas = np.linspace(0.0, 2.0, 201)
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
# Dashed for the second family: in the right panel both families have M = 1 + beta, so their
# curves lie exactly on top of each other.
for (name, fam), style in zip(FAMILIES.items(), ("-", "--")):
    params = [minifloat_params(fam.ebits(b), fam.mbits(b)) for b in betas]
    axes[0].plot(betas, [float(fam.element_bits(b)) for b in betas], style, label=name)
    axes[1].plot(betas, [p.max_normal for p in params], style, label=name)
    axes[2].plot(betas, [2.0 ** -p.mbits for p in params], style, label=name)
axes[0].set(xlabel=r"$\beta$", ylabel="element bits $1+E+M$", title="bits")
axes[1].set(xlabel=r"$\beta$", ylabel="largest value", yscale="log", title="max normal (range)")
axes[2].set(xlabel=r"$\beta$", ylabel=r"$2^{-M}$", yscale="log", title="relative step (both: M = 1 + β)")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The grid itself, for a few offsets: `mx_spec.round_to_element_grid` (the project's single
# rounding primitive, which accepts real widths) applied to a ramp of already-scaled values.
# At $\beta=0$ the staircase has FP4's eight levels up to 6; as $\beta$ grows, steps get finer
# and the saturation level rises.

# %%
y = np.linspace(0.0, 16.0, 4001)
fig, ax = plt.subplots(figsize=(7, 3.2))
for beta in (0.0, 0.5, 1.0, 1.5):
    p = minifloat_params(fp8_fp4.ebits(beta), fp8_fp4.mbits(beta))
    q = mx_spec.round_to_element_grid(y, emin=p.emin, mbits=p.mbits, max_normal=p.max_normal)
    ax.plot(y, q, label=fr"$\beta$={beta:g}: E={p.ebits:g}, M={p.mbits:g}, max={p.max_normal:.3g}")
ax.plot(y, y, "k:", linewidth=0.8)
ax.set(xlabel="scaled value $y$", ylabel="rounded value", title="fp8_fp4 element grid at several offsets")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# At the integer points the generalised minifloat reproduces the standard formats **bit for
# bit** — the same rounding code runs in both:

# %%
rng = np.random.default_rng(0)
weights = rng.standard_normal((256, 512)).astype(np.float32)
for beta in (0, 1, 2):
    fmt = fp8_fp4.format_at(beta)
    same = np.array_equal(
        quantize_dequantize_minifloat(weights, fp8_fp4.ebits(beta), fp8_fp4.mbits(beta)),
        mx_spec.quantize_dequantize(weights, fmt),
    )
    print(f"beta={beta}: minifloat(E={fp8_fp4.ebits(beta)}, M={fp8_fp4.mbits(beta)}) == {fmt}: {same}")

# %% [markdown]
# ## 2. The block scale at fractional widths: `maxfloat` (the default) and `emax`
#
# The spec's floor rule (§6.3) is $X = \lfloor\log_2 a_{\max}\rfloor - e_{\max}$ with the
# element's largest exponent $e_{\max}$, an integer for every standard format. At a fractional
# width there are two natural ways to continue it (`mx_spec.minifloat`, `fractional_scale=`):
#
# * **`maxfloat`** (the default, the authors' rule, Brevitas `FloatScaling`):
#   $X = \lfloor\log_2 a_{\max}\rfloor - \lfloor\log_2 \text{max}\rfloor$. The format's scale
#   exponent is the integer $\lfloor\log_2 \text{max}\rfloor$: it moves only when the largest
#   value crosses a power of two.
# * **`emax`** (the project's first rule): $X = \lfloor\log_2 a_{\max} - e_{\max}\rfloor$ with the
#   real $e_{\max} = 2^{E-1}$: the scale moves whenever $e_{\max}$ passes $\log_2 a_{\max}$ minus
#   an integer.
#
# For every standard format $\text{max} = (2 - 2^{-M})\,2^{e_{\max}}$ lies in
# $[2^{e_{\max}}, 2^{e_{\max}+1})$ (E4M3: $\lfloor\log_2 448\rfloor = 8$), so
# $\lfloor\log_2\text{max}\rfloor = e_{\max}$ and **the two rules agree bit for bit at every
# deployable width** (checked below on the Gaussian weights of section 1 at every integer width of
# both families, as `tests/numbers/test_minifloat.py` does); they differ only while the offsets learn. The left panel shows
# the exponent each rule scales against; the right one what it means for a block whose maximum is
# fixed: the fraction of the top binade that saturates.

# %%
fine = np.linspace(0.0, 2.0, 801)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
for rule, style, width in (("emax", "-", 3.0), ("maxfloat", "--", 1.5)):
    params = [minifloat_params(fp8_fp4.ebits(b), fp8_fp4.mbits(b), fractional_scale=rule) for b in fine]
    axes[0].plot(fine, [p.scale_emax for p in params], style, lw=width, label=f"{rule}: exponent of the scale rule")
    # saturated share of the top binade [2^s, 2^(s+1)) of scaled block maxima: (2^(s+1) - max) / 2^s, at least 0
    share = [max(0.0, 2.0 - p.max_normal / 2.0**p.scale_emax) for p in params]
    axes[1].plot(fine, share, style, lw=width, label=rule)
log2_max = [np.log2(minifloat_params(fp8_fp4.ebits(b), fp8_fp4.mbits(b)).max_normal) for b in fine]
axes[0].plot(fine, log2_max, "k:", lw=1, label=r"$\log_2$ max (the real width's largest value)")
axes[0].set(xlabel=r"$\beta$ (fp8_fp4)", ylabel="exponent", title="the exponent each rule scales against")
axes[1].set(xlabel=r"$\beta$ (fp8_fp4)", ylabel="share of the top binade", title="scaled block maxima that saturate")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

same = {}
for name, fam in FAMILIES.items():
    for beta in (0.0, 1.0, 2.0):
        e, m = fam.ebits(beta), fam.mbits(beta)
        a, b = (quantize_dequantize_minifloat(weights, e, m, fractional_scale=r) for r in FRACTIONAL_SCALES)
        same[(name, beta)] = bool(np.array_equal(a, b))
        print(f"{name} beta={beta:g} (E={float(e):g}, M={float(m):g}): maxfloat and emax give the same bits "
              f"on {weights.size:,} weights: {same[(name, beta)]}")
assert all(same.values())

# %% [markdown]
# ## 3. Quantization error as a function of β: the cliffs of `maxfloat`
#
# With uniform rounding noise of variance $\Delta^2/12$ and $\Delta \propto 2^{-M}$, the mean
# squared error of MX-quantizing Gaussian weights should fall like $4^{-\beta}$ (dashed). It
# does under the `emax` rule, apart from small jags where its scale changes binade. Under the
# default `maxfloat` rule it does **not**: the error jumps up at every $\beta$ where the largest
# value $\text{max}(\beta)$ crosses a power of two (grey lines, computed from
# `minifloat_params`). Just before a crossing, $\text{max}$ is almost $2^{s+1}$ and nearly
# nothing saturates; just after it, the scale exponent is $s + 1$, so the scaled block maxima lie
# in $[2^{s+1}, 2^{s+2})$ while $\text{max}$ is barely above $2^{s+1}$: nearly every block
# maximum saturates (right panel above), each losing up to half its value. Between crossings the
# error falls again as $\text{max}$ grows. The `emax` rule avoids this because its scale follows
# the real $e_{\max}$ instead of the integer part of $\log_2\text{max}$ (left panel above).
# The table printed below the figure gives each cliff's position and how much the error jumps there.

# %%
x = torch.from_numpy(weights)


def mse(fam, beta, rule="maxfloat"):
    q = quantize_dequantize_minifloat(weights, fam.ebits(beta), fam.mbits(beta), fractional_scale=rule)
    return float(np.mean((q - weights) ** 2, dtype=np.float64))


def cliffs(fam, betas):
    """The offsets (on the grid ``betas``) where max(beta) crosses a power of two: maxfloat's scale moves."""
    s = np.array([minifloat_params(fam.ebits(b), fam.mbits(b)).scale_emax for b in betas])
    return betas[1:][np.diff(s) != 0]


fig, ax = plt.subplots(figsize=(8, 3.4))
grid = np.linspace(0.0, 2.0, 161)
for name, fam in FAMILIES.items():
    for rule, style in (("maxfloat", "-"), ("emax", "-.")):
        ax.plot(grid, [mse(fam, b, rule) for b in grid], style, label=f"{name}, {rule}")
    ax.plot(grid, mse(fam, 0.0) * 4.0 ** (-fam.mbits_slope * grid), "--", lw=1,
            label=fr"{name}: $\Delta^2/12$ law, MSE(0)$\cdot 4^{{-\beta}}$")
for c in cliffs(fp8_fp4, fine):
    ax.axvline(c, color="gray", lw=0.8, alpha=0.6)
ax.set(yscale="log", xlabel=r"$\beta$", ylabel="MSE", title="MX quantization error of N(0,1) weights (grey: fp8_fp4's cliffs)")
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
plt.show()

rows = ["| family | cliff at β | max just after | MSE just before | MSE just after | jump | after / plain FP4 |",
        "|---|---:|---:|---:|---:|---:|---:|"]
for name, fam in FAMILIES.items():
    for c in cliffs(fam, fine):
        before, after = mse(fam, c - 0.0025), mse(fam, c)
        top = minifloat_params(fam.ebits(c), fam.mbits(c)).max_normal
        rows.append(f"| {name} | {c:.4f} | {top:.4g} | {before:.3e} | {after:.3e} | ×{after / before:.2f} | "
                    f"{after / mse(fam, 0.0):.2f} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# **On the running example.** The same cliffs on a real weight: the first 128 rows of
# `model.layers.29.mlp.down_proj` (notebook 01), as relative squared error
# $\lVert\hat W - W\rVert^2 / \lVert W\rVert^2$ just before and just after each `fp8_fp4` cliff,
# under both rules.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(mx_spec.__file__).resolve().parents[1] / "tutorials"))
from example_layer import NAME, example_weight

real = example_weight()[:128]


def relative_error(beta, rule):
    q = quantize_dequantize_minifloat(real, fp8_fp4.ebits(beta), fp8_fp4.mbits(beta), fractional_scale=rule)
    return float(((q - real) ** 2).sum(dtype=np.float64) / (real.astype(np.float64) ** 2).sum())


rows = ["| cliff at β | maxfloat just before | maxfloat just after | emax just after |", "|---:|---:|---:|---:|"]
jumps = []
for c in cliffs(fp8_fp4, fine):
    before, after = relative_error(c - 0.0025, "maxfloat"), relative_error(c, "maxfloat")
    jumps.append(after / before)
    rows.append(f"| {c:.4f} | {before:.3e} | {after:.3e} | {relative_error(c, 'emax'):.3e} |")
display(Markdown(f"**`{NAME}`**, rows 0-127 ({real.size:,} weights):\n\n" + "\n".join(rows)))
assert min(jumps) > 1  # the error jumps up at every cliff on the real weight too

# %% [markdown]
# `fp6_fp4` has no row: its $E$ stays 2, so its largest value only grows from 6 to 7.5 and stays
# in the binade $[4, 8)$, where both rules scale against 2. `fp8_fp4`'s range grows
# doubly exponentially with $\beta$ and crosses a power of two again and again.
#
# ## 4. The gradient with respect to β
#
# Write the dequantized value of an in-range element as $\hat x = s\,\Delta\,k$ with block scale
# $s = 2^X$ and integer $k = \operatorname{round}(y/\Delta)$, $y = x/s$. Treating the rounding
# as straight-through *in $y/\Delta$* (the LSQ step-size rule, $\partial k/\partial\Delta =
# \partial(y/\Delta)/\partial\Delta$):
#
# $$ \frac{\partial \hat x}{\partial \Delta} = s\Bigl(k - \frac{y}{\Delta}\Bigr)
#    = \frac{\hat x - x}{\Delta}. $$
#
# For a normal element $\Delta = 2^{\lfloor\log_2|y|\rfloor - M}$, so
# $\partial\Delta/\partial M = -\ln 2\cdot\Delta$ and $\partial\Delta/\partial E = 0$; for a
# subnormal one $\Delta = 2^{e_{\min}-M}$ with $e_{\min} = 2 - 2^{E-1}$, which adds
# $\partial\Delta/\partial E = -(\ln 2)^2\, 2^{E-1}\Delta$. Hence for in-range elements
#
# $$ \frac{\partial\hat x}{\partial M} = \ln 2\,(x - \hat x), \qquad
#    \frac{\partial\hat x}{\partial E} = (\ln 2)^2\, 2^{E-1}\,(x-\hat x)\ \ \text{(subnormals only)}, $$
#
# and for saturated elements, $\hat x = \operatorname{sign}(x)\,s\cdot\text{max}$ is
# differentiated through the largest value
# $\text{max} = (2-2^{-M})\,2^{2^{E-1}}$:
#
# $$ \frac{\partial\hat x}{\partial M} = \operatorname{sign}(x)\, s \ln 2\; 2^{e_{\max}-M}, \qquad
#    \frac{\partial\hat x}{\partial E} = \operatorname{sign}(x)\, s\cdot\text{max}\cdot(\ln 2)^2\,2^{E-1}. $$
#
# The chain rule through the family gives
# $\frac{\partial\mathcal L}{\partial\beta} = \frac{\partial\mathcal L}{\partial E}\,E'(\beta) +
# \frac{\partial\mathcal L}{\partial M}\,M'(\beta)$ with $E' = M' = 1$ for `fp8_fp4` and
# $E' = 0,\ M' = 1$ for `fp6_fp4`.
#
# **Sanity check.** For the squared error $\mathcal L = \overline{(\hat x - x)^2}$ of in-range
# elements the $M$ part is $\overline{2(\hat x - x)\ln 2\,(x-\hat x)} = -2\ln 2\cdot\mathcal L$:
# exactly the slope of the $\Delta^2/12$ law ($\mathcal L \propto 4^{-M}$). The bridge
# `dmx.autograd.mx_qdq_minifloat` implements these formulas in its backward pass (its forward is
# the numpy `mx_spec` code); below we compare its gradient with $-2\ln 2\cdot\mathcal L$ and with
# a finite difference over a wide step $h = 0.1$ (which averages out the jagged details).

# %%
def autograd_parts(fam, beta):
    """(dL/dbeta, dL/dE, dL/dM) of the MSE from the autograd bridge."""
    b = torch.tensor(float(beta), requires_grad=True)
    e, m = fam.ebits(b), fam.mbits(b)
    e.retain_grad(), m.retain_grad()
    loss = ((mx_qdq_minifloat(x, e, m) - x) ** 2).mean()
    loss.backward()
    return float(b.grad), float(e.grad), float(m.grad)


fam = get_family("fp6_fp4")
rows = ["| β | autograd dL/dβ | $-2\\ln 2\\cdot\\mathcal{L}$ | finite difference, h = 0.1 |",
        "|---:|---:|---:|---:|"]
for beta in (0.25, 0.75, 1.25, 1.75):
    g, _, _ = autograd_parts(fam, beta)
    fd = (mse(fam, beta + 0.05) - mse(fam, beta - 0.05)) / 0.1
    rows.append(f"| {beta} | {g:.3e} | {-2 * np.log(2) * mse(fam, beta):.3e} | {fd:.3e} |")
display(Markdown("**fp6_fp4** (only $M$ moves):\n\n" + "\n".join(rows)))

rows = ["| β | dL/dβ | dL/dE (range) | dL/dM (precision) |", "|---:|---:|---:|---:|"]
for beta in (0.25, 0.75, 1.25, 1.75):
    g, ge, gm = autograd_parts(fp8_fp4, beta)
    rows.append(f"| {beta} | {g:.3e} | {ge:.3e} | {gm:.3e} |")
display(Markdown("**fp8_fp4** ($E$ and $M$ move together):\n\n" + "\n".join(rows)))

# %% [markdown]
# For `fp6_fp4` the autograd gradient is close to $-2\ln 2\cdot\mathcal L$ (the small rest is
# the saturation term) and has the sign and order of magnitude of the wide finite difference,
# while a finite difference over a small step would jump around with the jagged curve. For
# `fp8_fp4` the $E$ part adds the value of a wider range: fewer elements saturate when the
# maximum grows. It treats the block scale as fixed, while in the forward pass the `maxfloat`
# scale moves up a binade whenever the largest value crosses a power of two, which gives that
# range back and more (the cliffs of section 3); the $E$ part is therefore an optimistic estimate
# of the benefit of range. All parts are negative: more bits reduce the error, and the only force pushing
# $\beta$ down during calibration is the bit-budget penalty (notebook 03).
#
# **The gradient does not see the cliffs.** The block scale is piecewise constant in $E$ and
# $M$: its derivative is zero wherever it exists, and the surrogate treats the scale as fixed.
# So on both sides of a `maxfloat` cliff $\partial\mathcal L/\partial\beta$ is a smooth
# negative number ("more $\beta$, less error"), while stepping across the cliff *raises* the
# error. The cell below evaluates both just around `fp8_fp4`'s first cliff.

# %%
first = cliffs(fp8_fp4, fine)[0]
rows = ["| β | MSE (maxfloat) | autograd dL/dβ |", "|---:|---:|---:|"]
for beta in (first - 0.02, first - 0.0025, first, first + 0.02):
    rows.append(f"| {beta:.4f} | {mse(fp8_fp4, beta):.4e} | {autograd_parts(fp8_fp4, beta)[0]:.3e} |")
display(Markdown(f"**fp8_fp4 around its first cliff at β = {first:.4f}:**\n\n" + "\n".join(rows)))

# %% [markdown]
# Read the rows in order: the gradient is negative on every row, including the two just before
# the cliff, yet the error one row later is higher. A calibration that moves a layer across a
# cliff does not know it made that layer's error worse; it only finds out later through the task
# loss, if at all. The offsets do not stay at such points (the annealing of notebook 03 drives
# every layer to an end of the family, where both rules agree), so the cliffs shape the path of
# the calibration, not the deployed formats.
#
# ## 5. From the learnable β̂ to β
#
# The optimiser does not update $\beta$ directly but an unconstrained $\hat\beta$; notebook 03
# shows the temperature sigmoid $\beta = 2\,\sigma\bigl(20\,T\,(|\hat\beta|/2 - 1/2)\bigr)$ that
# maps it into $[0, 2]$ and is annealed so that every layer ends at one of the family's two
# **ends**, $\beta = 0$ or $\beta = 2$ (MXFP4 or MXFP8 for `fp8_fp4`): the middle integer point
# $\beta = 1$ (MXFP6 E3M2) is a real MX format too, but the hard rule never deploys it (section
# 6). Its derivative, the last link of the chain,
#
# $$ \frac{\partial\beta}{\partial\hat\beta} = 20\,T\,\sigma(1-\sigma)\,\operatorname{sign}(\hat\beta), $$
#
# is large near $|\hat\beta| = 1$ and vanishes far from it — which is why a hard, high
# temperature freezes the assignment at the end of calibration.
#
# ## 6. The `fp6_fp4` family
#
# `fp6_fp4` keeps $E = 2$ and moves only the mantissa, $M = 1 + \beta$: MXFP4 E2M1 at
# $\beta=0$, MXFP6 E2M3 at $\beta=2$. The range barely changes (max 6 → 7.5, see the plots in
# section 1); only the precision grows, and the error curve follows the $\Delta^2/12$ law closely.
# Use it for a 4–6-bit budget when FP8 is not wanted in the deployed model; `fp8_fp4` spans
# 4–8 bits. Both families deploy only their **ends**: the hard rule at the end of
# calibration picks $\beta \in \{0, \beta_{\max}\}$, so the middle point (E3M2 for `fp8_fp4`)
# is part of the path, not a deployment choice.

# %%
fp6 = get_family("fp6_fp4")
print("fp6_fp4 ends:", fp6.format_at(0), "->", fp6.format_at(2), "| element bits range:", fp6.bits_range)
for b in (0.0, 1.0, 2.0):
    p = minifloat_params(fp6.ebits(b), fp6.mbits(b))
    print(f"beta={b:g}: E={p.ebits:g} M={p.mbits:g} max={p.max_normal:g} bits={p.element_bits:g}")
try:
    fp6.format_at(1.0)
except ValueError as err:
    print("format_at(1.0) ->", err)

# %% [markdown]
# ## Recap
#
# | concept | formula | in code |
# |---|---|---|
# | `fp8_fp4` family | $E = 2+\beta$, $M = 1+\beta$, $b = 4 + 2\beta$, $\beta\in[0,2]$ | `get_family("fp8_fp4")` |
# | `fp6_fp4` family | $E = 2$, $M = 1+\beta$ | `get_family("fp6_fp4")` |
# | fractional format | generalised minifloat, still an E8M0 block scale | `mx_spec.minifloat` |
# | gradient through the quantizer | STE for the rounding, exact in $E$ and $M$ | `dmx.autograd.mx_qdq_minifloat` |
# | learnable $\hat\beta \to \beta$ | $2\sigma(20T(|\hat\beta|/2 - 1/2))$ | `dmx.offset.offset_to_beta` |
# | deployable formats | the family's two ends only | `family.format_at` |
#
# ## Exercises
#
# 1. At $\beta = 0.5$ in `fp8_fp4`, what are $E$, $M$ and the element bits?
# 2. Compute $\partial\beta/\partial\hat\beta$ at $\hat\beta = 1$ for $T = 0.4$ and $T = 20$, and at
#    $\hat\beta = 0$ for $T = 0.4$. What do the three numbers say about where and when the
#    offsets can move?
# 3. At $\beta = 0.5$ in `fp8_fp4`, which exponent does each scale rule scale against? Do the two
#    rules give the same bits on the Gaussian weights there, and if not, for what share of them
#    do they differ?
#
# Each solution is a collapsed code cell below (click to open it): it computes the answer and
# asserts it, so the build fails if a solution stops being true.
#
# <details><summary>Solution notes (click)</summary>
#
# 1. $E = 2 + \beta$, $M = 1 + \beta$, $b = 1 + E + M = 4 + 2\beta$.
# 2. $\partial\beta/\partial|\hat\beta| = 20\,T\,\sigma(1-\sigma)$. At the threshold
#    $|\hat\beta| = 1$, $\sigma = 1/2$ and the slope is $5T$: it gets steeper as $T$ rises. At
#    $\hat\beta = 0$ and $T = 0.4$, $\sigma = \sigma(-4)$ is small and so is the slope: a layer
#    that starts at $\hat\beta = 0$ (the default) moves slowly at first (notebook 04 shows the
#    consequence). Away from the threshold at $T = 20$ the slope is essentially 0: the assignment
#    is frozen.
# 3. `maxfloat` scales against $\lfloor\log_2\text{max}\rfloor$, `emax` against the real
#    $e_{\max} = 2^{E-1}$; at a fractional width they differ, and so do the bits of the blocks
#    whose scale exponent they set differently (the cell prints the share).
#
# </details>

# %% [solution]
# Exercise 1: E, M and the bits at beta = 0.5.
claimed = (2.5, 1.5, 5.0)
p = minifloat_params(fp8_fp4.ebits(0.5), fp8_fp4.mbits(0.5))
print(f"exercise 1: E = {p.ebits:g}, M = {p.mbits:g}, element bits = {p.element_bits:g}")
assert (p.ebits, p.mbits, p.element_bits) == claimed

# %% [solution]
# Exercise 2: the slope of the temperature sigmoid, by autograd.
from dmx.offset import offset_to_beta

claimed = {(1.0, 0.4): 2.0, (1.0, 20.0): 100.0, (0.0, 0.4): 0.141}
for (start_hat, T), slope_claimed in claimed.items():
    probe = torch.tensor(start_hat, requires_grad=True)
    slope = float(torch.autograd.grad(offset_to_beta(probe, T, training=True), probe)[0])
    print(f"exercise 2: d beta / d beta_hat at beta_hat = {start_hat:g}, T = {T:g}: {slope:.3f}")
    assert abs(slope - slope_claimed) < 1e-3 * max(1.0, slope_claimed), (slope, slope_claimed)
far = torch.tensor(0.0, requires_grad=True)
assert float(torch.autograd.grad(offset_to_beta(far, 20.0, training=True), far)[0]) < 1e-10  # frozen

# %% [solution]
# Exercise 3: the two scale rules at beta = 0.5.
claimed = {"maxfloat": 3.0, "emax": 2 ** 1.5}
e, m = fp8_fp4.ebits(0.5), fp8_fp4.mbits(0.5)
for rule, exponent in claimed.items():
    got = minifloat_params(e, m, fractional_scale=rule).scale_emax
    print(f"exercise 3: {rule} scales against the exponent {got:.4f}")
    assert abs(got - exponent) < 1e-12
a, b = (quantize_dequantize_minifloat(weights, e, m, fractional_scale=r) for r in ("maxfloat", "emax"))
share = float(np.mean(a != b))
print(f"exercise 3: the rules differ on {share:.1%} of the weights")
assert share > 0

# %%
usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
print(f"notebook ran in {time.perf_counter() - start:.0f} s, peak memory {usage:.0f} MiB")
