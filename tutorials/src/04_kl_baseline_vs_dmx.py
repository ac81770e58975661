# Source of tutorials/04_kl_baseline_vs_dmx.ipynb (build: .venv/bin/python tutorials/build.py 04)

# %% [markdown]
# # 04 · KL baseline vs. dMX on SmolLM2-135M
#
# **After this notebook you can**
#
# * compute per-layer KL sensitivity scores and the greedy KL assignment under a bit budget;
# * run a dMX calibration with the library's default recipe and deploy it at an exact budget;
# * read average bits two ways (per-layer mean and per stored weight) and judge whether a
#   perplexity difference is larger than the evaluation noise;
# * say what the full-scale experiments of this project found, and what that rests on.
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
# **This is a miniature.** To stay within a few minutes on 2 CPU cores it calibrates on 2
# windows of 128 tokens, quantizes only the 14 linears of the first and the last decoder block
# (the other 196 stay in full precision), runs dMX for 8 steps and measures perplexity on the
# first 4 windows of 512 test tokens. The method's optimiser settings (lr 1, Nesterov momentum
# 0.99, gradient-norm clipping 1.0, start at $\hat\beta = 0$) are the authors' and are made for
# ~200 layers and hundreds of steps; section 5 shows what they do on 14 layers in 8 steps.
# Section 8 reads the full-scale results, which are what the method should be judged on.
#
# References: [OCP MX v1.0 specification](https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf),
# the dMX paper ([arXiv 2606.04115](https://arxiv.org/abs/2606.04115)),
# [torchao's MX formats](https://github.com/pytorch/ao/tree/main/torchao/prototype/mx_formats),
# and the project's [README](../README.md) (section *Results*).
# The data directory comes from `$DMX_DATA_DIR` (it holds WikiText-2; see the README).

# %%
%matplotlib inline
import os

# tqdm reads TQDM_* defaults when it is first imported: this silences the progress bars that
# transformers draws while converting the GGUF file (it offers no switch for them). Our own
# calls pass progress=False anyway.
os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedded model never needs the network

import csv
import json
import logging
import math
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, Markdown, display
from matplotlib.lines import Line2D
from tqdm import TqdmWarning

# tqdm.auto (imported by dmx and transformers) warns that ipywidgets is missing; the bars are
# disabled anyway. The filter must be in place before those imports.
warnings.filterwarnings("ignore", category=TqdmWarning)

import dmx
from dmx.assignment import Assignment, apply_assignment, demotion_order, select_by_sensitivity
from dmx.calibrate import CalibrationConfig, calibrate
from dmx.data import calibration_windows, data_dir, test_token_ids
from dmx.kl_baseline import kl_to_reference, reference_logits, score_layers
from dmx.models import decoder_linear_names, load_model
from dmx.offset import offset_to_beta
from dmx.perplexity import window_nlls
from dmx.plots import pareto_figure
from dmx.pipeline import quantize_model

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

DATA_DIR = data_dir()  # $DMX_DATA_DIR; raises a clear error naming what to set if it is missing
SEQLEN, CALIB_WINDOWS, DMX_STEPS = 128, 2, 8
EVAL_SEQLEN, EVAL_WINDOWS = 512, 4
BLOCKS = (0, 29)
LOW, HIGH = "mxfp4_e2m1", "mxfp8_e4m3"
TARGET = 6.0  # the budget both methods are compared at; uniform MXFP6 sits exactly on it

# %% [markdown]
# ## 1. Model, data and the full-precision reference
#
# `evaluate` returns the mean next-token NLL (nats/token) of each test window; perplexity is
# $\exp$ of their mean. Keeping the windows separate lets us estimate the noise in section 3.

# %%
model, tokenizer = load_model("smollm2-135m")
all_linears = decoder_linear_names(model)
windows = calibration_windows(tokenizer, CALIB_WINDOWS, SEQLEN, seed=0, data_dir=DATA_DIR)
test_ids = test_token_ids(tokenizer, DATA_DIR)


def evaluate(m) -> torch.Tensor:
    """Mean NLL per token of each of the first EVAL_WINDOWS test windows (float64)."""
    return window_nlls(m, test_ids, seqlen=EVAL_SEQLEN, max_windows=EVAL_WINDOWS, progress=False) / EVAL_SEQLEN


def ppl(nll: torch.Tensor) -> float:
    return math.exp(float(nll.mean()))


fp_nll = evaluate(model)
reference = reference_logits(model, windows)  # p_ref: taken before any layer is quantized
print(f"{len(all_linears)} decoder linears; calibration windows {tuple(windows.shape)}; "
      f"test tokens {test_ids.shape[1]}, of which {EVAL_WINDOWS * EVAL_SEQLEN} are scored")
print(f"full-precision perplexity (first {EVAL_WINDOWS} windows of {EVAL_SEQLEN}): {ppl(fp_nll):.2f}")

# %% [markdown]
# ## 2. Uniform formats
#
# `dmx.pipeline.quantize_model` replaces the selected `nn.Linear`s by `DMXLinear` (weights and
# input activations MX-quantized in blocks of 32 along the reduction dimension; one learnable
# offset each). Fixing every layer to one standard format gives the simplest baselines — and
# the two 6-bit formats are exactly at the budget of this notebook, so any mixed FP4/FP8
# assignment at 6 bits has to beat them to be worth its trouble.

# %%
chosen = [n for n in all_linears if int(n.split(".")[2]) in BLOCKS]
layers = quantize_model(model, "fp8_fp4", names=chosen)
sizes = {n: layer.linear.weight.numel() for n, layer in layers.items()}
UNIFORM = ("mxfp4_e2m1", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3")
uniform_nll = {}
for fmt in UNIFORM:
    dmx.set_fixed_format(model, fmt)
    uniform_nll[fmt] = evaluate(model)
    print(f"all {len(layers)} layers {fmt}: perplexity {ppl(uniform_nll[fmt]):.2f}")

# %% [markdown]
# ## 3. How large is the evaluation noise?
#
# Two assignments are evaluated on the same windows, so compare them window by window: the
# difference of their NLLs, averaged over the windows, with its standard error
# $\mathrm{SE} = \mathrm{sd}(d_w)/\sqrt{n}$. A perplexity ratio is $\exp(\bar d)$. With only
# 4 windows the standard error itself is rough; treat differences within about two standard
# errors as ties. (The windows' own NLLs, printed first, differ from each other by more than
# close assignments differ on any one window: comparing unpaired means would drown the
# differences in that spread.)

# %%
def paired(nll_a: torch.Tensor, nll_b: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error over windows of nll_a - nll_b (nats/token)."""
    d = nll_a - nll_b
    return float(d.mean()), float(d.std(unbiased=True) / math.sqrt(d.numel()))


def ratio_text(nll_a, nll_b) -> str:
    mean, se = paired(nll_a, nll_b)
    if mean == 0 and se == 0:
        verdict = "identical on every window"  # e.g. two methods that chose the same layers
    else:
        verdict = "within noise" if abs(mean) <= 2 * se else ("worse" if mean > 0 else "better")
    return f"ppl x{math.exp(mean):.3f} (d = {mean:+.4f} ± {se:.4f} nats/token: {verdict})"


print("per-window NLL of full precision (nats/token):", [round(float(v), 3) for v in fp_nll])
for fmt in UNIFORM[1:]:
    print(f"{fmt} vs mxfp4_e2m1: {ratio_text(uniform_nll[fmt], uniform_nll['mxfp4_e2m1'])}")
print(f"mxfp6_e2m3 vs mxfp8_e4m3: {ratio_text(uniform_nll['mxfp6_e2m3'], uniform_nll['mxfp8_e4m3'])}")

# %% [markdown]
# ## 4. KL sensitivity scores and the greedy selection
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
fig, ax = plt.subplots(figsize=(9, 3.4))
ax.bar(range(len(scores)), list(scores.values()), color=colors)
ax.axhline(all_high_kl, color="k", ls="--", lw=1, label="all 14 layers FP8")
ax.set_xticks(range(len(scores)), short, rotation=70, fontsize=8)
ax.set(yscale="log", ylabel="KL(p_ref || p), nats/token", xlabel="layer put in FP4 (L<block>.<linear>)",
       title="sensitivity: this layer in FP4, the others in FP8")
ax.legend(handles=[Line2D([], [], color="tab:blue", lw=6, label="attention"),
                   Line2D([], [], color="tab:orange", lw=6, label="MLP"),
                   Line2D([], [], color="k", ls="--", label="all 14 layers FP8")], fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Start with every layer in FP8 (8 bits) and demote the least sensitive layers to FP4 (4 bits)
# until the average element bits is at or below the target: for 6 bits, 7 of the 14 layers.
# (Only the 6-bit budget is evaluated, to keep the notebook within a few minutes.)
#
# *Two ways to count bits.* The budget is a **per-layer mean** (each layer counts once, the
# method's definition). A reader who cares about memory wants bits **per stored weight**
# (`Assignment.element_bits_by_params`). The layers differ in size (printed below: the MLP
# matrices are several times larger than the attention projections), so an assignment that
# keeps the MLPs in FP8 stores more bits per weight than its per-layer mean says.

# %%
KL_TARGETS = (TARGET,)  # add 5.0 to see a second KL point (costs one more evaluation)
print("weights per layer:", {s: sizes[n] for s, n in zip(short[:7], layers)}, "(same in both blocks)")
order = demotion_order(scores, list(layers))
print("demotion order (least sensitive first):", [short[list(layers).index(n)] for n in order])
points = {}  # name -> {"formats", "assignment", "nll"}
for target in KL_TARGETS:
    formats = select_by_sensitivity(scores, list(layers), low_format=LOW, high_format=HIGH, target_bits=target)
    assignment = Assignment.from_formats(formats, layer_sizes=sizes, provenance={"method": "kl", "target_bits": target})
    apply_assignment(layers, assignment)
    points[f"KL @ {target:g}"] = {"method": "kl", "assignment": assignment, "nll": evaluate(model)}
    print(f"KL @ {target:g} bits: per-layer mean {assignment.element_bits:.2f} bits, "
          f"per stored weight {assignment.element_bits_by_params:.2f} bits, "
          f"{sum(f == LOW for f in formats.values())} layers in FP4, "
          f"perplexity {ppl(points[f'KL @ {target:g}']['nll']):.2f}")

# %% [markdown]
# ## 5. dMX on the default recipe
#
# `dmx.calibrate.calibrate` learns the 14 offsets jointly: each step runs the quantized model
# with soft formats on a calibration window, adds the hinge $\max(0, 5(\bar b - 6))$ to the
# cross-entropy and takes an SGD step on the offsets only; the temperature holds at 0.4 for the
# first 60 % of the steps and anneals to 20 over the rest. We pass only the budget, the number
# of steps, one window per step and `final_rounding="budget"`; everything else is the library's default
# (`CalibrationConfig`, the authors' recipe, see `docs/FIDELITY.md`):

# %%
config = CalibrationConfig(family="fp8_fp4", target_bits=TARGET, steps=DMX_STEPS, batch_size=1,
                           checkpoint_every=DMX_STEPS, final_rounding="budget")
print({k: getattr(config, k) for k in ("beta_init", "lr", "momentum", "nesterov", "clip_grad_norm",
                                        "fractional_scale", "lam", "final_rounding")})

# %% [markdown]
# `final_rounding="budget"` deploys what dMX learned — the *ranking* of the layers by
# $|\hat\beta|$ — at exactly the budget: every layer starts in FP8 and the smallest $|\hat\beta|$
# are demoted until the average is at most 6 bits, the same fill rule as the KL greedy. So both
# methods are compared at equal bits, and only their ranking differs. The method's own rule
# (FP8 iff $|\hat\beta| > 1$, "threshold") is printed beside it.

# %%
dmx.set_fixed_format(model, None)  # back to learnable offsets
metrics, offsets = [], [[config.beta_init] * len(layers)]


def record(step, m):
    metrics.append(m)
    offsets.append([layer.beta_hat.item() for layer in layers.values()])


tic = time.perf_counter()
dmx_assignment = calibrate(model, layers, windows, config, progress=False, on_step=record)
offsets = torch.tensor(offsets)
print(f"{DMX_STEPS} steps in {time.perf_counter() - tic:.0f} s")
for step, m in enumerate(metrics, start=1):
    print(f"  step {step}: T={m['T']:6.2f}  cross-entropy {m['ce']:.3f}  soft average bits {m['bits']:.2f}")
threshold_bits = dmx_assignment.provenance["threshold_element_bits"]
print(f"largest |beta_hat| after {DMX_STEPS} steps: {offsets[-1].abs().max():.2f} (FP8 needs > 1)")
print(f"threshold rule: {threshold_bits:.2f} bits; budget rounding: per-layer mean "
      f"{dmx_assignment.element_bits:.2f} bits, per stored weight {dmx_assignment.element_bits_by_params:.2f} bits")
points[f"dMX @ {TARGET:g}"] = {"method": "dmx", "assignment": dmx_assignment, "nll": evaluate(model)}
print(f"dMX @ {TARGET:g} (budget rounding): perplexity {ppl(points[f'dMX @ {TARGET:g}']['nll']):.2f}")

# %%
attention = ["attn" in n for n in layers]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for index, is_attention in enumerate(attention):
    axes[0].plot(offsets[:, index], color="tab:blue" if is_attention else "tab:orange", lw=1)
axes[0].axhline(1, color="k", ls=":", lw=1)  # |beta_hat| = 1: the FP4/FP8 threshold
axes[0].set(title=r"$\hat\beta$ per layer (dotted: FP8 threshold)", xlabel="step", ylabel=r"$\hat\beta$")
axes[0].legend(handles=[Line2D([], [], color="tab:blue", label="attention"),
                        Line2D([], [], color="tab:orange", label="MLP")], fontsize=8)
axes[1].plot(range(1, DMX_STEPS + 1), [m["bits"] for m in metrics], "o-", label="soft average bits")
axes[1].axhline(TARGET, color="k", ls=":", lw=1, label="target")
axes[1].set(title="soft average bits at each step", xlabel="step", ylabel="bits (per-layer mean)", ylim=(3.8, 8.2))
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Why the offsets hardly move here.** At $\hat\beta = 0$ every layer starts at the low end
# of the sigmoid, where it is flat: the slope $\partial\beta/\partial|\hat\beta|$ at the hold
# temperature is small (computed below). The soft bits start near 4, far *below* the 6-bit
# budget, so the hinge is silent and only the cross-entropy pulls the offsets up, through
# that small slope. Momentum 0.99 would turn a steady pull into a large velocity — after
# hundreds of steps. In 8 steps it has barely started, and the annealing then freezes the
# offsets where they are. With ~200 layers and hundreds of steps, as in the full-scale runs,
# these settings have the time they were made for.
#
# So on this miniature the method's threshold rule would deploy (nearly) everything in FP4, far
# under the budget, and the budget rounding is what makes a comparison at 6 bits possible: it
# uses the *order* in which the cross-entropy started to pull the offsets up, a gradient-based
# sensitivity ranking, rather than a converged assignment.

# %%
probe = torch.tensor([0.0, 1.0], requires_grad=True)
beta = offset_to_beta(probe, 0.4, training=True)
slopes = torch.autograd.grad(beta.sum(), probe)[0]
print(f"at T = 0.4: d beta / d|beta_hat| = {slopes[0]:.3f} at beta_hat = 0 (the default start), "
      f"{slopes[1]:.3f} at beta_hat = 1 (the threshold): {slopes[1] / slopes[0]:.0f} times steeper")
print(f"soft average bits at the first step: {metrics[0]['bits']:.2f} (target {TARGET:g}: the hinge is inactive)")

# %% [markdown]
# ## 6. Which layers did each method keep in FP8?

# %%
kl_formats = points[f"KL @ {TARGET:g}"]["assignment"].formats
dmx_formats = dmx_assignment.formats
fig, ax = plt.subplots(figsize=(9, 2.0))
grid = [[8 if kl_formats[n] == HIGH else 4 for n in layers], [8 if dmx_formats[n] == HIGH else 4 for n in layers]]
ax.imshow(grid, aspect="auto", cmap="viridis", vmin=4, vmax=8)
ax.set_yticks([0, 1], [f"KL @ {TARGET:g}", f"dMX @ {TARGET:g}"])
ax.set_xticks(range(len(short)), short, rotation=70, fontsize=8)
ax.set(title="bright = FP8, dark = FP4", xlabel="layer", ylabel="method")
fig.tight_layout()
plt.show()
differ = sum(kl_formats[n] != dmx_formats[n] for n in layers)
print("KL and dMX keep the same layers in FP8" if not differ else
      f"KL and dMX differ on {differ} of {len(layers)} layers")

# %% [markdown]
# ## 7. The miniature's results, with their noise
#
# Every point against KL at the same budget (paired over the 4 test windows, section 3), and
# the Pareto plot of `dmx.plots` (the figure `dmx sweep` writes). Bits: per-layer mean, and per
# stored weight in brackets.

# %%
rows = ["| assignment | bits (per weight) | perplexity | vs KL @ 6 |", "|---|---|---:|---|"]
kl_nll = points[f"KL @ {TARGET:g}"]["nll"]
rows.append(f"| full precision | fp32 | {ppl(fp_nll):.2f} | |")
for fmt in UNIFORM:
    bits = Assignment.from_formats({n: fmt for n in layers}).element_bits
    rows.append(f"| uniform {fmt} | {bits:g} | {ppl(uniform_nll[fmt]):.2f} | {ratio_text(uniform_nll[fmt], kl_nll)} |")
for name, point in points.items():
    a = point["assignment"]
    versus = "" if name == f"KL @ {TARGET:g}" else ratio_text(point["nll"], kl_nll)
    rows.append(f"| {name} | {a.element_bits:.2f} ({a.element_bits_by_params:.2f}) | {ppl(point['nll']):.2f} | {versus} |")
display(Markdown("\n".join(rows)))

pareto_points = [{"method": "fp", "perplexity": ppl(fp_nll)}]
pareto_points += [{"method": "uniform", "format": fmt, "avg_bits": Assignment.from_formats({n: fmt for n in layers}).element_bits,
                   "perplexity": ppl(nll)} for fmt, nll in uniform_nll.items()]
pareto_points += [{"method": p["method"], "avg_bits": p["assignment"].element_bits, "perplexity": ppl(p["nll"])}
                  for p in points.values()]
figure = pareto_figure(pareto_points, "pareto_04.png", title=f"SmolLM2-135M, {len(layers)} linears quantized (miniature)")
display(Image(filename=str(figure), width=520))
figure.unlink()
best6 = min(("mxfp6_e2m3", "mxfp6_e3m2"), key=lambda f: ppl(uniform_nll[f]))
print(f"best uniform 6-bit format ({best6}) vs KL @ {TARGET:g}: {ratio_text(uniform_nll[best6], kl_nll)}")
print(f"best uniform 6-bit format ({best6}) vs dMX @ {TARGET:g}: "
      f"{ratio_text(uniform_nll[best6], points[f'dMX @ {TARGET:g}']['nll'])}")

# %% [markdown]
# Read the table with section 3 in mind: differences marked "within noise" are not evidence
# for either side on 2048 test tokens, and with 14 of 210 linears quantized most of the model is
# untouched, so the differences between assignments are small. The two lines above say whether a
# plain uniform 6-bit format — no calibration at all — holds its own against the mixed
# assignments at the same 6 bits; the table's bracketed bits say how much more memory per weight
# each mixed assignment really uses. Neither method's ranking here is evidence for or against
# it at full scale; the next section is.
#
# ## 8. What the full-scale runs found
#
# The project's headline comparison quantizes all 210 decoder linears of this model at a 5-bit
# budget: full precision, uniform MXFP4 and MXFP8, the KL heuristic, dMX (the default recipe,
# budget rounding; its calibration settings are printed with the table) with several
# calibration seeds, and a *random control* (random assignments at the same budget, several
# seeds) that tells whether a method's ranking beats chance. `benchmarks/headline.sh` produces it; the README's section
# *Results* discusses it. The cell below reads the committed summary files (paths relative to
# the repository root), so what it prints is what those files hold.

# %%
REPO = Path(dmx.__file__).resolve().parents[1]
HEADLINE = {"no rotation": REPO / "results" / "headline_5bit",
            "Hadamard rotation": REPO / "results" / "headline_5bit_hadamard"}


def read_summary(folder: Path):
    """(rows of summary.csv, results.json's config, the first dMX point's settings) or None if no summary."""
    summary = folder / "summary.csv"
    if not summary.is_file():
        return None
    with summary.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    results = folder / "results.json"
    stored = json.loads(results.read_text()) if results.is_file() else {}
    dmx_settings = next((p.get("settings") or {} for p in stored.get("points", []) if p.get("method") == "dmx"), {})
    return rows, stored.get("config", {}), dmx_settings


def seeds_text(row) -> str:
    n = int(row["n"])
    return f"{n} seed" if n == 1 else f"{n} seeds"


def full_scale_text(name: str, rows, config, dmx_settings) -> str:
    """A Markdown table and the comparisons the rows support (none where a method is missing)."""
    windows, seqlen = config.get("max_windows"), config.get("seqlen")
    scope = (f"{windows} test windows of {seqlen} tokens ({windows * seqlen:,} tokens)" if windows and seqlen
             else "test windows not recorded in results.json")
    rotation = config.get("rotation")
    if isinstance(rotation, dict):
        scope += f"; rotation: {rotation.get('kind')}, {rotation.get('block')}-wide blocks"
    calibration = dmx_settings.get("calibration", {})
    if calibration:
        scope += (f". dMX calibration: {calibration.get('steps')} steps of {calibration.get('batch_size')} windows of "
                  f"{dmx_settings.get('calib_seqlen')} tokens (from {dmx_settings.get('calib_windows')}), "
                  f"{calibration.get('final_rounding')} rounding")
    lines = [f"**{name}** — WikiText-2 perplexity on the first {scope}; mean ± sd (min–max) over the seeds.", "",
             "| method | target | format | seeds | bits | perplexity |", "|---|---|---|---|---|---|"]
    by_method = {}
    for r in rows:
        n, mean, sd = int(r["n"]), float(r["perplexity_mean"]), float(r["perplexity_std"] or 0)
        spread = f"{mean:.2f} ± {sd:.2f} ({float(r['perplexity_min']):.2f}–{float(r['perplexity_max']):.2f})" if n > 1 \
            else f"{mean:.2f}"
        seeds = r["seeds"] if r["seeds"] not in ("", "None") else "—"
        bits = f"{float(r['avg_bits']):.2f}" if r["avg_bits"] else ""
        lines.append(f"| {r['method']} | {r['target'] or ''} | {r['format'] or ''} | {seeds} | {bits} | {spread} |")
        by_method.setdefault(r["method"], r)
    lines.append("")
    kl, dmx_row, rand = by_method.get("kl"), by_method.get("dmx"), by_method.get("random")
    if dmx_row and kl:
        lo, hi = float(dmx_row["perplexity_min"]), float(dmx_row["perplexity_max"])
        kl_ppl = float(kl["perplexity_mean"])
        where = ("below every dMX seed (KL better)" if kl_ppl < lo else
                 "above every dMX seed (dMX better)" if kl_ppl > hi else "inside the dMX seeds' range (no clear winner)")
        lines.append(f"* KL: {kl_ppl:.2f}; dMX over {seeds_text(dmx_row)}: {float(dmx_row['perplexity_mean']):.2f} "
                     f"(range {lo:.2f}–{hi:.2f}). KL lies {where}.")
    if dmx_row and rand:
        rand_lo = float(rand["perplexity_min"])
        beats = float(dmx_row["perplexity_max"]) < rand_lo
        lines.append(f"* Random control over {seeds_text(rand)}: {float(rand['perplexity_mean']):.2f} "
                     f"(best {rand_lo:.2f}); every dMX seed beats every random draw: {'yes' if beats else 'no'}.")
    missing = [m for m in ("fp", "uniform", "kl", "dmx", "random") if m not in by_method]
    if missing:
        lines.append(f"* Not in this file yet: {', '.join(missing)} (the sweep had not finished when it was written); "
                     "no comparison is drawn for them.")
    return "\n".join(lines)


for name, folder in HEADLINE.items():
    loaded = read_summary(folder)
    if loaded is None:
        display(Markdown(f"**{name}**: `{folder.relative_to(REPO)}/summary.csv` is not in this checkout, so there "
                         "is nothing to report here. Run `benchmarks/headline.sh` (see the README) or read the "
                         "README's section *Results*."))
    else:
        display(Markdown(full_scale_text(name, *loaded)))
print(f"notebook ran in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# What these numbers rest on: one model (the embedded Q4_1-derived SmolLM2-135M), one
# calibration setup (printed above), a 5-bit budget, a few seeds, and the first test
# windows printed above — not the full test set, so the absolute perplexities are not
# comparable with papers. The seeds vary the calibration (dMX) or the draw (random); the test
# windows are the same for every row, so a method's seed range shows how much its result
# depends on the calibration data (or the draw); it is not the evaluation noise of section 3,
# which the fixed windows add on top for every row alike. The README's section *Results* has the
# discussion and the commands.
#
# ## Recap
#
# | idea | in code |
# |---|---|
# | KL score of a layer: that layer low, all others high, KL to full precision | `score_layers` |
# | greedy: demote the least sensitive layers until the budget is met | `select_by_sensitivity` |
# | dMX: learn offsets on CE + $\max(0, \lambda(\bar b - b_t))$ with an annealed sigmoid | `calibrate`, `CalibrationConfig` |
# | default recipe: start $\hat\beta = 0$, lr 1, momentum 0.99, clip 1.0, `maxfloat` scale | `docs/FIDELITY.md` |
# | deploy at exactly the budget from the learned $|\hat\beta|$ ranking | `final_rounding="budget"` |
# | bits per layer vs per stored weight | `element_bits`, `element_bits_by_params` |
# | is a difference real? paired per-window NLL differences and their standard error | `window_nlls` |
#
# ## Exercises
#
# 1. Put the KL @ 6 and dMX @ 6 rows side by side: how many standard errors apart are they?
#    How many test windows would you need to resolve a 1 % perplexity difference, if the
#    per-window standard deviation of the difference stayed as it is?
# 2. Run `select_by_sensitivity` with `weighting="elements"` and `sizes=sizes` at 6 bits. Which
#    layers change format, and what happens to the per-layer mean?
# 3. Rerun section 5 with `steps=40`. Does the threshold rule now reach the budget? Does the
#    budget-rounded assignment change?
#
# <details><summary>Solutions (click)</summary>
#
# 1. The number of standard errors is $|\bar d| / \mathrm{SE}$ from the table. A 1 %
#    perplexity difference is $\bar d \approx 0.01$ nats/token; to see it at two standard
#    errors you need $\mathrm{sd}(d_w)/\sqrt{n} \le 0.005$, i.e.
#    $n \ge (\mathrm{sd}(d_w)/0.005)^2$ windows of the same length.
# 2. Weighted by elements, a demoted MLP matrix lowers the average several times more than an
#    attention projection (their sizes are printed in section 4), so the budget is met with
#    fewer demotions, and the per-layer mean ends above 6 bits. Whether the *order* changes
#    depends only on the scores; the stopping point is what moves.
# 3. Look at the largest $|\hat\beta|$ and the threshold bits. With more steps the momentum
#    builds up a velocity and the offsets can cross $|\hat\beta| = 1$; the hinge acts only
#    above the budget, so nothing keeps the threshold bits from ending above it. The budget
#    rounding still deploys at most 6 bits; compare its FP8 layers with those of the 8-step run.
#
# </details>
