"""Why does dMX lose to KL without a rotation? A split-half probe of the offsets' gradient at the start.

At the start point of the authors' recipe (every β̂ = 0, T = 0.4: every layer near MXFP4, the
hinge silent), the first steps move each layer's offset against its gradient, so the gradient's
per-layer ranking is what dMX's assignment is built from. This probe measures that gradient on
8 disjoint batches of 2 calibration windows (16 of the 64 seeded 256-token WikiText-2 validation
windows), per rotation, with the weight and input offsets untied (their sum is the tied gradient,
since at β̂ = 0 both parts enter through the same |β̂|), and records:

- reliability: Spearman correlation over layers of the mean tied gradient of batches 0-3 with
  that of batches 4-7 (split-half; high means the ranking is not gradient noise);
- validity: Spearman correlation of the demand for bits (minus the mean tied gradient: a layer
  moves up when its gradient is negative) with the KL heuristic's per-layer scores on the same
  rotation (the committed headline KL assignments' ``kl_scores``);
- concentration: the share of the squared gradient norm held by the 5 largest layers, per batch;
- tying: the input part's share of the squared norm, and the correlation of the two parts;
- with a learned rotation (its start, the folded randomized Hadamard): the offsets' share of the
  joint gradient norm that one global clip at 1.0 scales (rotation matrices included).

    python benchmarks/gradient_probe.py --out results/gradient_probe/results.json   # ~10 min at 1 thread
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dmx.calibrate import CalibrationConfig, objective  # noqa: E402
from dmx.llm.data import calibration_windows  # noqa: E402
from dmx.files import atomic_write_text  # noqa: E402
from dmx.llm.pipeline import ModelSpec, load_rotated_model, quantize_model  # noqa: E402
from dmx.provenance import run_provenance  # noqa: E402
from dmx.llm.rotation import RotationSpec, rotation_parameters  # noqa: E402
from dmx.wrap import set_calibration_mode  # noqa: E402

#: rotation label -> (rotation request, the headline folder whose KL assignment holds the scores)
ROTATIONS = {
    "none": (RotationSpec(kind="none"), "headline_5bit_w32"),
    "Hadamard-64": (RotationSpec(kind="hadamard"), "headline_5bit_hadamard_w32"),
    "learned (start)": (RotationSpec(kind="learned"), None),
}
TOP = 5


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no ties expected among float gradients)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def probe_gradients(label: str, spec: RotationSpec, batches: int, batch_size: int, seed: int) -> dict:
    """Per batch, the weight and input parts of every layer's offset gradient (and, when the
    rotation is learned, the rotation matrices' gradient norm)."""
    learning = spec.kind == "learned"
    model, tokenizer = load_rotated_model(ModelSpec(rotation=spec), trainable=learning)
    cfg = CalibrationConfig()
    start = cfg.schedule()(0, cfg.steps)  # T at the first step (0.4)
    layers = quantize_model(model, cfg.family, tie=False, beta_init=0.0, temperature=start)
    set_calibration_mode(model, layers, True)
    rotation = rotation_parameters(model)
    windows = calibration_windows(tokenizer, 64, 256, seed, data_dir=os.environ.get("DMX_DATA_DIR"))
    weight, inputs, rotation_norms, offset_norms, ce = [], [], [], [], []
    for b in range(batches):
        batch = windows[b * batch_size:(b + 1) * batch_size]
        for p in [*(l.beta_hat for l in layers.values()), *(l.beta_hat_input for l in layers.values()), *rotation]:
            p.grad = None
        loss, c, _ = objective(model, layers, batch, target_bits=cfg.target_bits, lam=cfg.lam)
        loss.backward()
        gw = np.array([float(l.beta_hat.grad) for l in layers.values()])
        gi = np.array([float(l.beta_hat_input.grad) for l in layers.values()])
        weight.append(gw.tolist())
        inputs.append(gi.tolist())
        offset_norms.append(float(np.linalg.norm(gw + gi)))
        if rotation:
            rotation_norms.append(float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in rotation))))
        ce.append(float(c))
        print(f"{label}: batch {b + 1}/{batches}, CE {float(c):.3f}", file=sys.stderr)
    return {"layers": list(layers), "weight": weight, "input": inputs, "ce": ce,
            "offset_norm": offset_norms, "rotation_norm": rotation_norms or None}


def summarize(raw: dict, kl_scores: dict[str, float] | None) -> dict:
    """The probe's statistics (module docstring) from the per-batch gradients."""
    gw, gi = np.array(raw["weight"]), np.array(raw["input"])
    tied = gw + gi
    half = tied.shape[0] // 2
    out = {
        "reliability_split_half": spearman(tied[:half].mean(0), tied[half:].mean(0)),
        "top5_share_of_squared_norm": float(np.mean([np.sort(t ** 2)[::-1][:TOP].sum() / (t ** 2).sum()
                                                    for t in tied])),
        "input_share_of_squared_norm": float((gi ** 2).sum() / ((gw ** 2).sum() + (gi ** 2).sum())),
        "weight_input_correlation": spearman(gw.mean(0), gi.mean(0)),
        "layers_demanding_bits": int((tied.mean(0) < 0).sum()),
        "top5_layers": [raw["layers"][i] for i in np.argsort(tied.mean(0))[:TOP]],
    }
    if kl_scores is not None:
        scores = np.array([kl_scores[n] for n in raw["layers"]])
        out["validity_vs_kl"] = spearman(-tied.mean(0), scores)
        out["validity_vs_kl_weight_part"] = spearman(-gw.mean(0), scores)
        out["validity_vs_kl_input_part"] = spearman(-gi.mean(0), scores)
    if raw["rotation_norm"]:
        off, rot = np.array(raw["offset_norm"]), np.array(raw["rotation_norm"])
        out["offsets_share_of_joint_norm"] = float(np.mean(off / np.sqrt(off ** 2 + rot ** 2)))
        out["joint_norm_mean"] = float(np.mean(np.sqrt(off ** 2 + rot ** 2)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="results JSON to write")
    parser.add_argument("--batches", type=int, default=8, help="disjoint batches (split in two halves)")
    parser.add_argument("--batch-size", type=int, default=2, help="windows per batch (the recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="calibration-window seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rotations", nargs="+", default=list(ROTATIONS), choices=list(ROTATIONS))
    args = parser.parse_args(argv)
    if args.batches < 2 or args.batches % 2:
        parser.error("--batches must be an even number >= 2 (two halves)")
    if not os.environ.get("DMX_DATA_DIR"):
        parser.error("set DMX_DATA_DIR to the data directory (../shared/data)")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    doc = {"schema": "dmx.gradient_probe/1", "provenance": run_provenance(__file__, sys.argv[1:] if argv is None else argv),
           "batches": args.batches,
           "batch_size": args.batch_size, "seed": args.seed, "rotations": {}}
    for label in args.rotations:
        spec, folder = ROTATIONS[label]
        t0 = time.perf_counter()
        raw = probe_gradients(label, spec, args.batches, args.batch_size, args.seed)
        kl = None
        if folder is not None:
            kl_doc = json.loads((REPO / "results" / folder / "assignments" / "kl_at_5.json").read_text())
            kl = kl_doc["provenance"]["kl_scores"]
        doc["rotations"][label] = {"summary": summarize(raw, kl), "kl_scores_from": folder,
                                   "seconds": round(time.perf_counter() - t0, 1), "raw": raw}
        print(json.dumps({label: doc["rotations"][label]["summary"]}, indent=1), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
