"""Subcommands of the ``dmx`` CLI and the flags they share.

Each ``dmx/commands/<name>.py`` exposes ``register(subparsers)`` that adds one subparser whose
``func`` default runs the command with the parsed ``argparse.Namespace``. The helpers here give
every command the same model / data flags and the same table output, and turn the model flags
into a :class:`dmx.llm.pipeline.ModelSpec` (:func:`model_spec_from_args`) that :mod:`dmx.llm.pipeline` loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from dmx.autograd import BACKENDS
from dmx.calibrate import CalibrationConfig
from dmx.family import DEFAULT_FAMILY, FAMILIES
from dmx.llm.models import SHORT_NAMES
from dmx.llm.pipeline import ModelSpec, thread_count
from dmx.llm.rotation import PLACEMENTS, ROTATION_KINDS, RotationSpec, resolve_rotation
from mx_spec.conformance.cli import parameters_as_flags
from mx_spec.formats import DEFAULT_BLOCK_SIZE

__all__ = ["HelpFormatter", "add_model_args", "add_rotation_flags", "add_data_args", "add_quant_args",
           "format_table", "print_table", "model_spec_from_args",
           "FLAGS", "flag_message"]


#: What the library's error messages call a setting (the Python parameter, or the field of a
#: config) -> the ``dmx`` flag that sets it. The library speaks Python (a caller of
#: ``calibrate(checkpoint_dir=...)`` never passed a flag); :func:`flag_message` translates at the door.
FLAGS = {
    "data_dir": "--data-dir", "online": "--online", "text_file": "--text-file", "calib_text_file": "--calib-text-file",
    "seqlen": "--seqlen", "kl_seqlen": "--kl-seqlen", "calib_seqlen": "--calib-seqlen", "eval_seqlen": "--eval-seqlen",
    "checkpoint_dir": "--checkpoint-dir", "resume": "--resume", "cache_dir": "--cache-dir",
    "include_lm_head": "--include-lm-head", "batch_size": "--batch-size", "threads": "--threads",
    "targets": "--targets", "out": "--out", "points_from": "--points-from", "device": "--device", "block_size": "--block-size",
    "output_format": "--output-format", "rotation": "--rotation", "rotation_file": "--rotation-file",
    "rotation_seed": "--rotation-seed", "rotation_placement": "--rotation-placement", "rotation_block": "--rotation-block",
    "block": "--rotation-block",
    # RotationSpec's fields, where a message names one with the value to pass
    "block=None": "--rotation-block 0", "file=PATH": "--rotation-file PATH", "kind='hadamard'": "--rotation hadamard",
    "kind='none'": "--rotation none", "targets=(5, 6)": "--targets 5 6",
}


def flag_message(message: str) -> str:
    """A library error message as a ``dmx`` user reads it: the parameters of :data:`FLAGS` named as
    flags (:func:`mx_spec.conformance.cli.parameters_as_flags`)."""
    return parameters_as_flags(message, FLAGS)


class HelpFormatter(argparse.HelpFormatter):
    """States a flag's default once: appends ``(default: X)`` unless the help already speaks of its
    default or there is none to state (``None``, a switch that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        silent = action.default in (None, False, argparse.SUPPRESS) or not action.option_strings
        if silent or "default" in text or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


def add_model_args(parser: argparse.ArgumentParser, *, recorded_rotation: bool = False,
                   default_rotation: RotationSpec = RotationSpec()) -> None:
    """``--model --dtype --device --device-map --trust-remote-code --threads`` and the rotation flags
    (:func:`add_rotation_flags`; ``recorded_rotation``: the command applies an assignment's
    recorded rotation when no rotation flag is given; ``default_rotation``: what it applies when
    neither says anything, :data:`dmx.llm.rotation.CALIBRATION_ROTATION` for a new calibration)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="smollm2-135m",
                       help="short name (%s), a local checkpoint directory, or a Hugging Face hub id "
                            "org/name (default: the embedded smollm2-135m, no network)" % ", ".join(sorted(SHORT_NAMES)))
    group.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="dtype the weights are loaded in")
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (ignored with --device-map)")
    group.add_argument("--device-map", default=None,
                       help="accelerate device map, e.g. 'auto' to spread a large model over all GPUs")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow model code from the hub repository to run (off by default)")
    group.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: the CPUs idle at start, i.e. available CPUs minus the "
                            "1-minute load average, at least 1, so a busy machine is not oversubscribed)")
    add_rotation_flags(parser, recorded=recorded_rotation, default=default_rotation)


def add_rotation_flags(parser: argparse.ArgumentParser, *, recorded: bool = False,
                       default: RotationSpec = RotationSpec()) -> None:
    """``--rotation {none,hadamard,learned}``, ``--rotation-seed``, ``--rotation-placement``,
    ``--rotation-file``, ``--rotation-block``, ``--rotation-lr``.

    Kind, seed, placement and block default to None ("not given", :func:`dmx.llm.rotation.resolve_rotation`
    turns them into a :class:`dmx.llm.rotation.RotationSpec`; an unset flag then means ``default``'s
    value: ``none``, 0, ``online``, 64 for plain MX, ``hadamard`` for a new calibration). ``--rotation-block`` is the online
    Hadamard's size (``RotationSpec.block``). ``recorded``: the command reads assignment files
    whose recorded rotation applies when the flags are not given (``dmx eval``/``export``); the
    help text says so.
    """
    # each help states what an unset flag means; "%(default).0s" renders as nothing and keeps a
    # defaults-appending formatter (argparse's own; HelpFormatter appends nothing to a help that
    # speaks of its default) from adding "(default: None)", which would misstate it
    unset = "%(default).0s"
    recorded_or = "as the assignment records, else " if recorded else ""
    defaults = default
    group = parser.add_argument_group("rotations")
    group.add_argument("--rotation", choices=ROTATION_KINDS, default=None,
                       help="none | hadamard (fixed QuaRot-style) | learned (SpinQuant-style: trained by "
                            "calibrate and sweep; eval/kl/export read it from --rotation-file or the assignment) "
                            f"(default: {recorded_or}{defaults.kind}){unset}")
    group.add_argument("--rotation-seed", type=int, default=None,
                       help=f"seed of the random Hadamard signs (default: {recorded_or}{defaults.seed}){unset}")
    group.add_argument("--rotation-placement", choices=PLACEMENTS, default=None,
                       help="hadamard only: online (a Hadamard on every linear input) or folded (QuaRot) "
                            f"(default: {recorded_or}{defaults.placement}){unset}")
    group.add_argument("--rotation-file", default=None,
                       help="rotation saved by calibrate/export (.rotation.safetensors); rebuilds it exactly, "
                            f"kind and seed come from the file (default: {recorded_or}none){unset}")
    group.add_argument("--rotation-block", type=int, default=None,
                       help="hadamard/online only: block-diagonal Hadamard size (32 = one MX block, 64 = two; "
                            f"0 = full width) (default: {recorded_or}{defaults.block}){unset}")
    group.add_argument("--rotation-lr", type=float, default=CalibrationConfig().rotation_lr,
                       help="Cayley SGD learning rate of a learned rotation (calibrate and sweep only)")


def add_quant_args(parser: argparse.ArgumentParser) -> None:
    """``--family --include-lm-head --block-size --backend``."""
    group = parser.add_argument_group("quantisation")
    group.add_argument("--family", default=DEFAULT_FAMILY, help="dMX format family: " + " or ".join(FAMILIES))
    group.add_argument("--include-lm-head", action="store_true",
                       help="also quantise the output head (default: embeddings and lm_head stay full precision)")
    group.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, help="MX block size (OCP MX v1.0: 32)")
    group.add_argument("--backend", choices=BACKENDS, default=None,
                       help="MX quantiser implementation: torch (default; on the tensors' device), compiled "
                            "(the same torch code fused by torch.compile: faster calibration steps, needs a C++ "
                            "compiler on CPU, compiles once per run) or numpy (mx_spec on the host); the same "
                            "bits, checked by the golden vectors")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--data-dir --online --seqlen``."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", default=None,
                       help="local data directory with wikitext-2-raw-v1/ and wikitext-2-tokenized/ "
                            "(default: $DMX_DATA_DIR)")
    group.add_argument("--online", action="store_true",
                       help="download WikiText-2 from the Hugging Face hub instead of the data directory")
    group.add_argument("--seqlen", type=int, default=2048, help="tokens per window")


def model_spec_from_args(args: argparse.Namespace, rotation: RotationSpec | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of the model/quantisation/rotation flags (``dmx.commands.add_model_args``,
    ``add_quant_args``). ``rotation``: the request to apply (:func:`dmx.llm.rotation.resolve_rotation`
    with the assignments' recorded rotations), else what the rotation flags ask for."""
    return ModelSpec(model=args.model, dtype=args.dtype, device=args.device, device_map=args.device_map,
                     trust_remote_code=args.trust_remote_code, threads=thread_count(getattr(args, "threads", None)),
                     family=args.family, block_size=args.block_size, include_lm_head=args.include_lm_head,
                     backend=getattr(args, "backend", None),
                     rotation=resolve_rotation(args) if rotation is None else rotation)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return "" if value is None else str(value)


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Plain-text table with aligned columns (floats to 4 significant digits)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([line, rule, *body])


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print :func:`format_table` to stdout."""
    print(format_table(rows, headers))
