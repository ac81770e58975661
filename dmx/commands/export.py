"""``dmx export``: write a mixed-precision model as real MX data (see :mod:`dmx.llm.export`)."""

from __future__ import annotations

import argparse
from collections import Counter

from dmx.assignment import Assignment, apply_assignment, format_element_bits
from dmx.commands import HelpFormatter, add_model_args, add_quant_args, model_spec_from_args, print_table
from dmx.llm.export import export_model
from dmx.llm.export_ct import check_ct_formats, export_compressed_tensors, require_compressed_tensors
from dmx.files import sha256_file
from dmx.llm.pipeline import load_rotated_model, quantize
from dmx.llm.rotation import recorded_rotation, resolve_rotation

__all__ = ["register", "run"]

#: ``--output-format`` choices; ``dmx`` stays the default: it stores every MX format and block size
#: and reloads to dmx eval's logits exactly, while compressed-tensors covers three formats.
OUTPUT_FORMATS = ("dmx", "compressed-tensors")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` subparser."""
    parser = subparsers.add_parser(
        "export",
        help="export the model at an assignment (or one uniform MX format) as packed MX weights + manifest",
        description="Quantise every decoder linear's weight to its assigned MX format with mx_spec, store the packed "
                    "element bytes and E8M0 scales in model.safetensors together with every full-precision tensor, "
                    "and describe them in manifest.json. dmx.llm.export.load_exported(DIR) rebuilds the fake-quantised "
                    "model with identical logits. The model is rotated as the rotation flags say, else as "
                    "the --assignment records, else not at all; the manifest records the rotation (a learned "
                    "one is stored in rotation.safetensors) and the loader rebuilds it.",
        formatter_class=HelpFormatter,
    )
    add_model_args(parser, recorded_rotation=True)
    add_quant_args(parser)
    g = parser.add_argument_group("export")
    what = g.add_mutually_exclusive_group(required=True)
    what.add_argument("--assignment", help="assignment JSON from `dmx calibrate`, `dmx kl` or a sweep")
    what.add_argument("--format", help="one standard MX format for every layer (e.g. mxfp8_e4m3)")
    g.add_argument("--out", required=True, help="output directory (created; dmx: manifest.json + model.safetensors; "
                                                "compressed-tensors: config.json + model.safetensors)")
    g.add_argument("--no-tokenizer", action="store_true", help="do not save the tokenizer next to the weights")
    g.add_argument("--output-format", choices=OUTPUT_FORMATS, default="dmx",
                   help="dmx: the project's packed MX + manifest.json (every MX format, read by "
                        "dmx.llm.export.load_exported, logits identical to dmx eval); compressed-tensors: a checkpoint "
                        "transformers/vLLM load (needs the `export` extra; MXFP4, MXFP6 E2M3, MXFP8 E4M3 only; "
                        "activation scales by the runtime's rule)")
    g.add_argument("--weights-only", action="store_true",
                   help="compressed-tensors: leave input activations unquantised in the served model")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Load, apply the assignment, export, print a summary."""
    assignment = Assignment.from_json(args.assignment) if args.assignment else None
    if args.format:
        format_element_bits(args.format)  # unknown format -> ValueError listing the valid ones, before loading
    if args.output_format == "compressed-tensors":  # every check before the model loads
        try:
            require_compressed_tensors()
        except ImportError as err:  # the CLI reports ValueErrors as a one-line error (exit 2)
            raise ValueError(str(err)) from None
        formats = assignment.formats if assignment is not None else {"--format": args.format}
        check_ct_formats(formats, assignment.block_size if assignment is not None else args.block_size)
        check_ct_formats({}, args.block_size)
    elif args.weights_only:
        raise ValueError("--weights-only applies to --output-format compressed-tensors (the dmx format stores weights only)")
    recorded = [recorded_rotation(assignment.provenance, args.assignment)] if assignment is not None else []
    spec = model_spec_from_args(args, resolve_rotation(args, recorded))
    model, tokenizer = load_rotated_model(spec)
    layers = quantize(model, spec)
    if assignment is None:
        assignment = Assignment.from_formats({n: args.format for n in layers}, block_size=args.block_size,
                                             provenance={"method": "uniform", "model": args.model})
    apply_assignment(layers, assignment)
    keep_tokenizer = None if args.no_tokenizer else tokenizer
    if args.output_format == "compressed-tensors":
        out = export_compressed_tensors(model, layers, args.out, tokenizer=keep_tokenizer, assignment=assignment,
                                        assignment_sha256=sha256_file(args.assignment) if args.assignment else None,
                                        quantize_input=not args.weights_only)
    else:
        out = export_model(model, layers, args.out, tokenizer=keep_tokenizer, assignment=assignment,
                           include_lm_head=args.include_lm_head)
    rows = [[f"layers at {fmt}", n] for fmt, n in sorted(Counter(assignment.formats.values()).items())]
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    rows += [["average element bits", assignment.element_bits], ["storage bits", assignment.storage_bits],
             ["rotation", spec.rotation.flags()], ["output format", args.output_format], ["directory size (MiB)", size / 2**20], ["written to", str(out)]]
    print_table(rows, ["quantity", "value"])
    return 0
