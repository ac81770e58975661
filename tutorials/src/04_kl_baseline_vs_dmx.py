# Source of tutorials/04_kl_baseline_vs_dmx.ipynb (build: .venv/bin/python tutorials/build.py 04)

# %% [markdown]
# # 04 · When does dMX help? KL baseline vs. dMX on SmolLM2-135M
#
# **After this notebook you can**
#
# * say what a Hadamard rotation does to an MX block, measured on a real weight and activation;
# * compute per-layer KL sensitivity scores and the greedy KL assignment under a bit budget;
# * run a dMX calibration with the library's default recipe, with and without a rotation, and
#   deploy it at an exact budget;
# * judge whether a perplexity difference is larger than the evaluation noise;
# * say when dMX beats the KL heuristic in this project's full-scale results, when it does not,
#   and what to try first at 6 bits.
#
# **Running it:** about 5 min and 2.2 GB of memory on 2 CPU cores (measured: 271-413 s while other
# jobs kept both cores busy; the last code cell prints this run's time; it loads the model, scores
# 14 layers by KL twice, calibrates dMX twice for 40 steps and evaluates 8 assignments), within
# 300 s on the test machine when it is not shared; data: WikiText-2 from the folder in
# `$DMX_DATA_DIR`, or, when that is not set (or empty), from the Hugging Face hub (`datasets`,
# online; the calibration text then comes from the hub's `wikitext-2-v1` validation split, so the
# numbers can differ slightly from the stored ones). For offline use, save it once into a folder
# holding `wikitext-2-raw-v1/test.jsonl` (the test rows as `{"text": ...}` lines) and
# `wikitext-2-tokenized/valid.txt` (the validation split, one row per line; the layout is in
# `dmx/llm/data.py`) and set `DMX_DATA_DIR` to that folder;
# command: `make tutorials` opens the folder in JupyterLab,
# `DMX_DATA_DIR=../shared/data .venv/bin/python tutorials/build.py 04` rebuilds and re-executes it.
#
# Two ways to give each linear layer of an LLM its own MX format under an average-bit budget:
#
# * **KL heuristic** (`dmx.llm.kl_baseline`): measure how much the model's next-token distribution
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
# **This is a miniature.** To stay within a few minutes on 2 CPU cores it quantizes only the 14
# linears of the first and the last decoder block (the other 196 stay in full precision),
# calibrates on 2 windows of 128 tokens, runs dMX for 40 steps (the step count of the project's
# full-scale runs, on far fewer tokens per step) at a 5-bit budget, once without and once with
# a Hadamard rotation, and measures perplexity on the first 8 windows of 256 test tokens.
# Section 9 sets it beside the full-scale runs and the authors' set-up, and section 10 reads the
# full-scale results, which are what the method should be judged on.
#
# References: [OCP MX v1.0 specification](https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf),
# the dMX paper ([arXiv 2606.04115](https://arxiv.org/abs/2606.04115)),
# [QuaRot](https://arxiv.org/abs/2404.00456) and [SpinQuant](https://arxiv.org/abs/2405.16406)
# (the rotations), [torchao's MX formats](https://github.com/pytorch/ao/tree/main/torchao/prototype/mx_formats),
# and the project's results page, [docs/RESULTS.md](../docs/RESULTS.md) (section *Results under the authors' recipe*).

# %%
%matplotlib inline
import os

# tqdm reads TQDM_* defaults when it is first imported: this silences the progress bars that
# transformers draws while converting the GGUF file (it offers no switch for them). Our own
# calls pass progress=False anyway.
os.environ["TQDM_DISABLE"] = "1"
# The embedded model never needs the network. The data does only when DMX_DATA_DIR is not set:
# then WikiText-2 comes from the hub, and the hub must stay reachable.
ONLINE = not os.environ.get("DMX_DATA_DIR")
if not ONLINE:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

import copy
import logging
import math
import resource
import sys
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, Markdown, display
from matplotlib.lines import Line2D
from scipy import stats
from tqdm import TqdmWarning

# tqdm.auto (imported by dmx and transformers) warns that ipywidgets is missing; the bars are
# disabled anyway. The filter must be in place before those imports.
warnings.filterwarnings("ignore", category=TqdmWarning)

import dmx
import mx_spec
from dmx.assignment import Assignment, apply_assignment, select_by_sensitivity
from dmx.calibrate import CalibrationConfig, calibrate
from dmx.llm.data import calibration_windows, data_dir, test_token_ids
from dmx.llm.kl_baseline import reference_logits, score_layers
from dmx.llm.models import decoder_linear_names, load_model
from dmx.llm.perplexity import window_nlls
from dmx.llm.pipeline import quantize_model
from dmx.llm.rotation import RotationSpec, apply_rotation

# transformers imports torchao while loading the model; torchao logs that its optional CUDA
# kernels cannot load on a CPU machine, and torch logs a deprecation note about torchao's enum
# registrations. Neither concerns this notebook.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
# The miniature's matrices are small and the MX rounding runs in numpy (one core): a second
# torch thread mostly spins, and on a shared CPU it slows everything down. On a workstation,
# raise this (e.g. torch.set_num_threads(os.cpu_count())).
torch.set_num_threads(1)
start = time.perf_counter()

# $DMX_DATA_DIR (a clear error names what to set if the folder lacks the files), else the hub.
DATA = {"online": True} if ONLINE else {"data_dir": data_dir()}
SEQLEN, CALIB_WINDOWS, DMX_STEPS = 128, 2, 40
EVAL_SEQLEN, EVAL_WINDOWS = 256, 8
BLOCKS = (0, 29)
LOW, HIGH = "mxfp4_e2m1", "mxfp8_e4m3"
TARGET = 5.0  # the budget both methods are compared at, as in the README's headline
print("WikiText-2 from", "the Hugging Face hub (DMX_DATA_DIR is not set)" if ONLINE else "the folder in $DMX_DATA_DIR")

# %% [markdown]
# ## 1. Model, data and the full-precision reference
#
# `evaluate` returns the mean next-token NLL (nats/token) of each test window; perplexity is
# $\exp$ of their mean. Keeping the windows separate lets us estimate the noise in section 4.

# %%
model, tokenizer = load_model("smollm2-135m")
all_linears = decoder_linear_names(model)
try:
    windows = calibration_windows(tokenizer, CALIB_WINDOWS, SEQLEN, seed=0, **DATA)
    test_ids = test_token_ids(tokenizer, **DATA)
except (ConnectionError, OSError) as err:
    if not ONLINE:
        raise
    raise RuntimeError("DMX_DATA_DIR is not set and WikiText-2 could not be downloaded from the Hugging Face hub "
                       f"({err}); set DMX_DATA_DIR to a folder holding wikitext-2-raw-v1/ (README, set-up)") from err


def evaluate(m) -> torch.Tensor:
    """Mean NLL per token of each of the first EVAL_WINDOWS test windows (float64)."""
    return window_nlls(m, test_ids, seqlen=EVAL_SEQLEN, max_windows=EVAL_WINDOWS, progress=False) / EVAL_SEQLEN


def ppl(nll: torch.Tensor) -> float:
    return math.exp(float(nll.mean()))


fp_nll = evaluate(model)
reference = reference_logits(model, windows)  # p_ref: taken before any layer is quantized or rotated
print(f"{len(all_linears)} decoder linears; calibration windows {tuple(windows.shape)}; "
      f"test tokens {test_ids.shape[1]:,}, of which {EVAL_WINDOWS * EVAL_SEQLEN:,} are scored")
print(f"full-precision perplexity (first {EVAL_WINDOWS} windows of {EVAL_SEQLEN}): {ppl(fp_nll):.2f}")

# %% [markdown]
# ## 2. What a Hadamard rotation does to an MX block
#
# An MX block shares one power-of-two scale among 32 numbers, chosen from the block's largest
# magnitude (notebook 01). One outlier therefore sets the scale for 31 neighbours: they land on
# the coarse low end of FP4's grid or are flushed to zero, and the outlier itself may saturate.
# LLM activations have such outliers in a few channels.
#
# A **rotation** multiplies the input of a linear by an orthogonal matrix $Q$ and its weight by
# the same, $y = (xQ)(WQ)^\top = xW^\top$: in full precision nothing changes, but every MX block
# of $xQ$ and $WQ$ is now a mix of many original channels. A randomized Hadamard matrix
# ($\pm 1$ entries with random signs, scaled by $1/\sqrt{n}$) spreads an outlier evenly over the
# $n$ channels it mixes, so the blocks get a smaller **crest factor** (block maximum over block
# RMS) and the shared scale fits the other elements better. `dmx.llm.rotation` with
# `RotationSpec(kind="hadamard")` (`--rotation hadamard`) gives every decoder linear a
# block-diagonal randomized Hadamard of order 64 on its input (QuaRot-style, online). **The
# authors always rotate:** their benchmark configuration rotates with Hadamard matrices and learns
# SpinQuant rotations jointly with the offsets (`docs/FIDELITY.md`, row 16). This project's
# default is unrotated, for the reasons given there.
#
# Below, the running example of notebooks 01-02, the MLP down-projection of the last block (its
# input is the SwiGLU product, where outliers are large), quantized to MXFP4 before and after the
# rotation: the weight, and the activation it receives on the first calibration window.

# %%
REPO = Path(dmx.__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tutorials"))
from example_layer import NAME as EXAMPLE, example_weight  # noqa: E402

# the weight notebooks 01 and 02 read from the model file is the one this model computes with
assert np.array_equal(example_weight(), model.get_submodule(EXAMPLE).weight.detach().numpy())
rotated_model = copy.deepcopy(model)
apply_rotation(rotated_model, RotationSpec(kind="hadamard"))  # online Hadamard-64 on every linear input


def operands(m, name):
    """(weight, input activation on the first calibration window) of linear ``name`` as ``m`` runs it."""
    seen = {}

    def keep_input(module, args, output):  # a forward hook that returns None leaves the output alone
        seen["x"] = args[0]

    handle = m.get_submodule(name).register_forward_hook(keep_input)
    with torch.no_grad():
        m(windows[:1])
    handle.remove()
    return m.get_submodule(name).weight.detach(), seen["x"].detach().reshape(-1, seen["x"].shape[-1])


def block_stats(t: torch.Tensor) -> dict:
    """MXFP4 (floor scale) statistics of ``t``'s blocks of 32 along its last axis."""
    x = t.double().numpy()
    q = mx_spec.quantize(x.astype(np.float32), LOW)
    back = mx_spec.dequantize(q).astype(np.float64)
    blocks = x.reshape(x.shape[0], -1, 32)
    amax = np.abs(blocks).max(axis=-1)
    rms = np.sqrt((blocks**2).mean(axis=-1))
    scaled = amax / 2.0 ** (q.scales.astype(np.float64) - mx_spec.E8M0_BIAS)
    nonzero = x != 0
    return {"median crest factor (max / RMS)": np.median(amax[rms > 0] / rms[rms > 0]),
            "blocks whose maximum saturates": np.mean(scaled[amax > 0] > 6.0),
            "non-zero elements flushed to 0": np.mean(back[nonzero] == 0),
            "relative squared error": ((back - x) ** 2).sum() / (x**2).sum()}


before, after = operands(model, EXAMPLE), operands(rotated_model, EXAMPLE)
rows = ["| MXFP4, blocks of 32 | weight | weight, rotated | activation | activation, rotated |", "|---|---:|---:|---:|---:|"]
measured = [block_stats(t) for t in (before[0], after[0], before[1], after[1])]
for stat in measured[0]:
    cells = [f"{m[stat]:.2f}" if "crest" in stat else f"{m[stat]:.2%}" for m in measured]
    rows.append(f"| {stat} | " + " | ".join(cells) + " |")
display(Markdown(f"**`{EXAMPLE}`** (weight {tuple(before[0].shape)}, activation {tuple(before[1].shape)}):\n\n" + "\n".join(rows)))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=False)
for ax, (label, plain, turned) in zip(axes, (("weight", before[0], after[0]), ("activation", before[1], after[1]))):
    for t, name, style in ((plain, "no rotation", "-"), (turned, "Hadamard-64", "--")):
        blocks = t.double().numpy().reshape(-1, 32)
        rms = np.sqrt((blocks**2).mean(axis=-1))
        crest = np.abs(blocks).max(axis=-1)[rms > 0] / rms[rms > 0]
        ax.hist(crest, bins=np.linspace(1, 5.66, 60), histtype="step", lw=1.5, ls=style, density=True, label=name)
    ax.set(xlabel="crest factor of an MX block (max / RMS; at most √32 ≈ 5.66)", ylabel="density of blocks",
           title=f"{EXAMPLE.replace('model.layers.', 'L')}: {label}")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
lowered = {stat: measured[3][stat] < measured[2][stat] for stat in measured[0]}
print("after the rotation, for the activation: " +
      "; ".join(f"{stat}: {'lower' if low else 'NOT lower'}" for stat, low in lowered.items()))
# What the text below says of this layer (the build fails if it stops holding):
assert all(lowered[stat] for stat in ("median crest factor (max / RMS)", "non-zero elements flushed to 0",
                                      "relative squared error"))

# %% [markdown]
# Read the table column by column. The **activation** is where the rotation acts: its blocks'
# crest factor drops (the histogram moves left, away from the $\sqrt{32}$ limit of a block with
# one outlier), far fewer of its non-zero elements are flushed to zero, and its error falls (the
# line under the figure names what went down). The **weight** changes little: weights have few
# outliers to begin with. One number the rotation does not move much is the share of blocks whose
# maximum saturates: that depends on where in its binade the block maximum falls (FP4 saturates
# the top quarter, $(6, 8)$, of the binade $[4, 8)$), not on how the rest of the block looks. What
# the rotation buys is the other 31 elements of each block, which no longer sit under an outlier's
# scale. This is why uniform MXFP4 loses much less perplexity on a rotated model (section 7 and the
# headline table in docs/RESULTS.md), and why a rotation changes *which* layers are sensitive: a method
# that ranks layers is ranking a different problem after it.

# %% [markdown]
# ## 3. Uniform formats
#
# `dmx.llm.pipeline.quantize_model` replaces the selected `nn.Linear`s by `DMXLinear` (weights and
# input activations MX-quantized in blocks of 32 along the reduction dimension; one learnable
# offset each). Fixing every layer to one standard format gives the simplest baselines: MXFP4
# (4 bits) and, at 6 bits, MXFP6 E2M3, which needs no calibration at all. (MXFP8 is left out to
# keep the notebook within its time; its perplexity is close to full precision's.)

# %%
chosen = [n for n in all_linears if int(n.split(".")[2]) in BLOCKS]
layers = quantize_model(model, "fp8_fp4", names=chosen)
sizes = {n: layer.linear.weight.numel() for n, layer in layers.items()}
short = [n.replace("model.layers.", "L").replace("self_attn.", "").replace("mlp.", "") for n in layers]
UNIFORM = ("mxfp4_e2m1", "mxfp6_e2m3")
uniform_nll = {}
for fmt in UNIFORM:
    dmx.set_fixed_format(model, fmt)
    uniform_nll[fmt] = evaluate(model)
    print(f"all {len(layers)} layers {fmt}: perplexity {ppl(uniform_nll[fmt]):.2f}")

# %% [markdown]
# ## 4. How large is the evaluation noise?
#
# Two assignments are evaluated on the same windows, so compare them window by window: the
# difference $d_w$ of their NLLs, its mean $\bar d$ and standard error
# $\mathrm{SE} = \mathrm{sd}(d_w)/\sqrt{n}$ over the $n = 8$ windows. A perplexity ratio is
# $\exp(\bar d)$. With 8 windows the standard error is itself uncertain, so the 95 % interval is
# $\bar d \pm t_{0.975,\,n-1}\,\mathrm{SE}$ with Student's $t$ quantile for $n - 1 = 7$ degrees of
# freedom (printed below; larger than 2): a difference whose interval excludes 0 is called
# better or worse, otherwise "within noise". One caveat remains: the windows are consecutive
# chunks of one test text, not independent draws, so the interval is a guide, not a test.

# %%
T_QUANTILE = float(stats.t.ppf(0.975, EVAL_WINDOWS - 1))


def paired(nll_a: torch.Tensor, nll_b: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error over windows of nll_a - nll_b (nats/token)."""
    d = nll_a - nll_b
    return float(d.mean()), float(d.std(unbiased=True) / math.sqrt(d.numel()))


def ratio_text(nll_a, nll_b) -> str:
    mean, se = paired(nll_a, nll_b)
    if mean == 0 and se == 0:
        verdict = "identical on every window"  # e.g. two methods that chose the same layers
    else:
        verdict = "within noise" if abs(mean) <= T_QUANTILE * se else ("worse" if mean > 0 else "better")
    return f"ppl ×{math.exp(mean):.3f} (d = {mean:+.4f} ± {se:.4f} nats/token: {verdict})"


print(f"t quantile for {EVAL_WINDOWS - 1} degrees of freedom: {T_QUANTILE:.3f}")
print("per-window NLL of full precision (nats/token):", [round(float(v), 3) for v in fp_nll])
print(f"mxfp6_e2m3 vs mxfp4_e2m1: {ratio_text(uniform_nll['mxfp6_e2m3'], uniform_nll['mxfp4_e2m1'])}")
print(f"mxfp6_e2m3 vs full precision: {ratio_text(uniform_nll['mxfp6_e2m3'], fp_nll)}")

# %% [markdown]
# ## 5. KL sensitivity scores and the greedy selection
#
# One score per layer: FP4 for that layer, FP8 for the other 13 (one forward pass over the
# calibration windows each). Start with every layer in FP8 (8 bits) and demote the least
# sensitive layers to FP4 (4 bits) until the average element bits is at or below the target.
#
# *Two ways to count bits.* The budget is a **per-layer mean** (each layer counts once, the
# method's definition). A reader who cares about memory wants bits **per stored weight**
# (`Assignment.element_bits_by_params`): the MLP matrices are several times larger than the
# attention projections (printed below), so an assignment that keeps MLPs in FP8 stores more bits
# per weight than its per-layer mean says.


# %%
def kl_point(m, lays, label):
    """Score ``lays`` of ``m`` by KL, select at TARGET, evaluate; returns the point."""
    tic = time.perf_counter()
    scores = score_layers(m, lays, windows, low_format=LOW, high_format=HIGH, reference=reference, progress=False)
    formats = select_by_sensitivity(scores, list(lays), low_format=LOW, high_format=HIGH, target_bits=TARGET)
    assignment = Assignment.from_formats(formats, layer_sizes=sizes, provenance={"method": "kl", "target_bits": TARGET})
    apply_assignment(lays, assignment)
    point = {"method": "kl", "assignment": assignment, "nll": evaluate(m), "scores": scores}
    print(f"{label}: scored {len(scores)} layers in {time.perf_counter() - tic:.0f} s; per-layer mean "
          f"{assignment.element_bits:.2f} bits, per stored weight {assignment.element_bits_by_params:.2f} bits, "
          f"{sum(f == HIGH for f in formats.values())} layers in FP8, perplexity {ppl(point['nll']):.2f}")
    return point


print("weights per layer:", {s: sizes[n] for s, n in zip(short[:7], layers)}, "(same in both blocks)")
points = {"none": {"KL": kl_point(model, layers, f"KL @ {TARGET:g}, no rotation")}}

# %% [markdown]
# ## 6. dMX on the default recipe, without a rotation
#
# `dmx.calibrate.calibrate` learns the 14 offsets jointly: each step runs the quantized model
# with soft formats on a calibration window, adds the hinge $\max(0, 5(\bar b - 5))$ to the
# cross-entropy and takes an SGD step on the offsets only; the temperature holds at 0.4 for the
# first 60 % of the steps and anneals to 20 over the rest. We pass only the budget, the number
# of steps, one window per step and `final_rounding="budget"`; everything else is the library's
# default (`CalibrationConfig`, the authors' recipe, see `docs/FIDELITY.md`).
#
# `final_rounding="budget"` is **this project's addition**, not the authors' method: it deploys
# what dMX learned, the *ranking* of the layers by $|\hat\beta|$, at exactly the budget (every
# layer starts in FP8 and the smallest $|\hat\beta|$ are demoted until the average is at most
# 5 bits, the same fill rule as the KL greedy), so both methods are compared at equal bits and
# only their ranking differs. The method's own rule, FP8 iff $|\hat\beta| > 1$ ("threshold"),
# is printed beside it.

# %%
config = CalibrationConfig(family="fp8_fp4", target_bits=TARGET, steps=DMX_STEPS, batch_size=1,
                           checkpoint_every=DMX_STEPS, final_rounding="budget")
print({k: getattr(config, k) for k in ("beta_init", "lr", "momentum", "nesterov", "clip_grad_norm",
                                        "fractional_scale", "lam", "final_rounding")})


def dmx_point(m, lays, label):
    """Calibrate ``lays`` of ``m`` with ``config``; returns the point with the soft-bit and offset histories."""
    dmx.set_fixed_format(m, None)  # back to learnable offsets
    metrics, offsets = [], [[config.beta_init] * len(lays)]

    def record(step, values):
        metrics.append(values)
        offsets.append([layer.beta_hat.item() for layer in lays.values()])

    tic = time.perf_counter()
    assignment = calibrate(m, lays, windows, config, progress=False, on_step=record)
    point = {"method": "dmx", "assignment": assignment, "nll": evaluate(m), "bits": [v["bits"] for v in metrics],
             "offsets": torch.tensor(offsets)}
    above = sum(b > TARGET for b in point["bits"])
    print(f"{label}: {DMX_STEPS} steps in {time.perf_counter() - tic:.0f} s; soft bits above the target (hinge "
          f"active) at {above} of {DMX_STEPS} steps; threshold rule "
          f"{assignment.provenance['threshold_element_bits']:.2f} bits; budget rounding: per-layer mean "
          f"{assignment.element_bits:.2f} bits, per stored weight {assignment.element_bits_by_params:.2f} bits, "
          f"perplexity {ppl(point['nll']):.2f}")
    return point


points["none"]["dMX"] = dmx_point(model, layers, f"dMX @ {TARGET:g}, no rotation")

# %% [markdown]
# ## 7. The same miniature on the rotated model
#
# The rotated copy of section 2, with the same 14 layers, the same calibration windows, the same
# KL procedure and the same dMX settings. (The full-precision reference is shared: the rotation
# does not change the model's function.)

# %%
rotated_layers = quantize_model(rotated_model, "fp8_fp4", names=chosen)
rotated_uniform = {}
for fmt in ("mxfp4_e2m1",):
    dmx.set_fixed_format(rotated_model, fmt)
    rotated_uniform[fmt] = evaluate(rotated_model)
    print(f"rotated, all {len(layers)} layers {fmt}: perplexity {ppl(rotated_uniform[fmt]):.2f}")
points["Hadamard-64"] = {"KL": kl_point(rotated_model, rotated_layers, f"KL @ {TARGET:g}, Hadamard-64")}
points["Hadamard-64"]["dMX"] = dmx_point(rotated_model, rotated_layers, f"dMX @ {TARGET:g}, Hadamard-64")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
for ax, rotation in zip(axes[:2], points):
    offsets = points[rotation]["dMX"]["offsets"].abs()
    for index, name in enumerate(layers):
        ax.plot(offsets[:, index], color="tab:blue" if "attn" in name else "tab:orange", lw=1)
    ax.axhline(1, color="k", ls=":", lw=1)  # |beta_hat| = 1: the FP4/FP8 threshold
    ax.axvline(0.6 * DMX_STEPS, color="gray", lw=0.8)  # end of the hold phase
    ax.set(title=f"{rotation}: $|\\hat\\beta|$ per layer (dotted: FP8 threshold)", xlabel="step",
           ylabel=r"$|\hat\beta|$ (only the magnitude counts)", yscale="symlog", ylim=(0, None))
    ax.legend(handles=[Line2D([], [], color="tab:blue", label="attention"),
                       Line2D([], [], color="tab:orange", label="MLP")], fontsize=8)
for rotation, style in zip(points, ("-", "--")):
    axes[2].plot(range(1, DMX_STEPS + 1), points[rotation]["dMX"]["bits"], style, label=f"soft bits, {rotation}")
axes[2].axhline(TARGET, color="k", ls=":", lw=1, label="target (hinge active above)")
axes[2].set(title="soft average bits at each step", xlabel="step", ylabel="bits (per-layer mean)")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The first step's soft bits sit near 4: at $\hat\beta = 0$ every layer starts at the flat low
# end of the sigmoid (notebook 02, exercise 2), the hinge is silent, and only the cross-entropy
# pulls the offsets up. Momentum 0.99 turns that steady pull into a growing velocity; within the
# hold phase (grey line) the soft bits reach the budget and the hinge starts pushing back (the
# printed counts say at how many steps it was active). The annealing then drives each
# $|\hat\beta|$ away from 1. With only a handful of steps, as an earlier version of this notebook
# ran, the offsets never got there and the threshold rule deployed everything in FP4: the method
# needs enough steps for its momentum to build up.

# %% [markdown]
# ## 8. Which layers did each method keep in FP8, and what did it cost?
#
# The figure shows the assignments; the table their cost and perplexity; the lines under it how
# much KL and dMX agree, and where the running example (`model.layers.29.mlp.down_proj`) ended up.

# %%
rows_grid, labels = [], []
for rotation in points:
    for method in ("KL", "dMX"):
        formats = points[rotation][method]["assignment"].formats
        rows_grid.append([8 if formats[n] == HIGH else 4 for n in layers])
        labels.append(f"{method}, {rotation}")
fig, ax = plt.subplots(figsize=(9, 2.6))
ax.imshow(rows_grid, aspect="auto", cmap="viridis", vmin=4, vmax=8)
ax.set_yticks(range(len(labels)), labels)
ax.set_xticks(range(len(short)), short, rotation=70, fontsize=8)
ax.set(title="bright = FP8, dark = FP4", xlabel="layer", ylabel="method, rotation")
fig.tight_layout()
plt.show()

rows = ["| rotation | assignment | bits (per weight) | perplexity | vs KL at the same rotation |", "|---|---|---|---:|---|"]
rows.append(f"| — | full precision | fp32 | {ppl(fp_nll):.2f} | |")
for rotation, uniform in (("none", uniform_nll), ("Hadamard-64", rotated_uniform)):
    kl_nll = points[rotation]["KL"]["nll"]
    for fmt, nll in uniform.items():
        bits = Assignment.from_formats({n: fmt for n in layers}).element_bits
        rows.append(f"| {rotation} | uniform {fmt} | {bits:g} | {ppl(nll):.2f} | {ratio_text(nll, kl_nll)} |")
    for method, point in points[rotation].items():
        a = point["assignment"]
        versus = "" if method == "KL" else ratio_text(point["nll"], kl_nll)
        rows.append(f"| {rotation} | {method} @ {TARGET:g} | {a.element_bits:.2f} ({a.element_bits_by_params:.2f}) | "
                    f"{ppl(point['nll']):.2f} | {versus} |")
display(Markdown("\n".join(rows)))
for rotation in points:
    kl_high = {n for n, f in points[rotation]["KL"]["assignment"].formats.items() if f == HIGH}
    dmx_high = {n for n, f in points[rotation]["dMX"]["assignment"].formats.items() if f == HIGH}
    mean, se = paired(points[rotation]["dMX"]["nll"], points[rotation]["KL"]["nll"])
    outcome = ("dMX better" if mean < -T_QUANTILE * se else "KL better" if mean > T_QUANTILE * se
               else "no difference beyond the noise")
    print(f"{rotation}: KL and dMX share {len(kl_high & dmx_high)} of {len(kl_high)} FP8 layers; "
          f"dMX vs KL: {outcome}")
for rotation in points:  # the running example, from its KL score to its assignment
    scores = points[rotation]["KL"]["scores"]
    rank = sorted(scores, key=scores.get, reverse=True).index(EXAMPLE) + 1
    print(f"{rotation}: {EXAMPLE} is KL's number {rank} of {len(scores)} (most sensitive first); deployed as "
          + ", ".join(f"{points[rotation][m]['assignment'].formats[EXAMPLE]} by {m}" for m in ("KL", "dMX"))
          + f"; its final |beta_hat| {float(points[rotation]['dMX']['offsets'][-1, list(layers).index(EXAMPLE)].abs()):.2f}")
# What the prose below claims of this miniature (the build fails if one stops holding):
for rotation in points:
    mean, se = paired(points[rotation]["dMX"]["nll"], points[rotation]["KL"]["nll"])
    assert mean >= -T_QUANTILE * se  # dMX does not beat KL in this miniature
assert ppl(rotated_uniform["mxfp4_e2m1"]) < ppl(uniform_nll["mxfp4_e2m1"])  # rotating makes MXFP4 cheaper
for rotation in points:
    run = points[rotation]["dMX"]
    assert any(b > TARGET for b in run["bits"])  # the hinge was active
    budget_bits = run["assignment"].element_bits
    assert TARGET - 4 / len(layers) < budget_bits <= TARGET + 1e-9  # budget rounding: within one layer below

# %% [markdown]
# **What the miniature shows, and why.** The lines above give the outcome in each set-up, the
# table the sizes of the differences and their noise: **in this miniature dMX does not beat KL,
# with or without the rotation** (the cell asserts it). That is not where dMX can be expected to
# beat KL: with 14 layers the interactions that KL ignores are
# few, KL's one-at-a-time scores are measured on the very windows both methods calibrate on, and
# dMX sees far fewer calibration tokens than the full-scale runs and the authors (section 9's
# table). What the miniature does show is the mechanics: the rotation makes
# uniform MXFP4 much cheaper, the hinge was active in both set-ups, and budget rounding deploys
# both rankings within one layer below the budget, at equal bits (the cell above asserts all
# three). The method's own threshold rule lands wherever the annealing leaves the offsets
# (printed in sections 6 and 7): nothing holds it at the budget, and in a 40-step run on 14 layers
# which side of $|\hat\beta| = 1$ a layer ends on is fragile (without the rotation the same source
# kept 4 layers above the threshold on one machine type and 5 on another, whose float kernels
# differ in the last bits). That is why the comparison deploys by budget rounding. The full-scale
# results (section 10) are where the question is answered.
#
# ## 9. Miniature, README headline and the authors' set-up side by side
#
# The headline's settings (docs/RESULTS.md) are read from its results files (the folders
# `tools/readme_results.py` reads, through its `HEADLINE_FOLDERS`); the authors' from their
# configuration as recorded in `docs/FIDELITY.md` (rows 14-16).

# %%
sys.path.insert(0, str(REPO / "tools"))
import readme_results  # noqa: E402  (the module that writes the README's results tables)

from dmx.llm.sweep.results import summarize_points  # noqa: E402

headline = {rotation: readme_results.load_json(REPO / "results" / folder / "results.json")
            for rotation, folder in readme_results.HEADLINE_FOLDERS.items()}
first = next(iter(headline.values()))
settings = next(p["settings"] for p in first["points"] if p["method"] == "dmx")
cal = settings["calibration"]
tokens = cal["steps"] * cal["batch_size"] * settings["calib_seqlen"]
headline_target = next(p["target"] for p in first["points"] if p["method"] == "dmx")
rows = ["| | this miniature | README headline | authors' set-up |", "|---|---|---|---|",
        f"| layers quantized | {len(layers)} of {len(all_linears)} | all {len(all_linears)} decoder linears | all |",
        f"| rotation | none, and Hadamard-64 (online) | {' and '.join(headline)} | Hadamard, and SpinQuant rotations learned jointly |",
        f"| budget | {TARGET:g} bits | {headline_target:g} bits | a bit target per run |",
        f"| dMX steps × tokens per step | {DMX_STEPS} × {SEQLEN} = {DMX_STEPS * SEQLEN:,} tokens | "
        f"{cal['steps']} × {cal['batch_size']} × {settings['calib_seqlen']} = {tokens:,} tokens, "
        f"{sum(p['method'] == 'dmx' for p in first['points'])} seeds | "
        "400 × 8 × 2048 = 6.5 M tokens (FineWeb) |",
        "| deployment | budget rounding (project's addition) | budget rounding (project's addition) | threshold: FP8 iff \\|β̂\\| > 1 |",
        f"| evaluation | {EVAL_WINDOWS} × {EVAL_SEQLEN} WikiText-2 test tokens | "
        f"{first['config']['max_windows']} × {first['config']['seqlen']} WikiText-2 test tokens | the paper's own |"]
display(Markdown("\n".join(rows)))

# %% [markdown]
# ## 10. What the full-scale runs found
#
# The headline (docs/RESULTS.md) quantizes all 210 decoder linears of this model at a 5-bit budget: full
# precision, uniform MXFP4 and MXFP8, the KL heuristic, dMX (the default recipe, budget rounding)
# over several calibration seeds, and a *random control* (random choices of the FP8 layers filling
# the same budget, several draws) that tells whether a ranking beats chance, each without and with
# the Hadamard rotation. The cell reads the same committed files as the tables of docs/RESULTS.md (through
# `tools/readme_results.py`), so it always shows the current results, and writes the
# verdict from them.

# %%
def headline_rows(doc):
    """{method: summary row} (uniform rows keyed by format) and the dMX seeds' perplexities."""
    rows = {}
    for r in summarize_points(doc["points"]):
        rows[r["format"] if r["method"] == "uniform" else r["method"]] = r
    seeds = [p["perplexity"] for p in doc["points"] if p["method"] == "dmx" and p.get("perplexity") is not None]
    return rows, seeds


def verdict_text(rotation, doc):
    rows, seeds = headline_rows(doc)
    kl, dm, rnd = rows.get("kl"), rows.get("dmx"), rows.get("random")
    if kl is None or dm is None:
        return f"* **{rotation}**: the results file does not hold both KL and dMX yet; no verdict."
    below = sum(s < kl["perplexity_mean"] for s in seeds)
    if below == len(seeds):
        head = f"dMX beats KL: every one of its {len(seeds)} seeds lies below KL"
    elif below == 0:
        head = f"KL wins: every one of dMX's {len(seeds)} seeds lies above KL"
    else:
        head = f"no clear winner: {below} of dMX's {len(seeds)} seeds lie below KL"
    text = (f"* **{rotation}** ({doc['config']['max_windows']} test windows of {doc['config']['seqlen']} tokens): "
            f"{head} (dMX {dm['perplexity_mean']:.2f} ± {dm['perplexity_std']:.2f}, range "
            f"{dm['perplexity_min']:.2f}–{dm['perplexity_max']:.2f}; KL {kl['perplexity_mean']:.2f}; uniform MXFP4 "
            f"{rows['mxfp4_e2m1']['perplexity_mean']:.2f}, MXFP8 {rows['mxfp8_e4m3']['perplexity_mean']:.2f}).")
    if rnd is not None:
        text += (f" The random control averages {rnd['perplexity_mean']:.2f}: dMX's ranking "
                 f"{'beats chance on every seed' if max(seeds) < rnd['perplexity_min'] else 'does not always beat chance'}.")
    return text


display(Markdown("\n".join(verdict_text(rotation, doc) for rotation, doc in headline.items())))
for rotation, folder in readme_results.HEADLINE_FOLDERS.items():
    display(Image(filename=str(REPO / "results" / folder / "pareto.png"), width=460))

# %% [markdown]
# And at 6 bits? The earlier sweep in docs/RESULTS.md (the project's first recipe for dMX; the uniform and
# KL rows do not depend on the recipe) has the 6-bit points; the cell reads them through the same
# function that writes that table.

# %%
def table_cells(markdown):
    """{row label: [cells]} of a Markdown table, with the header row under the key "header"."""
    lines = [line.strip().strip("|").split("|") for line in markdown.strip().splitlines()]
    table = {"header": [c.strip() for c in lines[0]]}
    table.update({cells[0].strip(): [c.strip().strip("*") for c in cells[1:]] for cells in lines[2:]})
    return table


def sweep_ppl(table, label, column):
    """Perplexity of row ``label`` in rotation column ``column`` (cells: bits, ppl, gap per column), or None."""
    cells = table.get(label)
    return float(cells[3 * column + 1]) if cells and cells[3 * column + 1] else None


sweep = table_cells(readme_results.table_sweep_rotations(REPO))
columns = [h.split(":")[0] for h in sweep["header"][1:] if h.endswith("bits")]
lines = []
for index, rotation in enumerate(columns):
    uniform6 = sweep_ppl(sweep, "uniform MXFP6 E2M3", index)
    mixed = {label: sweep_ppl(sweep, label, index) for label in ("KL @ 6", "dMX @ 6, thr", "dMX @ 6, budget")
             if sweep_ppl(sweep, label, index) is not None}
    if uniform6 is None or not mixed:
        continue
    best = min(mixed, key=mixed.get)
    lines.append(f"* **{rotation}**: uniform MXFP6 E2M3 {uniform6:.2f}; best mixed FP4/FP8 assignment at 6 bits: "
                 f"{best} {mixed[best]:.2f}; uniform MXFP6 is {'better' if uniform6 < mixed[best] else 'worse'}.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# **The verdict, in words.** Read it from the two lists above, which are written from the
# current results files:
#
# * *Where KL wins.* Without a rotation, the KL heuristic has been the better choice at 5 bits in
#   this project's headline: its one-at-a-time scores find the layers whose FP4 error hurts
#   most, and dMX's short calibration on an unrotated model ranks them less reliably (its seeds
#   spread widely; the budget study in docs/RESULTS.md asks whether more calibration changes that).
# * *Where dMX helped, and what held up.* With the Hadamard rotation, in the set-up the authors
#   always use, dMX's jointly learned ranking beat KL at equal bits on every seed of the headline,
#   by more than its seeds spread. But the headline scores the windows that also chose the recipe,
#   against one KL draw of 2 × 256 tokens. The Pareto study asked again on held-out windows against
#   three KL draws of 8 × 512 tokens at several budgets (its verdict on the paper's claim over KL is
#   printed below the lists): on the fixed Hadamard the win does not hold. Under the authors'
#   learned rotation, with KL scored on the very rotation each dMX seed learned, dMX's ranking
#   beats KL's at 4.5 bits (read with every other budget too), by less at 5 bits and not at 6 or 7:
#   that is the one place the claim holds here. Rotate first (`--rotation hadamard`), then
#   calibrate: the rotation helps both methods, and which ranking is better depends on the
#   rotation and the budget on this model.
# * *Both beat chance:* the random control is far above both, so either ranking carries signal.
# * *At 6 bits, try uniform MXFP6 first.* A single MXFP6 E2M3 format for every layer, with no
#   calibration at all, has beaten every mixed FP4/FP8 assignment at the same 6 bits in the
#   earlier sweep, with and without rotation. Mixed precision pays off below 6 bits, where no
#   uniform format sits.
#
# If a rerun of the results changes a verdict, the lists above change with it; the
# cell below prints the held-out study's verdict and checks that this prose still agrees with
# them all, so the build fails rather than letting the words go stale.

# %%
from tools.study_tables import claims as paper_claims  # noqa: E402  (the README's claims table)

over_kl = next((status, evidence) for claim, status, evidence in paper_claims(REPO) if "improves over KL" in claim)
print(f"held-out Pareto study, the paper's claim that dMX improves over KL: {over_kl[0]} "
      f"({over_kl[1].split(' (paired')[0]})")
assert over_kl[0] == "partly" and "dMX better at 1 of" in over_kl[1], "the held-out study's verdict changed; update the prose above"
claims = {"none": "KL wins", "Hadamard-64": "dMX beats KL"}
for rotation, doc in headline.items():
    said = verdict_text(rotation, doc)
    assert claims[rotation] in said and "beats chance on every seed" in said, \
        f"the README's verdict for {rotation} changed: {said}; update the prose above"
    rows_r, _ = headline_rows(doc)
    assert rows_r["kl"]["perplexity_mean"] < rows_r["random"]["perplexity_min"]  # "both beat chance"
rows_h, seeds_h = headline_rows(headline["Hadamard-64"])
assert max(seeds_h) < rows_h["kl"]["perplexity_mean"]  # "by more than its seeds spread"
assert lines and all("uniform MXFP6 is better" in line for line in lines), "the 6-bit verdict changed; update the prose"
usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
print(f"notebook ran in {time.perf_counter() - start:.0f} s, peak memory {usage:.0f} MiB")

# %% [markdown]
# What these numbers rest on: one model (the embedded Q4_1-derived SmolLM2-135M), one calibration
# set-up (section 9), a 5-bit budget, a few seeds (counted above), and the first test windows — not the full test
# set, so the absolute perplexities are not comparable with papers. The seeds vary the
# calibration (dMX) or the draw (random); the test windows are the same for every row. The
# section *Results under the authors' recipe* of docs/RESULTS.md has the discussion and the commands.
#
# ## Recap
#
# | idea | in code |
# |---|---|
# | a rotation mixes channels so MX blocks have smaller crest factors; the authors always rotate | `RotationSpec(kind="hadamard")`, `apply_rotation` |
# | KL score of a layer: that layer low, all others high, KL to full precision | `score_layers` |
# | greedy: demote the least sensitive layers until the budget is met | `select_by_sensitivity` |
# | dMX: learn offsets on CE + $\max(0, \lambda(\bar b - b_t))$ with an annealed sigmoid | `calibrate`, `CalibrationConfig` |
# | default recipe: start $\hat\beta = 0$, lr 1, momentum 0.99, clip 1.0, `maxfloat` scale | `docs/FIDELITY.md` |
# | deploy at exactly the budget from the learned $|\hat\beta|$ ranking (the project's addition) | `final_rounding="budget"` |
# | bits per layer vs per stored weight | `element_bits`, `element_bits_by_params` |
# | is a difference real? paired per-window differences, Student's $t$ interval | `window_nlls`, `scipy.stats.t` |
#
# ## Exercises
#
# 1. Uniform MXFP6 E2M3 against KL @ 5 without rotation: how many standard errors apart are they?
#    How many test windows would you need to resolve a 1 % perplexity difference, if the
#    per-window standard deviation of the difference stayed as it is?
# 2. Run `select_by_sensitivity` on the unrotated KL scores with `weighting="elements"` and
#    `sizes=sizes` at 5 bits. How many layers does it demote compared with the per-layer mean,
#    and what happens to the per-layer mean bits?
# 3. The method's own threshold rule: which layers would it have kept in FP8 in each miniature,
#    and how do they differ from the budget-rounded assignment?
#
# Each solution is a collapsed code cell below (click to open it): it computes the answer and
# asserts what the notes say, so the build fails if a solution stops being true.
#
# <details><summary>Solution notes (click)</summary>
#
# 1. The number of standard errors is $|\bar d| / \mathrm{SE}$. A 1 % perplexity difference is
#    $\bar d \approx \ln 1.01 \approx 0.01$ nats/token; to see it at about two standard errors
#    you need $\mathrm{sd}(d_w)/\sqrt{n} \le 0.005$, i.e. $n \ge (\mathrm{sd}(d_w)/0.005)^2$
#    windows of the same length (the cell computes both).
# 2. Weighted by elements, the budget counts bits per stored weight, and the MLP matrices are
#    the large ones: keeping one of them in FP8 costs several attention projections' worth. The
#    greedy therefore demotes *more* layers (in the same order) until the per-weight average is at
#    most 5 bits, and the per-layer mean ends *below* 5 bits.
# 3. Threshold: FP8 iff $|\hat\beta| > 1$ at the end; the cell lists where it and the budget
#    rounding disagree in each set-up, and the bits each deploys.
#
# </details>

# %% [solution]
# Exercise 1: uniform MXFP6 E2M3 vs KL @ 5, no rotation.
mean, se = paired(uniform_nll["mxfp6_e2m3"], points["none"]["KL"]["nll"])
sd = se * math.sqrt(EVAL_WINDOWS)
needed = math.ceil((sd / 0.005) ** 2)
print(f"exercise 1: {abs(mean) / se:.1f} standard errors apart; about {needed} windows of {EVAL_SEQLEN} tokens "
      "would resolve a 1 % difference")
assert se > 0 and needed == math.ceil((paired(uniform_nll["mxfp6_e2m3"], points["none"]["KL"]["nll"])[1]
                                      * math.sqrt(EVAL_WINDOWS) / 0.005) ** 2)

# %% [solution]
# Exercise 2: the KL greedy weighted by stored weights.
kl_scores = points["none"]["KL"]["scores"]
by_mean = points["none"]["KL"]["assignment"]
by_elements = select_by_sensitivity(kl_scores, list(layers), low_format=LOW, high_format=HIGH, target_bits=TARGET,
                                    sizes=sizes, weighting="elements")
demoted = {name: sum(f == LOW for f in formats.values()) for name, formats in
           (("per-layer mean", by_mean.formats), ("per stored weight", by_elements))}
per_layer_mean = Assignment.from_formats(by_elements).element_bits
print(f"exercise 2: layers demoted to FP4: {demoted}; per-layer mean bits with the weighted greedy: "
      f"{per_layer_mean:.2f}")
assert demoted["per stored weight"] >= demoted["per-layer mean"]  # more (or as many) demotions
assert per_layer_mean <= TARGET  # the per-layer mean ends at or below the budget
assert Assignment.from_formats(by_elements, weighting="elements", layer_sizes=sizes).element_bits <= TARGET

# %% [solution]
# Exercise 3: the threshold rule's FP8 layers against budget rounding's, per set-up.
for rotation in points:
    point = points[rotation]["dMX"]
    final = point["offsets"][-1].abs()
    threshold_high = {name for name, value in zip(layers, final) if value > 1}
    budget_high = {n for n, f in point["assignment"].formats.items() if f == HIGH}
    bits = Assignment.from_formats({n: HIGH if n in threshold_high else LOW for n in layers}).element_bits
    print(f"exercise 3, {rotation}: threshold keeps {len(threshold_high)} layers in FP8 ({bits:.2f} bits), "
          f"budget rounding {len(budget_high)}; only in the threshold set: "
          f"{sorted(short[list(layers).index(n)] for n in threshold_high - budget_high)}, only in the budget set: "
          f"{sorted(short[list(layers).index(n)] for n in budget_high - threshold_high)}")
    assert abs(bits - point["assignment"].provenance["threshold_element_bits"]) < 1e-9
