"""Subcommands of the ``dmx`` CLI and the flags they share.

Each ``dmx/commands/<name>.py`` exposes ``register(subparsers)`` that adds one subparser whose
``func`` default runs the command with the parsed ``argparse.Namespace``. The helpers here give
every command the same model / data flags and the same table output; :mod:`dmx.pipeline` turns
the model flags into a :class:`dmx.pipeline.ModelSpec` and loads it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmx.models import SHORT_NAMES
from dmx.rotation import add_rotation_flags

__all__ = ["HelpFormatter", "add_model_args", "add_data_args", "add_quant_args",
           "RotationChoice", "recorded_rotation", "resolve_rotation", "apply_rotation_choice", "check_rotation_choice",
           "format_table", "print_table"]


class HelpFormatter(argparse.HelpFormatter):
    """States a flag's default once: appends ``(default: X)`` unless the help already speaks of its
    default or there is none to state (``None``, a switch that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        silent = action.default in (None, False, argparse.SUPPRESS) or not action.option_strings
        if silent or "default" in text or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


def add_model_args(parser: argparse.ArgumentParser, *, recorded_rotation: bool = False) -> None:
    """``--model --dtype --device --device-map --trust-remote-code --threads`` and the rotation flags
    (:func:`dmx.rotation.add_rotation_flags`; ``recorded_rotation``: the command applies an
    assignment's recorded rotation when no rotation flag is given)."""
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
    add_rotation_flags(parser, recorded=recorded_rotation)


def add_quant_args(parser: argparse.ArgumentParser) -> None:
    """``--family --include-lm-head --block-size --backend``."""
    group = parser.add_argument_group("quantisation")
    group.add_argument("--family", default="fp8_fp4", help="dMX format family: fp8_fp4 or fp6_fp4")
    group.add_argument("--include-lm-head", action="store_true",
                       help="also quantise the output head (default: embeddings and lm_head stay full precision)")
    group.add_argument("--block-size", type=int, default=32, help="MX block size (OCP MX v1.0: 32)")
    group.add_argument("--backend", choices=["numpy", "torch"], default=None,
                       help="MX quantiser implementation: torch (default; on the tensors' device) or numpy "
                            "(mx_spec on the host); the same bits, checked by the golden vectors")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--data-dir --online --seqlen``."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", default=None,
                       help="local data directory with wikitext-2-raw-v1/ and wikitext-2-tokenized/ "
                            "(default: $DMX_DATA_DIR)")
    group.add_argument("--online", action="store_true",
                       help="download WikiText-2 from the Hugging Face hub instead of the data directory")
    group.add_argument("--seqlen", type=int, default=2048, help="tokens per window")


# ------------------------------------------------------------------------------------------------
# which rotation a command applies: flags, else what the assignments recorded, else none
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RotationChoice:
    """One rotation request, comparable across flags and assignment files.

    ``kind`` none | hadamard | learned; ``seed``/``placement``/``block`` rebuild a fixed one;
    ``file``: a rotation file (required for an already-learned rotation; its ``sha256``
    identifies the matrices); ``source``: where the request came from (for error messages).
    """

    kind: str = "none"
    seed: int = 0
    placement: str = "online"
    block: int | None = None  # full width; hadamard/online choices are built with the flag default
    file: str | None = None
    sha256: str | None = None
    source: str = "default"

    def key(self) -> tuple:
        """What must agree for two requests to build the same model."""
        if self.kind == "none":
            return ("none",)
        if self.kind == "learned":
            return ("learned", self.sha256)
        return ("hadamard", self.seed, self.placement, self.block if self.placement == "online" else None)

    def flags(self) -> str:
        """The command-line flags that ask for this rotation."""
        if self.kind == "learned":
            return f"--rotation-file {self.file}" if self.file else "--rotation learned"
        if self.kind == "none":
            return "--rotation none"
        block = "" if self.placement != "online" else f" --rotation-block {self.block or 0}"
        return f"--rotation hadamard --rotation-seed {self.seed} --rotation-placement {self.placement}{block}"


def _choice_from_description(description: dict[str, Any] | None, *, file: str | None, source: str) -> RotationChoice:
    from dmx.files import sha256_file

    if not description or description.get("kind", "none") == "none":
        return RotationChoice(source=source)
    kind = description["kind"]
    placement = description.get("placement", "folded")
    block = description.get("block")
    if kind == "learned" and description.get("baked", True) and file is None:
        raise ValueError(f"{source} records a learned rotation but no rotation file; pass --rotation-file PATH")
    return RotationChoice(kind=kind, seed=int(description.get("seed", 0)), placement=placement, block=block,
                          file=file, sha256=sha256_file(file) if kind == "learned" and file else None, source=source)


def recorded_rotation(provenance: dict[str, Any], assignment_path: str | Path) -> RotationChoice:
    """The rotation an assignment was made under (``provenance["rotation"]``; none if absent).

    A learned rotation's ``provenance["rotation_file"]`` is resolved relative to the assignment
    file's directory; a missing file or one whose sha256 differs from the recorded
    ``rotation_sha256`` raises ``ValueError``.
    """
    source = f"assignment {assignment_path}"
    description = provenance.get("rotation")
    if not description or description.get("kind", "none") == "none":
        return RotationChoice(source=source)
    file = None
    if provenance.get("rotation_file"):
        file = str(Path(assignment_path).parent / provenance["rotation_file"])
        if description["kind"] == "learned" and not Path(file).is_file():
            raise ValueError(f"{source} was calibrated with a learned rotation saved in {file}, which does not "
                             "exist; put the .rotation.safetensors file back next to the assignment or pass "
                             "--rotation-file PATH")
    choice = _choice_from_description(description, file=file, source=source)
    expected = provenance.get("rotation_sha256")
    if choice.kind == "learned" and expected and choice.sha256 != expected:
        raise ValueError(f"{file} is not the rotation {source} was calibrated with (sha256 differs); pass the "
                         "right file with --rotation-file")
    return choice


def _flag_choice(args: argparse.Namespace, recorded: RotationChoice | None) -> RotationChoice | None:
    """The request the rotation flags make (None: no rotation flag given); unset values come from
    ``recorded`` when it is of the same kind, else from :data:`dmx.rotation.FLAG_DEFAULTS`."""
    from dmx.rotation import FLAG_DEFAULTS, load_rotation

    kind, path = getattr(args, "rotation", None), getattr(args, "rotation_file", None)
    seed, placement = getattr(args, "rotation_seed", None), getattr(args, "rotation_placement", None)
    block = getattr(args, "rotation_block", None)
    details = {"--rotation-seed": seed, "--rotation-placement": placement, "--rotation-block": block}
    given = [flag for flag, v in details.items() if v is not None]
    if path:
        if given:
            raise ValueError(f"{', '.join(given)} cannot be combined with --rotation-file (the file decides); drop them")
        description, _ = load_rotation(path)
        choice = _choice_from_description(description, file=str(path), source=f"--rotation-file {path}")
        if kind is not None and kind != choice.kind:
            raise ValueError(f"--rotation {kind} contradicts --rotation-file {path}, which holds a "
                             f"{choice.kind!r} rotation; drop --rotation (the file decides)")
        return choice
    if kind is None and all(v is None for v in details.values()):
        return None
    same = recorded if recorded is not None and recorded.kind == (kind or recorded.kind) else None
    kind = kind or (recorded.kind if recorded is not None else FLAG_DEFAULTS["rotation"])
    if kind == "none":
        if given:
            raise ValueError(f"{', '.join(given)} only apply to a rotation; add --rotation hadamard")
        return RotationChoice(source="--rotation none")
    if kind == "learned" and same is not None:
        if given:
            raise ValueError(f"{', '.join(given)} do not apply to the learned rotation {same.source} records "
                             "(its file decides); drop them")
        return same  # the learned matrices recorded by the assignment
    base = same or RotationChoice(seed=FLAG_DEFAULTS["rotation_seed"], placement=FLAG_DEFAULTS["rotation_placement"],
                                  block=FLAG_DEFAULTS["rotation_block"])
    if block is not None and block < 0:
        raise ValueError(f"--rotation-block must be a Hadamard order such as 32, or 0 (full width); got {block}")
    if kind == "learned" and (placement is not None or block is not None):
        raise ValueError("--rotation-placement/--rotation-block do not apply to --rotation learned (it always "
                         "uses the folded SpinQuant layout); drop them")
    placement = "folded" if kind == "learned" else placement or base.placement
    if placement == "folded" and block is not None:
        raise ValueError("--rotation-block only applies to --rotation-placement online; drop it")
    return RotationChoice(kind=kind, seed=base.seed if seed is None else seed, placement=placement,
                          block=(base.block if block is None else (block or None)) if placement == "online" else None,
                          source="the rotation flags")


def resolve_rotation(args: argparse.Namespace, recorded: Sequence[RotationChoice] = ()) -> RotationChoice:
    """The one rotation a command applies: the flags, else the assignments' recorded rotation, else none.

    ``ValueError`` (saying what to pass) when the assignments were made under different
    rotations, or when the flags ask for another rotation than the one an assignment records.
    """
    distinct = {c.key(): c for c in recorded}
    if len(distinct) > 1:
        listing = "; ".join(f"{c.source}: {c.flags()}" for c in distinct.values())
        raise ValueError(f"the assignments were calibrated under different rotations ({listing}); evaluate "
                         "them in separate runs, one rotation each")
    agreed = next(iter(distinct.values()), None)
    flagged = _flag_choice(args, agreed)
    if flagged is None:
        return agreed or RotationChoice()
    if agreed is not None and flagged.key() != agreed.key():
        raise ValueError(f"the rotation flags ask for `{flagged.flags()}` but {agreed.source} was calibrated "
                         f"under `{agreed.flags()}`; drop the rotation flags to use the recorded rotation")
    return flagged


def check_rotation_choice(choice: RotationChoice, *, trainable: bool = False, include_lm_head: bool = False) -> None:
    """``ValueError`` before any loading when ``choice`` cannot be built by this command."""
    if choice.kind != "learned" or choice.file:
        return
    if not trainable:
        raise ValueError("--rotation learned needs the matrices learned by `dmx calibrate`: pass --rotation-file "
                         "PATH (written next to the assignment by calibrate, or by export), or use --rotation hadamard")
    from dmx.rotation import check_learned_lm_head

    check_learned_lm_head(learning=True, lm_head_quantised=include_lm_head)


def apply_rotation_choice(model, choice: RotationChoice, *, trainable: bool = False):
    """Rotate a freshly loaded ``model`` as ``choice`` says; returns the ``RotationState`` (None for none).

    ``trainable``: a learned rotation without a file starts from its Hadamard initialisation
    and is trained (``dmx calibrate``); elsewhere it needs its file (``ValueError``).
    """
    from dmx.rotation import apply_rotation, apply_rotation_description, load_rotation

    check_rotation_choice(choice, trainable=trainable)
    if choice.file:
        description, matrices = load_rotation(choice.file)
        return apply_rotation_description(model, description, matrices)
    return apply_rotation(model, choice.kind, seed=choice.seed, placement=choice.placement, block=choice.block)


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
