"""``dmx kl``: the KL-divergence layer-selection baseline (see :mod:`dmx.llm.kl_baseline`).

Scores every decoder linear once (cached, resumable), then writes one assignment JSON per
``--target-bits`` value, usable with ``dmx eval --assignment`` and ``dmx export --assignment``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from dmx.commands import HelpFormatter, add_data_args, add_model_args, add_quant_args, model_spec_from_args, print_table
from dmx.llm.data import calibration_windows, check_data_source
from dmx.family import get_family
from dmx.assignment import check_target
from dmx.llm.kl_baseline import kl_assignments, reference_if_needed
from dmx.llm.models import check_seqlens, decoder_linear_names
from dmx.llm.pipeline import load_rotated_model, quantize
from dmx.provenance import model_provenance
from dmx.llm.rotation import CALIBRATION_ROTATION, resolve_rotation, rotated_model_id, rotation_provenance, rotation_state

__all__ = ["register", "run", "output_path"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``kl`` subparser."""
    parser = subparsers.add_parser(
        "kl",
        help="KL-divergence layer-selection baseline: demote the least sensitive layers to the low format",
        description="For each decoder linear, put only that layer at the family's low format (the rest at the "
                    "high format) and measure the mean token KL(p_ref || p) against the full-precision model on "
                    "calibration windows; then demote layers in order of increasing KL until the average element "
                    "bits is at or below each target. Scores are cached (JSON, resumable) in --cache-dir. The model (and its "
                    "full-precision reference) is rotated first, as for dmx calibrate (by default the fixed "
                    "Hadamard; --rotation none for plain MX), and the assignments record the rotation.",
        formatter_class=HelpFormatter,
    )
    add_model_args(parser, default_rotation=CALIBRATION_ROTATION)
    add_quant_args(parser)
    add_data_args(parser)
    parser.set_defaults(seqlen=512, func=run)
    g = parser.add_argument_group("KL heuristic")
    g.add_argument("--target-bits", type=float, nargs="+", default=[5.0],
                   help="average element-bit budget(s); one assignment per value")
    g.add_argument("--n-windows", type=int, default=8,
                   help="calibration windows (of --seqlen tokens) the KL is measured on (8 x 512 tokens by default, "
                        "as in dmx sweep; rerun with --seed 1, 2 for the spread over calibration draws)")
    g.add_argument("--text-file", default=None, help="score on this UTF-8 text file instead of WikiText-2 validation")
    g.add_argument("--seed", type=int, default=0, help="seed of window sampling")
    g.add_argument("--weighting", default="mean", choices=["mean", "elements"],
                   help="average bits over layers: each layer once (mean) or by weight count (elements)")
    g.add_argument("--cache-dir", default="runs/kl_cache", help="where the per-layer KL scores are cached")
    g.add_argument("--out", default="kl_{target}.json",
                   help="assignment JSON path; '{target}' is replaced by the target (needed for several targets)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def output_path(pattern: str, target: float, n_targets: int) -> Path:
    """``pattern`` with ``{target}`` filled in (``%g``); several targets need the placeholder."""
    if "{target}" not in pattern:
        if n_targets > 1:
            raise ValueError(f"--out {pattern!r} has no '{{target}}' placeholder but {n_targets} targets were given; "
                             "use e.g. --out kl_{target}.json")
        return Path(pattern)
    return Path(pattern.replace("{target}", f"{target:g}"))


def run(args: argparse.Namespace) -> int:
    """Score (or reuse cached scores), select, write the assignments, print a table."""
    fam = get_family(args.family)
    for t in args.target_bits:
        check_target(t, low_format=fam.low_format, high_format=fam.high_format)
    outs = [output_path(args.out, t, len(args.target_bits)) for t in args.target_bits]
    # before the (long) model load
    check_data_source(args.data_dir, split="calibration", online=args.online, text_file=args.text_file)
    check_seqlens(args.model, {"seqlen": args.seqlen}, trust_remote_code=args.trust_remote_code)
    spec = model_spec_from_args(args, resolve_rotation(args, default=CALIBRATION_ROTATION))
    model, tokenizer = load_rotated_model(spec)
    model_id = rotated_model_id(args.model, model)  # the KL scores depend on the rotation
    windows = calibration_windows(tokenizer, args.n_windows, args.seqlen, args.seed, data_dir=args.data_dir,
                                  online=args.online, text_file=args.text_file)
    reference = reference_if_needed(
        model, windows, model_id=model_id, low_format=fam.low_format, high_format=fam.high_format,
        layer_names=decoder_linear_names(model, include_lm_head=args.include_lm_head), block_size=args.block_size,
        cache_dir=args.cache_dir,
    )
    layers = quantize(model, spec)
    found = kl_assignments(model, layers, windows, targets=args.target_bits, low_format=fam.low_format,
                           high_format=fam.high_format, reference=reference, model_id=model_id,
                           cache_dir=args.cache_dir, weighting=args.weighting, progress=not args.no_progress)
    rows = []
    for (t, assignment), out in zip(found.items(), outs):
        assignment.provenance.update({**model_provenance(spec), "data": args.text_file or "wikitext-2 validation",
                                      "seed": args.seed})
        assignment.provenance.update(rotation_provenance(rotation_state(model), spec.rotation.file,
                                                         relative_to=out.parent))
        assignment.to_json(out)
        counts = Counter(assignment.formats.values())
        rows.append([t, assignment.element_bits, assignment.storage_bits, counts[fam.low_format],
                     counts[fam.high_format], str(out)])
    print_table(rows, ["target", "element_bits", "storage_bits", f"n_{fam.low_format}", f"n_{fam.high_format}", "written"])
    return 0
