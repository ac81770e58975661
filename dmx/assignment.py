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

Deployment also lives here: the budget greedy shared by the KL baseline, the random control and
dMX's budget rounding (:func:`select_by_sensitivity`: every layer high, the lowest scores demoted
until the average bits are at or under the target), and :func:`deploy_formats`, which turns
calibrated offsets into fixed standard formats by one of ``FINAL_ROUNDINGS``:

* ``"threshold"`` (the method's rule) deploys each layer's hard format, ``|β̂| > β_max/2`` ->
  high. The hinge is one-sided, so the soft bits settle where the CE gradient balances it, a
  little above the target; longer runs can end well over it (5.35 bits at a 5-bit target after
  120 steps on SmolLM2-135M).
* ``"budget"`` keeps what dMX learned, the ranking of the layers by ``|β̂|``, and fills the
  budget exactly (:func:`budget_formats`: the greedy with ``|β̂|`` as the score), so the result
  never exceeds the budget and undershoots it by less than one layer's step. The threshold
  rule's bits are kept in the provenance (``threshold_element_bits``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmx.files import atomic_write_text, read_json
from dmx.regularizer import storage_bits
from mx_spec.formats import get_format

__all__ = ["ASSIGNMENT_SCHEMA", "WEIGHTINGS", "FINAL_ROUNDINGS", "Assignment", "apply_assignment",
           "format_element_bits", "demotion_order", "check_target", "select_by_sensitivity", "budget_formats",
           "check_final_rounding", "deploy_formats"]

ASSIGNMENT_SCHEMA = 1
WEIGHTINGS = ("mean", "elements")
#: How calibrated offsets become the deployed formats (module docstring, :func:`deploy_formats`).
FINAL_ROUNDINGS = ("threshold", "budget")


def format_element_bits(name: str) -> int:
    """Element width in bits of a standard MX format name (``ValueError`` listing valid names)."""
    return int(get_format(name).element.bits)


def _storage_bits(element_bits: float, block_size: int) -> float:
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
    layers (an assignment from another model, or one computed with/without ``include_lm_head``).
    """
    formats = assignment.formats if isinstance(assignment, Assignment) else dict(assignment)
    missing = sorted(set(layers) - set(formats))
    unknown = sorted(set(formats) - set(layers))
    if missing or unknown:
        raise ValueError(
            f"assignment does not match the model's quantised layers: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), unknown {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''} ({len(unknown)}); was it computed for this model "
            f"with the same include_lm_head setting?"
        )
    for name, layer in layers.items():
        layer.reconfigure(fixed_format=formats[name])


# ----------------------------------------------------------------------------- deployment


def demotion_order(scores: Mapping[str, float], layer_order: Sequence[str]) -> list[str]:
    """Layers sorted by ascending score (least sensitive first); equal scores keep model order."""
    missing = [n for n in layer_order if n not in scores]
    if missing:
        raise ValueError(
            f"{len(missing)} layer(s) have no score (first: {missing[0]!r}); score every layer first "
            "(KL scores: dmx.llm.kl_baseline.score_layers)"
        )
    rank = {n: i for i, n in enumerate(layer_order)}
    return sorted(layer_order, key=lambda n: (float(scores[n]), rank[n]))


def check_target(target_bits: float, *, low_format: str, high_format: str) -> None:
    """ValueError unless ``bits(low) < bits(high)`` and ``target_bits`` lies in that range."""
    lo, hi = format_element_bits(low_format), format_element_bits(high_format)
    if not lo < hi:
        raise ValueError(
            f"low format {low_format!r} ({lo} bits) must have fewer element bits than high "
            f"format {high_format!r} ({hi} bits)"
        )
    if math.isnan(target_bits) or not lo <= target_bits <= hi:
        raise ValueError(
            f"target of {target_bits} average element bits is unreachable with {low_format} "
            f"({lo} bits) and {high_format} ({hi} bits); choose a target in [{lo}, {hi}]"
        )


def select_by_sensitivity(
    scores: Mapping[str, float],
    layer_order: Sequence[str],
    *,
    low_format: str,
    high_format: str,
    target_bits: float,
    sizes: Mapping[str, int] | None = None,
    weighting: str = "mean",
) -> dict[str, str]:
    """Greedy assignment ``{layer: format}`` meeting ``average element bits <= target_bits``.

    Starts with every layer at ``high_format`` and demotes layers to ``low_format`` in
    ``demotion_order`` until the average element bits, computed exactly as
    :meth:`Assignment.from_formats` does for ``weighting`` (``sizes`` = weight element counts,
    needed for ``"elements"``), is ``<= target_bits``. A target outside ``[bits(low), bits(high)]``
    raises ValueError naming the reachable range.
    """
    check_target(target_bits, low_format=low_format, high_format=high_format)
    assignment = {n: high_format for n in layer_order}

    def avg() -> float:
        return Assignment.from_formats(assignment, weighting=weighting, layer_sizes=sizes).element_bits

    # A tiny tolerance keeps float round-off in the average from demoting one layer too many.
    for name in demotion_order(scores, layer_order):
        if avg() <= target_bits + 1e-9:
            break
        assignment[name] = low_format
    return assignment


def budget_formats(layers: Mapping[str, Any], target_bits: float, *, weighting: str = "mean") -> dict[str, str]:
    """``{layer: format}`` filling ``target_bits`` in the order of the learned ``|β̂|`` (``"budget"`` rounding).

    Every layer starts at its family's high format; the layers with the smallest ``|β̂|`` are
    demoted to the low format until the average element bits (``weighting`` as in
    :class:`Assignment`) are ``<= target_bits``. Needs one offset per layer (``tie=True``) and
    one family for all layers.
    """
    order = sorted(layers)
    untied = [n for n in order if not layers[n].tie]
    if untied:
        raise ValueError(f"final_rounding='budget' ranks layers by their one shared offset, but {untied[0]!r} "
                         "has separate weight/input offsets (tie=False); use final_rounding='threshold'")
    families = {layers[n].family.name for n in layers}
    if len(families) != 1:
        raise ValueError(f"final_rounding='budget' needs one format family for all layers, got {sorted(families)}")
    family = next(iter(layers.values())).family
    scores = {n: float(layers[n].beta_hat.detach().abs()) for n in layers}
    sizes = {n: int(layers[n].linear.weight.numel()) for n in layers}
    return select_by_sensitivity(scores, order, low_format=family.low_format, high_format=family.high_format,
                                 target_bits=target_bits, sizes=sizes, weighting=weighting)


def check_final_rounding(final_rounding: str) -> str:
    """``final_rounding`` if it is one of ``FINAL_ROUNDINGS``, else ``ValueError`` listing them."""
    if final_rounding not in FINAL_ROUNDINGS:
        raise ValueError(f"unknown final_rounding {final_rounding!r}; choose one of {list(FINAL_ROUNDINGS)}")
    return final_rounding


def deploy_formats(layers: Mapping[str, Any], final_rounding: str, target_bits: float, *, weighting: str = "mean",
                   provenance: Mapping[str, Any] | None = None) -> Assignment:
    """Fix every layer (in eval mode) to its deployed standard format by ``final_rounding``; return the assignment.

    ``"threshold"``: each layer's hard format; ``"budget"``: :func:`budget_formats`, with the
    threshold rule's average bits recorded as ``provenance["threshold_element_bits"]``.
    """
    check_final_rounding(final_rounding)
    record = dict(provenance or {})
    assignment = Assignment.from_layers(layers, weighting=weighting, provenance=record)
    if final_rounding == "budget":
        record["threshold_element_bits"] = assignment.element_bits
        apply_assignment(layers, budget_formats(layers, target_bits, weighting=weighting))
        assignment = Assignment.from_layers(layers, weighting=weighting, provenance=record)
    apply_assignment(layers, assignment)
    return assignment
