"""Which rotation a command applies: the rotation flags, else what the assignments recorded, else none.

The flags are read by name from any object with the attributes ``rotation``, ``rotation_file``,
``rotation_seed``, ``rotation_placement``, ``rotation_block`` (the ``argparse.Namespace`` of
:func:`dmx.commands.add_rotation_flags`); None means "not given". What an unset flag stands for
when nothing else decides is the default of the :class:`RotationSpec` field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmx.llm.rotation.files import load_rotation
from dmx.llm.rotation.spec import RotationSpec

__all__ = ["recorded_rotation", "resolve_rotation"]


def recorded_rotation(provenance: dict[str, Any], assignment_path: str | Path) -> RotationSpec:
    """The rotation an assignment was made under (``provenance["rotation"]``; none if absent).

    A learned rotation's ``provenance["rotation_file"]`` is resolved relative to the assignment
    file's directory; a missing file or one whose sha256 differs from the recorded
    ``rotation_sha256`` raises ``ValueError``.
    """
    source = f"assignment {assignment_path}"
    description = provenance.get("rotation")
    if not description or description.get("kind", "none") == "none":
        return RotationSpec(source=source)
    file = None
    if provenance.get("rotation_file"):
        file = str(Path(assignment_path).parent / provenance["rotation_file"])
        if description["kind"] == "learned" and not Path(file).is_file():
            raise ValueError(f"{source} was calibrated with a learned rotation saved in {file}, which does not "
                             "exist; put the .rotation.safetensors file back next to the assignment or pass "
                             "rotation_file=PATH")
    if description["kind"] == "learned" and file is None:
        raise ValueError(f"{source} records a learned rotation but no rotation file; pass rotation_file=PATH")
    spec = RotationSpec.from_description(description, file=file, source=source)
    expected = provenance.get("rotation_sha256")
    if spec.kind == "learned" and expected and spec.sha256 != expected:
        raise ValueError(f"{file} is not the rotation {source} was calibrated with (sha256 differs); pass the "
                         "right file as rotation_file")
    return spec


def _flagged_rotation(args: Any, recorded: RotationSpec | None, default: RotationSpec) -> RotationSpec | None:
    """The request the rotation flags make (None: no rotation flag given); unset values come from
    ``recorded`` when it is of the same kind, else from ``default`` (the kind when not given, and
    the details when of the kind asked for), else from the :class:`RotationSpec` defaults."""
    kind, path = getattr(args, "rotation", None), getattr(args, "rotation_file", None)
    seed, placement = getattr(args, "rotation_seed", None), getattr(args, "rotation_placement", None)
    block = getattr(args, "rotation_block", None)
    details = {"rotation_seed": seed, "rotation_placement": placement, "rotation_block": block}
    given = [flag for flag, v in details.items() if v is not None]
    if path:
        if given:
            raise ValueError(f"{', '.join(given)} cannot be combined with rotation_file (the file decides); drop them")
        description, _ = load_rotation(path)
        spec = RotationSpec.from_description(description, file=str(path), source=f"rotation_file {path}")
        if kind is not None and kind != spec.kind:
            raise ValueError(f"rotation={kind!r} contradicts rotation_file {path}, which holds a "
                             f"{spec.kind!r} rotation; drop rotation={kind!r} (the file decides)")
        return spec
    if kind is None and not given:
        return None
    same = recorded if recorded is not None and recorded.kind == (kind or recorded.kind) else None
    kind = kind or (recorded.kind if recorded is not None else default.kind)
    if kind == "none":
        if given:
            raise ValueError(f"{', '.join(given)} only apply to a rotation; add rotation='hadamard'")
        return RotationSpec(source="rotation='none'")
    if kind == "learned" and same is not None:
        if given:
            raise ValueError(f"{', '.join(given)} do not apply to the learned rotation {same.source} records "
                             "(its file decides); drop them")
        return same  # the learned matrices recorded by the assignment
    base = same or (default if default.kind == kind else RotationSpec())
    if block is not None and block < 0:
        raise ValueError(f"rotation_block must be a Hadamard order such as 32, or 0 (full width); got {block}")
    if kind == "learned" and (placement is not None or block is not None):
        raise ValueError("rotation_placement/rotation_block do not apply to rotation='learned' (it always "
                         "uses the folded SpinQuant layout); drop them")
    placement = placement or base.placement
    if kind == "hadamard" and placement == "folded" and block is not None:
        raise ValueError("rotation_block only applies to rotation_placement='online'; drop it")
    if block is None:
        block = base.block
    return RotationSpec(kind=kind, seed=base.seed if seed is None else seed, placement=placement,
                        block=block or None, source="the rotation settings")


def resolve_rotation(args: Any, recorded: Sequence[RotationSpec] = (), *,
                     default: RotationSpec = RotationSpec()) -> RotationSpec:
    """The one rotation a command applies: the flags, else the assignments' recorded rotation, else
    ``default`` (none; a command that starts a calibration passes :data:`CALIBRATION_ROTATION`).

    ``ValueError`` (saying what to pass) when the assignments were made under different
    rotations, or when the flags ask for another rotation than the one an assignment records.
    """
    distinct = {spec.key(): spec for spec in recorded}
    if len(distinct) > 1:
        listing = "; ".join(f"{spec.source}: {spec.flags()}" for spec in distinct.values())
        raise ValueError(f"the assignments were calibrated under different rotations ({listing}); evaluate "
                         "them in separate runs, one rotation each")
    agreed = next(iter(distinct.values()), None)
    flagged = _flagged_rotation(args, agreed, default)
    if flagged is None:
        return agreed or default
    if agreed is not None and flagged.key() != agreed.key():
        raise ValueError(f"the rotation flags ask for `{flagged.flags()}` but {agreed.source} was calibrated "
                         f"under `{agreed.flags()}`; drop the rotation flags to use the recorded rotation")
    return flagged

