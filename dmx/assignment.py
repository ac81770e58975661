"""Per-layer MX format assignments: the result of calibration (or a baseline), stored as JSON.

JSON schema (``schema`` = 1)::

    {"schema": 1,
     "formats": {"model.layers.0.self_attn.q_proj": "mxfp8_e4m3", ...},   # layer -> MX format
     "element_bits": 5.02,            # average element bits under `weighting`
     "element_bits_mean": 5.02,       # plain mean over layers
     "element_bits_by_params": 4.91,  # weighted by each layer's weight-element count (or null)
     "storage_bits": 5.27,            # element_bits + 8 / block_size (shared E8M0 scale per block)
     "block_size": 32, "weighting": "mean",
     "provenance": {...}}             # model, data hash, seed, versions, settings

Element bits of a layer are the element width of its MX format (OCP MX v1.0 §5.3: 8 for
MXFP8/MXINT8, 6 for MXFP6, 4 for MXFP4). Storage bits add the 8-bit E8M0 scale shared by each
block of ``block_size`` elements (§5.1).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmx.files import atomic_write_text, read_json

__all__ = ["ASSIGNMENT_SCHEMA", "WEIGHTINGS", "Assignment", "apply_assignment", "format_element_bits"]

ASSIGNMENT_SCHEMA = 1
WEIGHTINGS = ("mean", "elements")


def format_element_bits(name: str) -> int:
    """Element width in bits of a standard MX format name (``ValueError`` listing valid names)."""
    from mx_spec.formats import get_format

    return int(get_format(name).element.bits)


def _storage_bits(element_bits: float, block_size: int) -> float:
    from dmx.regularizer import storage_bits

    return float(storage_bits(element_bits, block_size))


@dataclass
class Assignment:
    """A ``{layer: MX format}`` map with its achieved bits and provenance (see module doc)."""

    formats: dict[str, str]
    element_bits: float
    storage_bits: float
    block_size: int = 32
    weighting: str = "mean"
    element_bits_mean: float = 0.0
    element_bits_by_params: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_formats(
        cls,
        formats: Mapping[str, str],
        *,
        block_size: int = 32,
        weighting: str = "mean",
        layer_sizes: Mapping[str, int] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> "Assignment":
        """Build an assignment and compute its bits.

        ``weighting="mean"``: element_bits is the plain mean over layers; ``"elements"``: the mean
        weighted by ``layer_sizes`` (number of weight elements per layer, required then).
        """
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of {list(WEIGHTINGS)}")
        if not formats:
            raise ValueError("an assignment needs at least one layer")
        bits = {name: format_element_bits(fmt) for name, fmt in formats.items()}
        mean = sum(bits.values()) / len(bits)
        by_params = None
        if layer_sizes is not None:
            missing = sorted(set(bits) - set(layer_sizes))
            if missing:
                raise ValueError(f"layer_sizes lacks layers {missing[:5]}")
            total = sum(int(layer_sizes[n]) for n in bits)
            by_params = sum(bits[n] * int(layer_sizes[n]) for n in bits) / total
        if weighting == "elements" and by_params is None:
            raise ValueError("weighting='elements' needs layer_sizes (weight elements per layer)")
        chosen = mean if weighting == "mean" else by_params
        return cls(
            formats=dict(formats),
            element_bits=float(chosen),
            storage_bits=_storage_bits(chosen, block_size),
            block_size=int(block_size),
            weighting=weighting,
            element_bits_mean=float(mean),
            element_bits_by_params=None if by_params is None else float(by_params),
            provenance=dict(provenance or {}),
        )

    @classmethod
    def from_layers(
        cls,
        layers: Mapping[str, Any],
        *,
        weighting: str = "mean",
        provenance: Mapping[str, Any] | None = None,
    ) -> "Assignment":
        """Snapshot the hard (deployed) format of every ``DMXLinear`` in ``layers``."""
        formats = {name: layer.format_name() for name, layer in layers.items()}
        sizes = {name: int(layer.linear.weight.numel()) for name, layer in layers.items()}
        block_sizes = {int(getattr(layer, "block_size", 32)) for layer in layers.values()}
        if len(block_sizes) != 1:
            raise ValueError(f"layers use different block sizes {sorted(block_sizes)}")
        return cls.from_formats(
            formats, block_size=block_sizes.pop(), weighting=weighting, layer_sizes=sizes, provenance=provenance
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the schema of the module docstring."""
        return {
            "schema": ASSIGNMENT_SCHEMA,
            "formats": dict(self.formats),
            "element_bits": self.element_bits,
            "element_bits_mean": self.element_bits_mean,
            "element_bits_by_params": self.element_bits_by_params,
            "storage_bits": self.storage_bits,
            "block_size": self.block_size,
            "weighting": self.weighting,
            "provenance": self.provenance,
        }

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the assignment as indented JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> "Assignment":
        """Validate and rebuild an assignment; every format name must be a standard MX format."""
        if not isinstance(data, Mapping) or "formats" not in data or not isinstance(data["formats"], Mapping):
            raise ValueError(f"{source}: not a dMX assignment (expected an object with a 'formats' map)")
        if data.get("schema", ASSIGNMENT_SCHEMA) != ASSIGNMENT_SCHEMA:
            raise ValueError(f"{source}: assignment schema {data.get('schema')} is not supported (expected {ASSIGNMENT_SCHEMA})")
        formats = {str(k): str(v) for k, v in data["formats"].items()}
        for name, fmt in formats.items():
            try:
                format_element_bits(fmt)
            except ValueError as err:
                raise ValueError(f"{source}: layer {name!r} has an invalid format: {err}") from err
        return cls(
            formats=formats,
            element_bits=float(data.get("element_bits", 0.0)),
            storage_bits=float(data.get("storage_bits", 0.0)),
            block_size=int(data.get("block_size", 32)),
            weighting=str(data.get("weighting", "mean")),
            element_bits_mean=float(data.get("element_bits_mean", data.get("element_bits", 0.0))),
            element_bits_by_params=data.get("element_bits_by_params"),
            provenance=dict(data.get("provenance", {})),
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "Assignment":
        """Read an assignment JSON file (clear errors for a missing or malformed file)."""
        target = Path(path)
        if not target.is_file():
            raise FileNotFoundError(f"assignment file {str(target)!r} does not exist (write one with `dmx calibrate --out`)")
        data = read_json(target, what="assignment file", fix="write it again with `dmx calibrate --out`")
        return cls.from_dict(data, source=str(target))


def apply_assignment(layers: Mapping[str, Any], assignment: Assignment | Mapping[str, str]) -> None:
    """Fix every ``DMXLinear`` in ``layers`` to its assigned standard MX format (no learning).

    The layer names must match exactly; otherwise ``ValueError`` names the missing and unknown
    layers (an assignment from another model, or one computed with/without ``--include-lm-head``).
    """
    formats = assignment.formats if isinstance(assignment, Assignment) else dict(assignment)
    missing = sorted(set(layers) - set(formats))
    unknown = sorted(set(formats) - set(layers))
    if missing or unknown:
        raise ValueError(
            f"assignment does not match the model's quantised layers: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), unknown {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''} ({len(unknown)}); was it computed for this model "
            f"with the same --include-lm-head setting?"
        )
    for name, layer in layers.items():
        layer.set_fixed_format(formats[name])
