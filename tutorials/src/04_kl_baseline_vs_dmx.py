# Source of tutorials/04_kl_baseline_vs_dmx.ipynb (build: .venv/bin/python tutorials/build.py 04)

# %% [markdown]
# # 04 · KL baseline vs. dMX on SmolLM2-135M
#
# Two ways to give each linear layer of an LLM its own MX format under an average-bit budget:
#
# * **KL heuristic** (`dmx.kl_baseline`): measure how much the model's next-token distribution
#   moves when *one* layer is put in the low format while the others stay high,
#
#   $$ s_l = \frac{1}{N}\sum_{t=1}^{N} \mathrm{KL}\bigl(p_{\text{ref}}(\cdot\mid x_{<t})\ \|\ p_{l\to\text{low}}(\cdot\mid x_{<t})\bigr), $$
#
#   then demote layers to the low format in order of increasing $s_l$ until the average bits
#   meet the budget. One forward pass over the calibration windows per layer; interactions
#   between layers are ignored.
# * **dMX** (`dmx.calibrate`): learn all offsets jointly by gradient descent on next-token
#   cross-entropy plus the bit-budget hinge, with the annealed sigmoid of notebook 03.
#
# We run both on the SmolLM2-135M-Instruct model that ships with the project (a Q4_1 GGUF
# file, dequantized to float32), on the CPU, and compare WikiText-2 perplexities.
#
# **This is a miniature.** To stay within a few minutes on 2 CPU cores it uses 2 calibration
# windows of 128 tokens, quantizes only the 14 linears of the first and the last decoder block
# (the other 196 stay in full precision), runs dMX for 8 steps (twice: with the paper's optimiser
# settings and with ones suited to so short a run) and measures perplexity on the
# first 2 windows of 128 test tokens. Real runs quantize all 210 decoder linears, calibrate on
# 128+ windows of 2048 tokens for hundreds of steps and evaluate on the full test set
# (`dmx calibrate`, `dmx sweep`); the numbers below illustrate the workflow, not the method's
# accuracy.
#
# The data directory comes from `$DMX_DATA_DIR` (it holds WikiText-2; see the README).

# %%
%matplotlib inline
import os
import time

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display

from dmx.assignment import Assignment, apply_assignment
from dmx.calibrate import CalibrationConfig, calibrate
from dmx.data import calibration_windows, data_dir, test_token_ids
from dmx.kl_baseline import (demotion_order, kl_to_reference, reference_logits, score_layers,
                              select_by_sensitivity)
from dmx.models import decoder_linear_names, load_model
from dmx.perplexity import perplexity
from dmx.plots import pareto_figure
from dmx.quantized import quantize_model, set_uniform_format

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedded model never needs the network
# The miniature's matrices are small and the MX rounding runs in numpy (one core): a second
# torch thread mostly spins, and on a shared CPU it slows everything down. On a workstation,
# raise this (e.g. torch.set_num_threads(os.cpu_count())).
torch.set_num_threads(1)
start = time.perf_counter()

DATA_DIR = data_dir()  # $DMX_DATA_DIR; raises a clear error naming what to set if it is missing
SEQLEN, CALIB_WINDOWS, EVAL_WINDOWS, DMX_STEPS = 128, 2, 2, 8
BLOCKS = (0, 29)
LOW, HIGH = "mxfp4_e2m1", "mxfp8_e4m3"

# %% [markdown]
# ## 1. Model, data and the full-precision reference

# %%
model, tokenizer = load_model("smollm2-135m")
all_linears = decoder_linear_names(model)
windows = calibration_windows(tokenizer, CALIB_WINDOWS, SEQLEN, seed=0, data_dir=DATA_DIR)
test_ids = test_token_ids(tokenizer, DATA_DIR)


def ppl(m) -> float:
    return perplexity(m, test_ids, seqlen=SEQLEN, max_windows=EVAL_WINDOWS, progress=False)


fp_ppl = ppl(model)
reference = reference_logits(model, windows)  # p_ref: taken before any layer is quantized
print(f"{len(all_linears)} decoder linears; calibration windows {tuple(windows.shape)}; "
      f"test tokens {test_ids.shape[1]}")
print(f"full-precision perplexity (first {EVAL_WINDOWS} windows of {SEQLEN}): {fp_ppl:.2f}")

# %% [markdown]
# `dmx.quantized.quantize_model` replaces the selected `nn.Linear`s by `DMXLinear` (weights and
# input activations MX-quantized in blocks of 32 along the reduction dimension; one learnable
# offset each). Uniform formats are the simplest baselines.

# %%
chosen = [n for n in all_linears if int(n.split(".")[2]) in BLOCKS]
layers = quantize_model(model, "fp8_fp4", names=chosen)
uniform = {}
for fmt in (LOW, HIGH):
    set_uniform_format(layers, fmt)
    uniform[fmt] = ppl(model)
    print(f"all {len(layers)} layers {fmt}: perplexity {uniform[fmt]:.2f}")

# %% [markdown]
# ## 2. KL sensitivity scores
#
# One score per layer: FP4 for that layer, FP8 for the other 13 (one forward pass over the
# calibration windows each). The dashed line is the KL with all 14 layers in FP8: the part of
# every score that does not come from the demoted layer. With only 256 calibration tokens,
# differences of a few percent are noise — a layer can even score slightly below the line.

# %%
tic = time.perf_counter()
scores = score_layers(model, layers, windows, low_format=LOW, high_format=HIGH,
                      reference=reference, progress=False)
print(f"scored {len(scores)} layers in {time.perf_counter() - tic:.0f} s")
all_high_kl = kl_to_reference(model, windows, reference)  # score_layers leaves every layer at HIGH
short = [n.replace("model.layers.", "L").replace("self_attn.", "").replace("mlp.", "") for n in layers]
colors = ["tab:blue" if "attn" in n else "tab:orange" for n in layers]
fig, ax = plt.subplots(figsize=(9, 3.2))
ax.bar(range(len(scores)), list(scores.values()), color=colors)
ax.axhline(all_high_kl, color="k", ls="--", lw=1)
ax.set_xticks(range(len(scores)), short, rotation=70, fontsize=8)
ax.set(yscale="log", ylabel="KL(p_ref || p), nats/token",
       title="sensitivity: this layer in FP4, others in FP8 (blue: attention, orange: MLP)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Greedy selection
#
# Start with every layer in FP8 (8 bits) and demote the least sensitive layers to FP4 (4 bits)
# until the average element bits is at or below the target: for 6 bits, 7 of the 14 layers.

# %%
TARGETS = (5.0, 6.0, 7.0)
order = demotion_order(scores, list(layers))
print("demotion order (least sensitive first):", [short[list(layers).index(n)] for n in order])
kl_points = []
for target in TARGETS:
    formats = select_by_sensitivity(scores, list(layers), low_format=LOW, high_format=HIGH, target_bits=target)
    assignment = Assignment.from_formats(formats, provenance={"method": "kl", "target_bits": target})
    apply_assignment(layers, assignment)
    kl_points.append({"method": "kl", "avg_bits": assignment.element_bits, "perplexity": ppl(model),
                      "formats": formats})
    print(f"KL @ {target:g} bits: average {assignment.element_bits:.2f} bits, "
          f"{sum(f == LOW for f in formats.values())} layers in FP4, perplexity {kl_points[-1]['perplexity']:.2f}")

# %% [markdown]
# ## 4. dMX at the same budget
#
# `dmx.calibrate.calibrate` learns the 14 offsets jointly: each step runs the quantized model
# with soft formats on a calibration window, adds the hinge $\max(0, 5(\bar b - 6))$ to the
# cross-entropy and takes an SGD step on the offsets only; the temperature holds at 0.4 for the
# first 60 % of the steps (4 of 8) and anneals to 20 over the rest. At the end every layer is
# fixed to its hard format.
#
# We run it twice from the same start ($\hat\beta = 1$, the midpoint: 6 bits everywhere). First
# with the paper's optimiser: SGD with lr 1 and Nesterov momentum 0.99.
#
# *Note.* This notebook uses the project's first recipe (start $\hat\beta = 1$, no gradient
# clipping, the `emax` fractional scale, set in `RECIPE` below). The library's defaults now follow
# the authors' code (start $\hat\beta = 0$, clipping at 1.0, the `maxfloat` scale; see
# `docs/FIDELITY.md` and the README's results); a version of this notebook on those defaults is
# planned.

# %%
RECIPE = {"beta_init": 1.0, "clip_grad_norm": 0.0, "fractional_scale": "emax"}  # the project's first recipe


def run_dmx(**optimiser):
    """One dMX calibration from beta_hat = 1: (Pareto point, per-step metrics, beta_hat per step)."""
    set_uniform_format(layers, None)  # back to learnable offsets
    metrics, offsets = [], [[RECIPE["beta_init"]] * len(layers)]

    def record(step, m):
        metrics.append(m)
        offsets.append([layer.beta_hat.item() for layer in layers.values()])

    config = CalibrationConfig(family="fp8_fp4", target_bits=6.0, steps=DMX_STEPS, checkpoint_every=DMX_STEPS,
                               **RECIPE, **optimiser)
    tic = time.perf_counter()
    result = calibrate(model, layers, windows, config, progress=False, on_step=record)
    print(f"{DMX_STEPS} steps (lr {config.lr:g}, momentum {config.momentum:g}) in {time.perf_counter() - tic:.0f} s")
    for step, m in enumerate(metrics, start=1):
        print(f"  step {step}: T={m['T']:6.2f}  cross-entropy {m['ce']:.3f}  soft average bits {m['bits']:.2f}")
    point = {"method": "dmx", "avg_bits": result.element_bits, "perplexity": ppl(model), "formats": result.formats}
    print(f"  -> average {result.element_bits:.2f} bits (target 6), "
          f"{sum(f == LOW for f in result.formats.values())} of {len(layers)} layers in FP4, "
          f"perplexity {point['perplexity']:.2f}")
    return point, metrics, torch.tensor(offsets)


paper_point, paper_metrics, paper_offsets = run_dmx()

# %% [markdown]
# The run misses its budget by a wide margin, and the reason is the step size, not the method.
# The hinge pushes every offset down by the same force,
# $\lambda\,\partial\bar b/\partial\hat\beta_l = \lambda\, b_l'(\hat\beta_l)/L$, where
# $b_l = 4 + 4\,\sigma(4(|\hat\beta_l| - 1))$ at $T = 0.4$ has slope 4 at the midpoint: a push of
# $5 \cdot 4 / 14 \approx 1.4$ per offset here, against $5 \cdot 4 / 210 \approx 0.1$ when all 210
# decoder linears are calibrated. Momentum $\mu$ then multiplies a push that keeps its sign by up
# to $1/(1-\mu)$, i.e. 100 at $\mu = 0.99$. Over hundreds of steps that velocity averages the
# on/off hinge and the cross-entropy into a slow drift; in eight steps it is one shove. Above,
# the first step over the budget sends the offsets through $\hat\beta = 0$, and the momentum
# carries them to $\hat\beta \approx -9$ (left plot below). Only $|\hat\beta|$ counts
# (notebook 03), so that is the FP8 end, far out where the sigmoid is flat: neither the hinge
# nor the cross-entropy has a gradient left to bring those layers back.
#
# A short run needs a velocity that forgets within a step or two. With Nesterov momentum 0.5
# (lr 1, everything else unchanged) a push moves the offsets by at most about twice its size.
# The first push over the budget still throws them across zero (middle plot, step 2), but only
# to $|\hat\beta| \approx 1$, where the sigmoid still has slope; the following steps bring them
# back, and the annealing settles them on either side of $|\hat\beta| = 1$:

# %%
dmx_point, dmx_metrics, dmx_offsets = run_dmx(momentum=0.5)

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for ax, offsets, name in ((axes[0], paper_offsets, "momentum 0.99"), (axes[1], dmx_offsets, "momentum 0.5")):
    ax.plot(offsets)
    for level in (1, -1):
        ax.axhline(level, color="k", ls=":", lw=1)  # |beta_hat| = 1: the FP4/FP8 threshold
    ax.set(title=rf"$\hat\beta$ per layer, {name}", xlabel="step")
for metrics, name in ((paper_metrics, "momentum 0.99"), (dmx_metrics, "momentum 0.5")):
    axes[2].plot(range(1, DMX_STEPS + 1), [m["bits"] for m in metrics], "o-", label=name)
axes[2].axhline(6, color="k", ls=":", lw=1, label="target")
axes[2].set(title="soft average bits at each step", xlabel="step")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# These are settings for a miniature, not new defaults, and in an eight-step run the window
# is narrow. Measured on this miniature when the notebook was written: at lr 1, momentum 0.7
# or more still ends above the budget (7.14 bits at 0.7, 7.71 at 0.9); a smaller learning rate
# is no cure either (lr 0.3 or 0.5 with momentum 0.5, lr 0.1 with momentum 0.9, and plain SGD
# without momentum let the first push carry all offsets together into the flat FP4 end, every
# layer FP4; lr 0.3 with momentum 0.9 ends with every layer FP8); and with momentum 0.5 the
# order of the two windows (`seed` 0 to 3) gave 6.00 or 5.43 bits, never above the budget (the
# run above, on the library versions installed today, prints its own result).
# `dmx calibrate` exposes the same settings as `--lr` and `--momentum`; for full runs keep the
# paper's defaults and give them the hundreds of steps they assume.
#
# Which layers did each method keep in FP8 at the 6-bit budget?

# %%
kl6 = kl_points[TARGETS.index(6.0)]["formats"]
fig, ax = plt.subplots(figsize=(9, 1.8))
grid = [[8 if kl6[n] == HIGH else 4 for n in layers], [8 if dmx_point["formats"][n] == HIGH else 4 for n in layers]]
ax.imshow(grid, aspect="auto", cmap="viridis", vmin=4, vmax=8)
ax.set_yticks([0, 1], ["KL @ 6", "dMX @ 6"])
ax.set_xticks(range(len(short)), short, rotation=70, fontsize=8)
ax.set_title("bright = FP8, dark = FP4 (dMX: momentum 0.5)")
fig.tight_layout()
plt.show()
same = kl6 == dmx_point["formats"]
print("KL and dMX keep the same layers in FP8" if same else
      f"KL and dMX differ on {sum(kl6[n] != dmx_point['formats'][n] for n in layers)} of {len(layers)} layers")

# %% [markdown]
# ## 5. A small Pareto plot
#
# Perplexity against average element bits (of the 14 quantized layers) for the uniform
# formats, the KL heuristic at three budgets and dMX at 6 bits (momentum 0.5; the run with the
# paper's defaults is drawn as its own point), with `dmx.plots` (the figure `dmx sweep`
# writes). Lower and further left is better; where KL and dMX chose the same layers (printed
# above), their points coincide.

# %%
points = [{"method": "fp", "perplexity": fp_ppl}]
points += [{"method": "uniform", "format": f, "avg_bits": float(b), "perplexity": p}
           for (f, p), b in zip(uniform.items(), (4, 8))]
points += [{k: v for k, v in p.items() if k != "formats"} for p in kl_points]
points.append({k: v for k, v in dmx_point.items() if k != "formats"})
points.append({**{k: v for k, v in paper_point.items() if k != "formats"},
               "method": "dMX, momentum 0.99 (8 steps)"})
figure = pareto_figure(points, "pareto_04.png", title=f"SmolLM2-135M, {len(layers)} linears quantized (miniature)")
display(Image(filename=str(figure), width=520))
figure.unlink()
print(f"notebook ran in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# With this little data both methods see the same 256 tokens and dMX takes only eight steps, so
# the ranking you see here says nothing about full-scale results. What the miniature does show:
# the KL heuristic meets the budget by construction (it demotes layers until the average is at
# or below the target) but needs one forward pass per layer and scores each layer alone, while
# dMX learns all formats jointly in a handful of passes but meets the budget only through the
# hinge penalty, a soft constraint whose outcome depends on the optimiser's step size — the
# paper's defaults overshoot in eight steps, momentum 0.5 lands at or below the budget. Real
# runs (`dmx calibrate`, `dmx sweep`) quantize all layers, calibrate on more windows and take
# hundreds of steps with the paper's defaults.
