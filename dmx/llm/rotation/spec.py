"""Which rotation: the one frozen request the commands, the sweep, the export manifest and the files share.

A :class:`RotationSpec` says how to build a rotation (kind, seed, layout, rotation block,
or the file holding learned matrices); :meth:`RotationSpec.description` is the versioned dict
that assignments, exports and rotation files record (``DESCRIPTION_VERSION``), and
:meth:`RotationSpec.from_description` reads it back. Tensors live in :mod:`dmx.llm.rotation.state`.

Words: the rotation block, ``block`` (``RotationSpec.block``, the ``"block"`` key of recorded
descriptions and sweep identities, the ``--rotation-block`` flag, :data:`DEFAULT_ROTATION_BLOCK`;
one name, issue #27), is the order of the block-diagonal online Hadamard; an "MX block" is the 32
elements sharing one scale (``block_size``); a decoder layer is a transformer block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dmx.files import sha256_file
from dmx.llm.rotation.hadamard import supports_hadamard

__all__ = ["ROTATION_KINDS", "ONLINE_SITES", "PLACEMENTS", "DEFAULT_ROTATION_BLOCK", "SUPPORTED_MODEL_TYPES",
           "DESCRIPTION_VERSION", "RotationSpec", "CALIBRATION_ROTATION", "check_learned_lm_head"]

ROTATION_KINDS = ("none", "hadamard", "learned")
#: Linear inputs that get an online Hadamard in the folded layout (module attribute names in a decoder layer).
ONLINE_SITES = ("o_proj", "down_proj")
#: Where fixed Hadamards go: on every linear input (``online``) or QuaRot's folded layout.
PLACEMENTS = ("online", "folded")
#: Order of the ``online`` layout's block-diagonal Hadamard (why 64: :mod:`dmx.llm.rotation` docstring).
DEFAULT_ROTATION_BLOCK = 64
SUPPORTED_MODEL_TYPES = ("llama", "qwen3", "qwen2", "mistral")
#: Version of :meth:`RotationSpec.description`; recorded descriptions of another version are refused.
DESCRIPTION_VERSION = 1


@dataclass(frozen=True)
class RotationSpec:
    """One rotation request, comparable across flags, sweep configs and recorded files.

    ``kind`` none | hadamard | learned; ``seed`` picks the random Hadamard signs (and a learned
    rotation's start); ``placement`` online | folded (``learned`` is always folded, SpinQuant);
    ``block``: order of the block-diagonal Hadamard of the online layout (None: full input
    width; always None when folded); ``online_sites``: the folded layout's online Hadamards (the
    online layout rotates every linear input and keeps the default);
    ``file``: a rotation file that rebuilds it exactly (required for an already-learned rotation;
    ``sha256`` identifies its matrices); ``source``: where the request came from (error messages).
    Invalid values raise ``ValueError`` naming the valid choices.
    """

    kind: str = "none"
    seed: int = 0
    placement: str = "online"
    block: int | None = DEFAULT_ROTATION_BLOCK
    online_sites: tuple[str, ...] = ONLINE_SITES
    file: str | None = None
    sha256: str | None = None
    source: str = field(default="default", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ROTATION_KINDS:
            raise ValueError(f"unknown rotation kind {self.kind!r}; choose one of {list(ROTATION_KINDS)}")
        sites = tuple(self.online_sites)
        unknown = [s for s in sites if s not in ONLINE_SITES]
        if unknown:
            raise ValueError(f"unknown online sites {unknown}; choose from {list(ONLINE_SITES)}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {self.placement!r}; choose one of {list(PLACEMENTS)}")
        # a frozen dataclass normalises through object.__setattr__: learned rotations are always
        # folded, only the online layout has a rotation block, only the folded one online sites
        if self.kind == "learned":
            object.__setattr__(self, "placement", "folded")
        object.__setattr__(self, "online_sites", sites if self.placement == "folded" else ONLINE_SITES)
        object.__setattr__(self, "seed", int(self.seed))
        if self.placement == "folded":
            object.__setattr__(self, "block", None)
        size = self.block
        if self.kind == "hadamard" and size is not None and (
                isinstance(size, bool) or not isinstance(size, int) or size < 1 or not supports_hadamard(size)):
            raise ValueError(f"the rotation block block={size!r} is not a Hadamard order; pass one such as 32 "
                             f"(one MX block), or block=None for the full width")

    @property
    def rotates(self) -> bool:
        """False for ``none``: the model is left as it is."""
        return self.kind != "none"

    @property
    def learns(self) -> bool:
        """True for a learned rotation to be trained here (no file with its matrices)."""
        return self.kind == "learned" and not self.file

    def key(self) -> tuple:
        """What must agree for two requests to build the same model."""
        if self.kind == "none":
            return ("none",)
        if self.kind == "learned":
            return ("learned", self.sha256)
        return ("hadamard", self.seed, self.placement, self.block)

    def flags(self) -> str:
        """The command-line flags that ask for this rotation."""
        if self.kind == "learned":
            return f"--rotation-file {self.file}" if self.file else "--rotation learned"
        if self.kind == "none":
            return "--rotation none"
        size = "" if self.placement != "online" else f" --rotation-block {self.block or 0}"
        return f"--rotation hadamard --rotation-seed {self.seed} --rotation-placement {self.placement}{size}"

    def settings(self) -> dict[str, Any]:
        """The settings that build it, as a sweep's identity records them (``kind``, ``seed``, and
        for ``hadamard`` ``placement`` and ``block``, the rotation block)."""
        if self.kind == "none":
            return {"kind": "none"}
        if self.kind == "learned":
            return {"kind": "learned", "seed": self.seed}
        return {"kind": "hadamard", "seed": self.seed, "placement": self.placement, "block": self.block}

    def fixed_start(self) -> RotationSpec:
        """A learned rotation's starting point as a fixed rotation (the same folded randomized Hadamards)."""
        if self.kind != "learned":
            return self
        return RotationSpec("hadamard", self.seed, placement="folded", online_sites=self.online_sites, source=self.source)

    def description(self, hidden_size: int, head_dim: int) -> dict[str, Any]:
        """The JSON-serialisable record of this rotation applied to a model of these sizes.

        Assignments, export manifests and rotation files store it; :meth:`from_description` reads
        it back. The keys are those of ``DESCRIPTION_VERSION`` 1 (``"block"``: the online size).
        """
        return {
            "version": DESCRIPTION_VERSION,
            "kind": self.kind,
            "seed": int(self.seed),
            "online_sites": ["all"] if self.placement == "online" else list(self.online_sites),
            "hidden_size": int(hidden_size),
            "head_dim": int(head_dim),
            "placement": self.placement,
            "block": self.block,
            "matrices_needed": self.kind == "learned",
        }

    @classmethod
    def from_description(cls, description: dict[str, Any] | None, *, file: str | None = None,
                         source: str = "default") -> RotationSpec:
        """The request a recorded description (and its rotation ``file``, if any) stands for.

        A description without ``placement`` is the folded layout (recorded before the online
        layout existed); one without ``block`` rotates the full input width.
        """
        if not description or description.get("kind", "none") == "none":
            return cls(source=source)
        kind = description["kind"]
        return cls(kind=kind, seed=int(description.get("seed", 0)), placement=description.get("placement", "folded"),
                   block=description.get("block"),
                   online_sites=tuple(s for s in description.get("online_sites", ONLINE_SITES) if s in ONLINE_SITES),
                   file=file, sha256=sha256_file(file) if kind == "learned" and file else None, source=source)

    def check_buildable(self, *, trainable: bool = False, include_lm_head: bool = False) -> None:
        """``ValueError`` before any loading when a command cannot build this request.

        ``trainable``: the command trains a learned rotation from its start (``dmx calibrate``);
        elsewhere a learned rotation needs its file.
        """
        if not self.learns:
            return
        if not trainable:
            raise ValueError("a learned rotation needs the matrices learned by `dmx calibrate`: pass file=PATH (the "
                             ".rotation.safetensors written next to the assignment by calibrate, or by export), or use "
                             "kind='hadamard'")
        check_learned_lm_head(learning=True, lm_head_quantised=include_lm_head)


def check_learned_lm_head(*, learning: bool, lm_head_quantised: bool) -> None:
    """``ValueError`` when a learned rotation would be trained with a quantised ``lm_head``.

    The learned layout feeds ``lm_head`` through an ``R1^T`` input hook, which would sit after its
    MX quantiser. The commands and the sweep call this before loading;
    :func:`dmx.llm.rotation.attach_online_rotations` checks the model itself at every forward.
    """
    if learning and lm_head_quantised:
        raise ValueError(
            "a learned rotation cannot be trained with a quantised lm_head (its R1^T input hook would sit "
            "after the quantiser); drop include_lm_head, use kind='hadamard', or "
            "call dmx.llm.rotation.bake_rotation(model) before wrapping lm_head"
        )


#: The rotation of a new calibration (``dmx calibrate``, ``dmx kl``, ``dmx sweep``) when no rotation
#: is asked for: the fixed block-diagonal Hadamard of order 64 on every linear input, seed 0. The
#: authors always rotate (learned rotations, Cayley SGD); the fixed Hadamard is where dMX beats KL
#: in the results (docs/RESULTS.md), and the learned one is a flag away (docs/FIDELITY.md row 16 says why
#: the fixed one is the default). Commands that read assignments apply what those record instead.
CALIBRATION_ROTATION = RotationSpec(kind="hadamard", source="the default rotation of a new calibration "
                                                            "(rotation='none' for plain MX)")
