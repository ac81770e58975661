# Source of tutorials/03_annealing.ipynb (build: .venv/bin/python tutorials/build.py 03)

# %% [markdown]
# # 03 · Annealing: from a soft offset to a hard format
#
# Each dMX layer owns one unconstrained parameter $\hat\beta$. During calibration it is mapped
# to the family offset $\beta \in [0, 2]$ (notebook 02) by a **temperature sigmoid**
#
# $$ \beta = 2\,\sigma\!\Bigl(20\,T\,\bigl(|\hat\beta|/2 - 1/2\bigr)\Bigr), $$
#
# and after calibration by the hard rule $\beta = 2$ if $|\hat\beta| > 1$ else $0$, so every
# layer deploys a real MX format (MXFP8 E4M3 or MXFP4 E2M1 in the `fp8_fp4` family). The
# objective is the task loss plus a **target-aware bit-budget penalty**
#
# $$ \mathcal{J} = \mathcal{L}_{\text{task}} + \max\bigl(0,\ \lambda\,(\bar b - b_{\text{target}})\bigr),
#    \qquad \bar b = \frac{1}{L}\sum_{l=1}^{L} \bigl(1 + E(\beta_l) + M(\beta_l)\bigr),\quad \lambda = 5. $$
#
# This notebook shows the sigmoid at several temperatures, the annealing schedule, the
# trajectories of $\hat\beta$ and $\beta$ during a small calibration, why plain rounding with a
# straight-through estimator (STE) oscillates while the annealed sigmoid settles, and how the
# penalty sets the average bits. The "model" is a toy 8-layer MLP so that each calibration runs
# in seconds; notebook 04 does the same on a real LLM.
#
# **Running it:** about 50-90 s and 0.4 GB of memory on 2 shared CPU cores (measured; the last cell
# prints this run's; it calibrates the toy about 20 times), within 120 s on the test machine;
# data: none (a random toy model); command: `make tutorials` opens the folder in JupyterLab,
# `.venv/bin/python tutorials/build.py 03` rebuilds and re-executes it.
#
# **After this notebook you can** explain what the temperature does to the map
# $\hat\beta\to\beta$ and to its gradient; read $\hat\beta$/$\beta$ trajectories of a
# calibration; say why round + STE keeps flipping formats and the annealed sigmoid settles; and
# predict what the hinge penalty does to the average bits — and what it does not do.
#
# References: the [OCP MX v1.0 specification](https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf),
# the dMX paper ([arXiv 2606.04115](https://arxiv.org/abs/2606.04115)),
# [torchao's MX formats](https://github.com/pytorch/ao/tree/main/torchao/prototype/mx_formats)
# and the project's [README](../README.md).

# %%
%matplotlib inline
import copy
import resource
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
import torch
from torch import nn

from dmx.anneal import HoldThenCosine, HoldThenExponential, HoldThenLinear, RoundSTE
from dmx.linear import DMXLinearConfig
from dmx.offset import offset_to_beta
from dmx.regularizer import average_bits, bit_budget_penalty
from dmx.wrap import apply_schedule, wrap_linears

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (7, 3)})
# The toy tensors are tiny: on a shared CPU, extra threads cost more than they give.
torch.set_num_threads(1)
start = time.perf_counter()

# %% [markdown]
# ## 1. The temperature sigmoid
#
# At a low temperature the map is gentle: $\beta$ moves smoothly with $\hat\beta$, every
# fractional format in between is used, and gradients flow. As $T$ grows the sigmoid sharpens
# into the hard step at $|\hat\beta| = 1$, which is exactly the deployed rule. (`dmx.offset`
# uses the authors' code convention: the factor 20 in front of $T$; the default schedule runs
# $T = 0.4 \to 20$.) The map is even in $\hat\beta$: only $|\hat\beta|$ matters.

# %%
beta_hat = torch.linspace(-3.0, 3.0, 601)
fig, ax = plt.subplots(figsize=(7, 3))
for T in (0.1, 0.4, 1.0, 2.0, 20.0):
    ax.plot(beta_hat, offset_to_beta(beta_hat, T, training=True), label=f"T = {T:g}")
ax.plot(beta_hat, offset_to_beta(beta_hat, 1.0, training=False), "k--", linewidth=1, label="hard (eval)")
ax.set(xlabel=r"$\hat\beta$", ylabel=r"$\beta$", title=r"$\beta = 2\,\sigma(20\,T\,(|\hat\beta|/2 - 1/2))$")
ax.legend(fontsize=8, ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The schedule
#
# `HoldThenExponential` (the default, as in the authors' code) **holds** $T = 0.4$ for the
# first 60 % of the steps — the exploration phase where layers trade bits smoothly — then
# **anneals** exponentially to $T = 20$ at the last step, $T_k = 0.4\cdot 50^{k/(N_a-1)}$, which
# freezes each layer at one end. Linear and cosine variants share the hold phase.

# %%
steps = 100
fig, ax = plt.subplots(figsize=(7, 3))
for schedule in (HoldThenExponential(), HoldThenLinear(), HoldThenCosine()):
    ax.plot([schedule(s, steps) for s in range(steps)], label=type(schedule).__name__)
ax.set(xlabel="step", ylabel="temperature T", yscale="log", title=f"schedules over {steps} steps")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. A small calibration
#
# The toy model is an 8-layer MLP (64 → 64, tanh). Odd layers get heavy-tailed weights
# (log-normal magnitudes): a few large values per block make FP4's coarse grid costly there. We
# wrap every linear in a `DMXLinear` of the `fp8_fp4` family with `dmx.wrap.wrap_linears`
# (weights and inputs are MX-quantized with the layer's format), and learn the $\hat\beta$'s to
# match the full-precision outputs (relative MSE) under a budget of 6 average element bits.
#
# The optimiser is the method's: SGD with Nesterov momentum 0.99. The LLM recipe uses lr = 1
# for ~200 layers; the penalty's gradient per layer scales like $\lambda/L$, so with $L = 8$ we
# use lr = 0.05 to keep the same dynamics. `dmx.wrap.apply_schedule` sets each layer's
# temperature (and offset mode) at every step — this loop is what `dmx.calibrate.calibrate`
# runs on a language model.
#
# The toy stands in for the ~200 linears of an LLM: notebook 04
# calibrates the real model and follows the running example of notebooks 01-02,
# `model.layers.29.mlp.down_proj`, to its assignment.
#
# This toy starts every offset at $\hat\beta = 1$ (6 bits everywhere) and takes fractional
# scales by the `emax` rule: the project's first recipe. The library's defaults follow the
# authors' code instead (start at $\hat\beta = 0$, `maxfloat` scale, gradient clipping in
# `dmx.calibrate`; `docs/FIDELITY.md`), which is made for the ~200 layers of an LLM.

# %%
WIDTH, DEPTH, STEPS = 64, 8, 100


HEAVY = [i % 2 == 1 for i in range(DEPTH)]  # which layers get heavy-tailed weights
LAYER_COLOR = ["tab:red" if heavy else "tab:blue" for heavy in HEAVY]
LAYER_LEGEND = [Line2D([], [], color="tab:red", label="heavy-tailed layers (odd)"),
                Line2D([], [], color="tab:blue", label="Gaussian layers (even)")]


def toy_teacher(seed: int = 0) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for i in range(DEPTH):
        w = torch.randn(WIDTH, WIDTH, generator=gen)
        if i % 2 == 1:  # heavy tails
            w = w * torch.exp(1.5 * torch.randn(WIDTH, WIDTH, generator=gen))
        linear = nn.Linear(WIDTH, WIDTH, bias=False)
        linear.weight.data.copy_(w / w.std() / WIDTH**0.5)
        blocks += [linear, nn.Tanh()]
    return nn.Sequential(*blocks).requires_grad_(False)


def toy_problem(seed: int = 0):
    """(teacher, inputs, reference outputs) of one toy; seed 0 is the one studied below."""
    teacher = toy_teacher(seed)
    inputs = torch.randn(128, WIDTH, generator=torch.Generator().manual_seed(1 + 1000 * seed))
    with torch.no_grad():
        return teacher, inputs, teacher(inputs)


def calibrate_toy(schedule, target_bits=6.0, lam=5.0, lr=0.05, steps=STEPS, seed=0,
                  beta_init=1.0, fractional_scale="emax", clip=0.0):
    """Learn one fp8_fp4 format per layer of a copy of toy ``seed``'s teacher; returns the history.
    The defaults are the project's first recipe; ``beta_init=0.0, fractional_scale="maxfloat",
    clip=1.0`` is the library's default (the authors')."""
    teacher, inputs, reference = toy_problem(seed)
    student = copy.deepcopy(teacher)
    layers = wrap_linears(student, DMXLinearConfig(family="fp8_fp4", beta_init=beta_init, fractional_scale=fractional_scale))
    optimizer = torch.optim.SGD([l.beta_hat for l in layers.values()], lr=lr, momentum=0.99, nesterov=True)
    history = {"T": [], "beta_hat": [], "beta": [], "bits": [], "task": []}
    student.train()
    for step in range(steps):
        T = apply_schedule(student, schedule, step, steps)
        optimizer.zero_grad()
        task = ((student(inputs) - reference) ** 2).mean() / (reference**2).mean()
        bits = average_bits(layers)
        (task + bit_budget_penalty(bits, target_bits, lam)).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([l.beta_hat for l in layers.values()], clip)
        optimizer.step()
        with torch.no_grad():
            history["T"].append(T)
            history["beta_hat"].append([l.beta_hat.item() for l in layers.values()])
            history["beta"].append([l.beta().item() for l in layers.values()])
            history["bits"].append(bits.item())
            history["task"].append(task.item())
    student.eval()  # hard formats: what would be deployed
    with torch.no_grad():
        final_task = (((student(inputs) - reference) ** 2).mean() / (reference**2).mean()).item()
    history = {k: np.array(v) for k, v in history.items()}
    history.update(formats=[l.format_name() for l in layers.values()],
                   final_bits=average_bits(layers).item(), final_task=final_task)
    return history


sigmoid_run = calibrate_toy(HoldThenExponential())
print("deployed formats:", [f.replace("mxfp", "fp") for f in sigmoid_run["formats"]])
print("kept in FP8:", [f"layer {i} ({'heavy' if HEAVY[i] else 'Gaussian'})"
                       for i, f in enumerate(sigmoid_run["formats"]) if f.endswith("e4m3")])
print(f"average element bits {sigmoid_run['final_bits']:.2f} (target 6), "
      f"relative output error {sigmoid_run['final_task']:.4f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharex=True)
for layer in range(DEPTH):
    axes[0].plot(np.abs(sigmoid_run["beta_hat"][:, layer]), color=LAYER_COLOR[layer], lw=1)
    axes[1].plot(sigmoid_run["beta"][:, layer], color=LAYER_COLOR[layer], lw=1)
axes[0].axhline(1, color="k", ls=":", lw=1)  # |beta_hat| = 1: the FP4/FP8 threshold
# Only the magnitude decides the format (the map is even in beta_hat), so that is what is plotted.
axes[0].set(title=r"$|\hat\beta|$ per layer (dotted: FP8 threshold)", xlabel="step",
            ylabel=r"$|\hat\beta|$ (learned parameter)")
axes[1].set(title=r"soft $\beta$ per layer", xlabel="step", ylabel=r"$\beta$ (0 = FP4, 2 = FP8)")
for ax in axes[:2]:
    ax.legend(handles=LAYER_LEGEND, fontsize=7)
axes[2].plot(sigmoid_run["bits"], label=r"average bits $\bar b$")
axes[2].axhline(6, color="k", ls=":", lw=1, label="target")
axes[2].set(title="average element bits", xlabel="step", ylabel=r"$\bar b$ (bits)")
axes[2].legend(fontsize=8)
for ax in axes:
    ax.axvline(0.6 * STEPS, color="gray", lw=0.8)  # end of the hold phase
fig.tight_layout()
plt.show()

# %% [markdown]
# During the hold phase ($T = 0.4$) the penalty and the task loss pull the layers in opposite
# directions and $\bar b$ swings around the target (momentum 0.99 remembers ~100 steps, so the
# swings are wide in a 100-step toy); $\beta$ is fractional most of the time. When annealing
# starts (grey line) the sigmoid sharpens: each soft $\beta$ is driven to 0 or 2 and $\bar b$
# snaps to a value the hard formats can reach. With 8 layers one layer switching moves
# $\bar b$ by 0.5 bits, so the snapped average can land half a bit off the target; with the
# ~200 linears of an LLM that granularity is ~0.02 bits. A $\hat\beta$ may cross zero: only
# $|\hat\beta|$ counts, so a negative $\hat\beta$ far from zero also means the high format.
#
# **Which layers end in FP8 in one run is fragile.** Momentum 0.99 carries about a hundred steps
# of gradients, so a difference in the last bits of one gradient (another summation order in the
# library's backward pass, another CPU) can tip a layer sitting near $|\hat\beta| = 1$ into the
# other format, and with it the final bits and error printed above: a change of that kind in the
# library turned this very run into another assignment once, and so did moving it to another
# machine type (the build compares this notebook's stored numbers only on the machine type that
# stored them). Read the printed assignment as one sample. The quantities this notebook draws conclusions from are sums over several toys (the
# flip totals of section 4) and the direction of the penalty's effect over targets (section 5),
# not one run's layer list.
#
# **What the toy does not show.** Two things in this run go against the intuition that motivated
# it (red lines: the heavy-tailed layers):
#
# * *The offsets move together in the hold phase.* Above the target, the hinge pushes every
#   offset by the same amount, $\lambda\,b'(\hat\beta_l)/L$, which here is much larger than the
#   task gradient of any single layer; momentum 0.99 accumulates that common push and carries all
#   offsets through $\hat\beta = 0$ together. The layers separate only where the task gradient
#   differs — late in the hold phase and during the annealing.
# * *The heavy-tailed layers are not simply the ones kept in FP8* (printed above). Which layers
#   matter is decided by the task gradient: an error in an early layer is propagated (and
#   partly squashed by tanh) through all later layers, so a layer's position counts as much as
#   its weight statistics. Per-layer weight error alone is the wrong proxy — which is the case
#   for learning the assignment from the task loss in the first place.
#
# ## 4. Plain round + STE oscillates; the annealed sigmoid settles
#
# The obvious alternative is to round right away: use the hard format in the forward pass and
# pretend the rounding is the identity in the backward pass (`RoundSTE`, offset mode
# `round_ste`: $\partial\beta/\partial|\hat\beta| = 1$). Then $\bar b$ is always an integer
# combination of 4 and 8 bits, the penalty switches on and off as layers cross the threshold,
# and layers keep flipping between formats until the last step. We count how often a layer's
# hard format ($|\hat\beta| > 1$) changes **after the annealing starts** (step 60): before that
# the sigmoid run's formats are fractional, and $|\hat\beta|$ crossing 1 changes nothing in its
# forward pass, so flips there are not comparable.

# %%
ste_run = calibrate_toy(RoundSTE())


def hard_formats(run):
    return (np.abs(run["beta_hat"]) > 1.0).astype(int)  # 1 = high format (the deployed rule)


ANNEAL_START = int(0.6 * STEPS)  # HoldThenExponential's default hold fraction


def flips_after(run, start):
    """Hard-format changes summed over layers from step ``start`` on."""
    return int(np.abs(np.diff(hard_formats(run)[start:], axis=0)).sum())


fig, axes = plt.subplots(1, 2, figsize=(11, 3), sharey=True)
for ax, (name, run) in zip(axes, (("round + STE", ste_run), ("annealed sigmoid", sigmoid_run))):
    ax.imshow(hard_formats(run).T, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0, vmax=1)
    ax.axvline(ANNEAL_START, color="w", lw=1)
    ax.set(title=f"{name}: {flips_after(run, ANNEAL_START)} flips after step {ANNEAL_START}",
           xlabel="step")
axes[0].set_ylabel("layer (bright = FP8, dark = FP4)")
fig.tight_layout()
plt.show()
for name, run in (("round + STE", ste_run), ("annealed sigmoid", sigmoid_run)):
    print(f"{name:>17}: final average bits {run['final_bits']:.2f} (target 6), "
          f"relative output error {run['final_task']:.4f}")

# %% [markdown]
# One toy is one sample. The same comparison on three toys (teachers and inputs drawn from
# seeds 0-2), counting flips after the annealing starts and in the last 20 steps:

# %%
SEEDS = (0, 1, 2)
runs = {0: (ste_run, sigmoid_run)}
runs.update({seed: (calibrate_toy(RoundSTE(), seed=seed), calibrate_toy(HoldThenExponential(), seed=seed))
             for seed in SEEDS if seed != 0})
print("seed | round+STE flips: after step 60, last 20 | sigmoid flips: after step 60, last 20")
totals = np.zeros(4, dtype=int)
for seed in SEEDS:
    ste, sig = runs[seed]
    counts = [flips_after(ste, ANNEAL_START), flips_after(ste, STEPS - 20),
              flips_after(sig, ANNEAL_START), flips_after(sig, STEPS - 20)]
    totals += counts
    print(f"{seed:4d} | {counts[0]:17d} {counts[1]:9d}     | {counts[2]:15d} {counts[3]:9d}")
print(f" all | {totals[0]:17d} {totals[1]:9d}     | {totals[2]:15d} {totals[3]:9d}")
print("final bits (STE, sigmoid):", [(runs[s][0]["final_bits"], runs[s][1]["final_bits"]) for s in SEEDS])

# %% [markdown]
# How to read the table: every round + STE flip is a real format switch in the forward pass,
# so its final assignment depends on the step at which training stopped. The annealed sigmoid
# should flip less after step 60 and markedly less in the last 20 steps, because as $T$ grows
# $\partial\beta/\partial\hat\beta$ vanishes away from $|\hat\beta| = 1$; the "all" row is the
# evidence (the cell below states what it shows), the per-seed rows show how much one toy varies.
# The sigmoid does not freeze completely in so short a run: $T$ reaches its final value only at
# the last step, and a layer sitting near $|\hat\beta| = 1$ can still cross. The final bits (last
# line) are multiples of 0.5: with 8 layers the hard snap moves $\bar b$ in steps of $4/8$.

# %%
fewer_after, fewer_last = totals[2] < totals[0], totals[3] < totals[1]
print(f"over the {len(SEEDS)} toys the sigmoid flips {'less' if fewer_after else 'NOT less'} than round + STE "
      f"after step {ANNEAL_START} ({totals[2]} vs {totals[0]}) and "
      f"{'less' if fewer_last else 'NOT less'} in the last 20 steps ({totals[3]} vs {totals[1]})")

# %% [markdown]
# ## 5. The target-aware penalty sets the average bits
#
# $\max(0, \lambda(\bar b - b_{\text{target}}))$ is a hinge: it costs nothing below the target,
# so it never pushes a model to fewer bits than allowed, and above the target its constant slope
# $\lambda/L$ per layer beats the task gradient of the least sensitive layers first. Without
# the penalty ($\lambda = 0$) every layer climbs to FP8: more bits always reduce the error.
# Higher targets should give more bits and lower error (the figure and the lines below it show
# what this toy does). The hinge only forbids exceeding the target; it does not pull the average
# up to it, so a run may end below its budget, or above it by the granularity of the hard snap
# discussed above (the printed bits per target show both, where they happen).
#
# Note also that the assignments need **not nest** (the last lines below check it for this toy):
# a layer kept in FP8 at one target can be in FP4 at a higher one. Each target is a separate non-convex run whose momentum
# phase ends in a different place; a greedy ranking such as the KL heuristic of notebook 04
# nests by construction, dMX does not promise it.

# %%
targets = (5.0, 6.0, 7.0)
results = {6.0: sigmoid_run}
results.update({t: calibrate_toy(HoldThenExponential(), target_bits=t) for t in targets if t != 6.0})
no_penalty = calibrate_toy(HoldThenExponential(), lam=0.0)

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(targets, [results[t]["final_bits"] for t in targets], "o-", label=r"dMX, $\lambda = 5$")
ax.plot([4, 8], [4, 8], "k:", lw=1, label="achieved = target")
ax.axhline(no_penalty["final_bits"], color="tab:red", ls="--", label=r"$\lambda = 0$ (no penalty)")
ax.set(xlabel="target element bits", ylabel="achieved average bits", xlim=(4, 8), ylim=(3.8, 8.2))
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
for t in targets:
    print(f"target {t:g}: bits {results[t]['final_bits']:.2f}, relative error {results[t]['final_task']:.4f}, "
          f"formats {[f[-4:] for f in results[t]['formats']]}")
print(f"no penalty: bits {no_penalty['final_bits']:.2f}, relative error {no_penalty['final_task']:.4f}")
high = {t: {i for i, f in enumerate(results[t]["formats"]) if f.endswith("e4m3")} for t in targets}
for low_t, high_t in zip(targets, targets[1:]):
    missing = sorted(high[low_t] - high[high_t])
    print(f"FP8 layers at {low_t:g} bits all FP8 at {high_t:g} bits: {not missing}"
          + (f" (layers {missing} are not)" if missing else ""))

# %% [markdown]
# ## Recap
#
# | concept | rule | in code |
# |---|---|---|
# | soft offset | $\beta = 2\sigma(20T(|\hat\beta|/2 - 1/2))$; only $|\hat\beta|$ counts | `dmx.offset.offset_to_beta` |
# | hard (deployed) offset | $\beta = 2$ if $|\hat\beta| > 1$ else 0 | `training=False` |
# | schedule | hold $T = 0.4$ for 60 % of the steps, then exponential to 20 | `dmx.anneal.HoldThenExponential` |
# | round + STE | hard format forward, identity backward: keeps flipping | `dmx.anneal.RoundSTE` |
# | budget penalty | $\max(0, \lambda(\bar b - b_t))$: pushes down only above the target | `dmx.regularizer.bit_budget_penalty` |
# | granularity | one layer switching moves $\bar b$ by $4/L$ bits | |
#
# ## Exercises
#
# 1. Can the method end at exactly 6.00 bits on this toy? Rerun the 6-bit calibration of toys
#    0-2 with a stronger penalty, `lam=20.0`, and with the library's default recipe instead of
#    this notebook's first one (`beta_init=0.0, fractional_scale="maxfloat", clip=1.0`). Which
#    lands on the target?
# 2. Count flips after step 60 for round + STE and the sigmoid on toys 3-5 (`seed=` of
#    `calibrate_toy`). Does the conclusion of the three-toy table hold?
# 3. Make the hold phase shorter: `HoldThenExponential(hold_fraction=0.3)`, on toys 0-2. What
#    happens to the number of flips after the annealing starts, and to the final error?
# 4. **Build it, then check it.** Write the dMX calibration step of this toy from the formulas
#    alone: the temperature $T_k$ of the hold-then-exponential schedule, the offset map
#    $\beta = 2\sigma(20T(|\hat\beta|/2 - 1/2))$, the widths $E = 2 + \beta$, $M = 1 + \beta$, the
#    quantized forward (`mx_qdq_minifloat` on each layer's input and weight), the average bits
#    $\bar b = \frac1L\sum(1 + E + M)$, the hinge $\max(0, \lambda(\bar b - 6))$ and the
#    Nesterov momentum update $v \leftarrow \mu v + g$, $\hat\beta \leftarrow \hat\beta -
#    \eta\,(g + \mu v)$. Run it for 30 steps from $\hat\beta = 1$ and compare your $\hat\beta$'s with
#    `calibrate_toy`'s, which uses the library (`wrap_linears`, `apply_schedule`,
#    `average_bits`, `bit_budget_penalty`).
#
# Each solution is a collapsed code cell below (click to open it): it computes the answer and
# asserts what the notes say, so the build fails if a solution stops being true.
#
# <details><summary>Solution notes (click)</summary>
#
# 1. Yes: 6.00 is a reachable hard average (4 of the 8 layers in FP8), and the default recipe
#    lands on it on all three toys (asserted). It starts every offset at $\hat\beta = 0$, *below*
#    the budget: the task loss pulls the offsets up until the hinge stops them at the budget, so
#    the soft average arrives at 6 from below and stays there while the annealing sorts the
#    layers. The first recipe starts *at* the budget ($\hat\beta = 1$ is exactly 6 bits) and
#    swings around it with momentum 0.99; the hard average can only be 4.0, 4.5, ..., 8.0, and
#    which layers near $|\hat\beta| = 1$ snap up or down is decided by the task gradient. A larger
#    $\lambda$ holds the soft average nearer the target; compare the mean distances from 6 bits over
#    the toys (printed), not one toy.
# 2. Yes: the cell repeats the flip table on toys 3-5 and asserts that the sigmoid flips less
#    there too, after step 60 and in the last 20 steps (totals printed beside those of toys 0-2).
# 3. More flips after the annealing starts, over the three toys (asserted): the offsets have
#    had less time to separate at the soft temperature, so the annealing, which now also lasts
#    longer (70 % of the steps), has to sort them while the sigmoid sharpens. The final error
#    (printed per toy) is the thing to judge the shorter hold by; read whether it moves the same
#    way on every toy before calling it better or worse.
# 4. The cell holds one way. Over the first steps it matches the library to float32 rounding;
#    later the two drift apart by more (printed): the two computations differ in the last bits
#    (another summation order), and at fractional widths the grid moves with $M$, so now and then
#    an element sits right at a rounding boundary and the last-bit difference rounds it the
#    other way. That is the fragility discussed in section 3, seen from up close. One trap: at $\hat\beta = 1$ the soft bits equal the
#    6-bit target *exactly*, and the hinge's gradient there must be that of `relu` at 0, which is 0
#    (`torch.clamp(·, min=0)` passes a gradient of 1 at 0 and sends every offset down at step 1).
#
# </details>

# %% [solution]
# Exercise 1: the 6-bit target with lam = 5 (the runs above) and lam = 20, toys 0-2.
strong = {seed: calibrate_toy(HoldThenExponential(), lam=20.0, seed=seed) for seed in SEEDS}
bits5 = [runs[seed][1]["final_bits"] for seed in SEEDS]
bits20 = [strong[seed]["final_bits"] for seed in SEEDS]
print(f"exercise 1: final bits, lam = 5: {bits5}; lam = 20: {bits20}")
recipe = {seed: calibrate_toy(HoldThenExponential(), seed=seed, beta_init=0.0, fractional_scale="maxfloat", clip=1.0)
          for seed in SEEDS}
bits_default = [recipe[seed]["final_bits"] for seed in SEEDS]
print(f"exercise 1: final bits with the library's default recipe, lam = 5: {bits_default}")
print(f"exercise 1: mean distance from 6 bits: first recipe, lam = 5: {np.mean(np.abs(np.subtract(bits5, 6))):.2f}, "
      f"lam = 20: {np.mean(np.abs(np.subtract(bits20, 6))):.2f}; default recipe: "
      f"{np.mean(np.abs(np.subtract(bits_default, 6))):.2f}")
assert all(float(b * 2).is_integer() and 4 <= b <= 8 for b in bits5 + bits20 + bits_default)  # the hard snap's grid
assert bits_default == [6.0] * len(SEEDS)  # the default recipe lands on the budget on every toy
assert all(recipe[seed]["formats"].count("mxfp8_e4m3") == 4 for seed in SEEDS)  # 6.00 bits = 4 of 8 layers in FP8

# %% [solution]
# Exercise 2: the flip table on toys 3-5.
more = {seed: (calibrate_toy(RoundSTE(), seed=seed), calibrate_toy(HoldThenExponential(), seed=seed))
        for seed in (3, 4, 5)}
more_totals = np.sum([[flips_after(ste, ANNEAL_START), flips_after(ste, STEPS - 20),
                       flips_after(sig, ANNEAL_START), flips_after(sig, STEPS - 20)]
                      for ste, sig in more.values()], axis=0)
print(f"exercise 2: toys 3-5, flips after step {ANNEAL_START} (STE, sigmoid): {more_totals[0]}, {more_totals[2]}; "
      f"in the last 20 steps: {more_totals[1]}, {more_totals[3]}")
print(f"exercise 2: toys 0-2 for comparison: {totals[0]}, {totals[2]}; {totals[1]}, {totals[3]}")
holds = bool(more_totals[2] < more_totals[0] and more_totals[3] < more_totals[1])
print(f"exercise 2: the sigmoid flips less than round + STE on toys 3-5 too: {holds}")
assert holds

# %% [solution]
# Exercise 3: a shorter hold (30 % of the steps) on toys 0-2.
short_start = int(0.3 * STEPS)
flips_default = flips_short = 0
for seed in SEEDS:
    short = calibrate_toy(HoldThenExponential(hold_fraction=0.3), seed=seed)
    default = runs[seed][1]
    flips_default += flips_after(default, ANNEAL_START)
    flips_short += flips_after(short, short_start)
    print(f"exercise 3, toy {seed}: flips after the annealing starts: hold 60 %: {flips_after(default, ANNEAL_START)}, "
          f"hold 30 %: {flips_after(short, short_start)}; final error {default['final_task']:.4f} vs {short['final_task']:.4f}")
    assert short["T"][short_start] == HoldThenExponential().start < short["T"][short_start + 1]  # annealing from step 30
print(f"exercise 3: flips after the annealing starts, all toys: hold 60 %: {flips_default}, hold 30 %: {flips_short}")
assert flips_short > flips_default

# %% [solution]
# Exercise 4: the calibration step from the formulas, checked against the library's on toy 0.
from dmx.autograd import mx_qdq_minifloat


def temperature(k, n, t_start=0.4, t_end=20.0, hold=0.6):
    """Hold t_start for the first hold * n steps, then t_start * (t_end / t_start) ** (j / (n_a - 1))."""
    n_hold = int(hold * n)
    if k < n_hold:
        return t_start
    return t_start * (t_end / t_start) ** ((k - n_hold) / (n - n_hold - 1))


def hand_calibration(steps, n_total=STEPS, lr=0.05, mu=0.99, lam=5.0, target=6.0):
    teacher, inputs, reference = toy_problem(0)
    weights = [m.weight for m in teacher if isinstance(m, nn.Linear)]
    beta_hat = torch.ones(DEPTH, requires_grad=True)
    velocity = torch.zeros(DEPTH)
    trajectory = []
    for k in range(steps):
        T = temperature(k, n_total)
        beta = 2 * torch.sigmoid(20 * T * (beta_hat.abs() / 2 - 0.5))
        e, m = 2 + beta, 1 + beta
        h = inputs
        for layer, w in enumerate(weights):
            xq = mx_qdq_minifloat(h, e[layer], m[layer], fractional_scale="emax")
            wq = mx_qdq_minifloat(w, e[layer], m[layer], fractional_scale="emax")
            h = torch.tanh(xq @ wq.T)
        task = ((h - reference) ** 2).mean() / (reference**2).mean()
        bits = (1 + e + m).mean()
        loss = task + torch.relu(lam * (bits - target))  # max(0, .); its gradient at exactly 0 is 0
        (g,) = torch.autograd.grad(loss, beta_hat)
        with torch.no_grad():
            velocity = mu * velocity + g
            beta_hat -= lr * (g + mu * velocity)
        trajectory.append(beta_hat.detach().clone())
    return torch.stack(trajectory).numpy()


CHECK_STEPS = 30
assert all(abs(temperature(k, STEPS) / HoldThenExponential()(k, STEPS) - 1) < 1e-12 for k in range(STEPS))
gaps = np.abs(hand_calibration(CHECK_STEPS) - sigmoid_run["beta_hat"][:CHECK_STEPS]).max(axis=1)
print(f"exercise 4: largest difference of beta_hat from the library's: {gaps[:10].max():.1e} over the first 10 steps, "
      f"{gaps.max():.1e} over {CHECK_STEPS}")
assert gaps[:10].max() < 1e-5 and gaps.max() < 1e-2, gaps

# %%
usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
print(f"notebook ran in {time.perf_counter() - start:.0f} s, peak memory {usage:.0f} MiB")
