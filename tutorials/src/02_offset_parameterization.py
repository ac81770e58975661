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
# say how range and precision change with $\beta$; derive $\partial\mathcal{L}/\partial\beta$
# through the quantizer; and tell which formats a family can deploy.
#
# References: the [OCP MX v1.0 specification](https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf),
# the dMX paper ([arXiv 2606.04115](https://arxiv.org/abs/2606.04115)),
# [torchao's MX formats](https://github.com/pytorch/ao/tree/main/torchao/prototype/mx_formats)
# and the project's [README](../README.md).

# %%
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import mx_spec
from dmx.autograd import mx_qdq_minifloat
from dmx.family import FAMILIES, get_family
from mx_spec.minifloat import minifloat_params, quantize_dequantize_minifloat

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (7, 3)})
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
# block is scaled by $2^X$ with $X = \lfloor \log_2 a_{\max} - e_{\max}\rfloor$ (the spec's floor
# rule, §6.3) and each scaled value $y$ is rounded to the grid of step
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
# ## 2. Quantization error as a function of β
#
# The mean squared error of MX-quantizing Gaussian weights falls as $\beta$ grows, roughly like
# $4^{-\beta}$: uniform rounding noise has variance $\Delta^2/12$, and every extra mantissa bit
# halves $\Delta$. The curve is **not smooth**: at fractional widths the block scale jumps by
# a binade whenever $e_{\max}$ crosses $\log_2 a_{\max}$ minus an integer, and the last step
# of each binade is a fraction of a step. Finite differences of this curve are useless as a
# gradient; dMX uses a closed form instead.

# %%
x = torch.from_numpy(weights)


def mse(fam, beta):
    q = quantize_dequantize_minifloat(weights, fam.ebits(beta), fam.mbits(beta))
    return float(np.mean((q - weights) ** 2, dtype=np.float64))


fig, ax = plt.subplots(figsize=(7, 3))
fine = np.linspace(0.0, 2.0, 161)
for name, fam in FAMILIES.items():
    curve = np.array([mse(fam, b) for b in fine])
    ax.plot(fine, curve, label=f"{name}: measured")
    ax.plot(fine, curve[0] * 4.0 ** (-fam.mbits_slope * fine), "--", linewidth=1,
            label=fr"{name}: $\Delta^2/12$ law, MSE(0)$\cdot 4^{{-\beta}}$")
ax.set(yscale="log", xlabel=r"$\beta$", ylabel="MSE", title="MX quantization error of N(0,1) weights")
ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The gradient with respect to β
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
# maximum grows. It treats the block scale as fixed, while in the forward pass the floor scale
# drops by a binade whenever $e_{\max}$ grows past a power of two of $a_{\max}$, which gives
# part of that range back; the $E$ part is therefore an optimistic estimate of the benefit of
# range. All parts are negative: more bits reduce the error, and the only force pushing
# $\beta$ down during calibration is the bit-budget penalty (notebook 03).
#
# ## 4. From the learnable β̂ to β
#
# The optimiser does not update $\beta$ directly but an unconstrained $\hat\beta$; notebook 03
# shows the temperature sigmoid $\beta = 2\,\sigma\bigl(20\,T\,(|\hat\beta|/2 - 1/2)\bigr)$ that
# maps it into $[0, 2]$ and is annealed so that every layer ends at one of the family's two
# **ends**, $\beta = 0$ or $\beta = 2$ (MXFP4 or MXFP8 for `fp8_fp4`): the middle integer point
# $\beta = 1$ (MXFP6 E3M2) is a real MX format too, but the hard rule never deploys it (section
# 5). Its derivative, the last link of the chain,
#
# $$ \frac{\partial\beta}{\partial\hat\beta} = 20\,T\,\sigma(1-\sigma)\,\operatorname{sign}(\hat\beta), $$
#
# is large near $|\hat\beta| = 1$ and vanishes far from it — which is why a hard, high
# temperature freezes the assignment at the end of calibration.
#
# ## 5. The `fp6_fp4` family
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
# 1. At $\beta = 0.5$ in `fp8_fp4`, what are $E$, $M$ and the element bits? Check with
#    `minifloat_params(fam.ebits(0.5), fam.mbits(0.5))`.
# 2. Compute $\partial\beta/\partial\hat\beta$ at $\hat\beta = 1$ for $T = 0.4$ and $T = 20$, and at
#    $\hat\beta = 0$ for $T = 0.4$. What do the three numbers say about where and when the
#    offsets can move?
# 3. Why does `fp6.format_at(1.0)` raise?
#
# <details><summary>Solutions (click)</summary>
#
# 1. $E = 2.5$, $M = 1.5$, $b = 1 + 2.5 + 1.5 = 5$ bits.
# 2. With $\sigma(1-\sigma) = 1/4$ at $|\hat\beta| = 1$: $20 \cdot 0.4/4 = 2$ and $20\cdot 20/4 = 100$
#    — at the threshold the map gets steeper as $T$ rises. At $\hat\beta = 0$, $T = 0.4$:
#    $\sigma(-4) \approx 0.018$, so $8\,\sigma(1-\sigma) \approx 0.14$: a layer that starts at
#    $\hat\beta = 0$ (the default) moves slowly at first (notebook 04 shows the consequence).
#    Away from the threshold at $T = 20$ the slope is essentially 0: the assignment is frozen.
# 3. At $\beta = 1$ the `fp6_fp4` family is E2M2, a 5-bit format that the OCP MX specification
#    does not define, so there is no standard MX format to return.
#
# </details>
