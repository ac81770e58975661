"""Export a mixed-precision dMX model as real MX data, and load it back.

An export is a directory::

    <dir>/manifest.json       what every tensor is (schema below)
    <dir>/model.safetensors   packed MX weights + E8M0 scales + full-precision tensors
    <dir>/rotation.safetensors  the learned rotation matrices (``dmx.llm.rotation.save_rotation``; only
                              for a model with a learned rotation)
    <dir>/tokenizer*          the tokenizer (when one was given to ``export_model``)

Quantised layers: the weight ``W`` ``[out_features, in_features]`` of every ``DMXLinear`` is
quantised with ``mx_spec.quantize(W, format, block_size=k, axis=1)`` (OCP MX v1.0 §6.3: one
block of ``k`` consecutive elements along the reduction dimension shares one E8M0 scale,
§5.1/§5.4; shared exponent ``floor(log2 amax) - emax_elem``, elements rounded to nearest even
and saturated). Two tensors are stored per layer:

* ``mx.<layer>.elements``: uint8, 1-D, ``mx_spec.pack`` bytes: the element codes in row-major
  order (each row's blocks contiguous), 8-bit codes one per byte, FP6 four codes per three
  bytes LSB-first, FP4 two codes per byte low nibble first (see ``mx_spec.packing``);
* ``mx.<layer>.scales``: uint8 ``[out_features, ceil(in_features / k)]`` E8M0 codes (bias 127,
  0xFF = NaN).

Everything else in the model's ``state_dict`` (embeddings, norms, biases, the output head
unless it was quantised, the dMX offsets) is stored unquantised under its own state-dict key;
tensors that share storage (tied embeddings) are stored once and listed in ``tied``.

``manifest.json`` (``schema`` = ``"dmx.export/1"``)::

    {"schema": "dmx.export/1",
     "tensors_file": "model.safetensors", "tensors_sha256": "<hex>",
     "model_class": "LlamaForCausalLM", "model_config": {... config.to_dict() ...},
     "dtype": "float32", "source": {"model": "...", "assignment": {... provenance ...} | null},
     "quantization": {"family": "fp8_fp4", "block_size": 32, "include_lm_head": false,
                      "block_axis": "in_features (axis 1 of the weight)",
                      "scale_mode": "floor", "rounding": "rne", "quantize_input": true,
                      "scale": "...", "activations": "..."},
     "element_bits": 5.0, "storage_bits": 5.25,
     "layers": {"<layer>": {"format": "mxfp4_e2m1", "element": "e2m1", "element_bits": 4,
                            "shape": [out, in], "block_size": 32, "block_axis": 1,
                            "elements": "mx.<layer>.elements", "scales": "mx.<layer>.scales",
                            "packed_bytes": n}},
     "full_precision": {"<state key>": {"shape": [...], "dtype": "float32"}},
     "tied": {"<alias key>": "<stored key>"},
     "rotation": {... dmx.llm.rotation.RotationSpec.description(hidden_size, head_dim) ...} | null,
     "rotation_file": "rotation.safetensors" | null, "rotation_sha256": "<hex>" | null,
     "tokenizer": true | false, "versions": {...}}

A rotated model (``dmx.llm.rotation``) is exported with its rotation already folded into the stored
weights; ``rotation`` records how it was rotated so that the loader rebuilds the parts that are
not weights (the online Hadamards before the linears, the unit RMSNorm scales, the untied head)
with :func:`dmx.llm.rotation.apply_rotation_description` before quantising. A learned rotation must
be baked (:func:`dmx.llm.rotation.bake_rotation`, which ``dmx.calibrate.calibrate`` does) first.

``load_exported(dir)`` rebuilds the architecture from ``model_config``, wraps the same layers
with ``dmx.llm.pipeline.quantize_model``, loads the full-precision tensors, sets every quantised
weight to ``mx_spec.dequantize(mx_spec.unpack(...))`` and fixes each layer to its format, so
the returned model (rotated again as recorded) computes exactly the logits of the exported
fake-quantised model
(re-quantising an MX-dequantised block with the same format reproduces it: its amax keeps the
same binade, see OCP MX v1.0 §6.3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dmx.assignment import Assignment
from dmx.files import atomic_write_bytes, atomic_write_text, read_json, sha256_file
from dmx.llm.models import resolve_dtype
from dmx.llm.pipeline import quantize_model
from dmx.provenance import software_versions
from dmx.llm.rotation import apply_rotation_description, load_rotation, rotation_state, save_rotation
from mx_spec import dequantize, get_format, pack, quantize, unpack

EXPORT_SCHEMA = "dmx.export/1"
MANIFEST_NAME = "manifest.json"
TENSORS_NAME = "model.safetensors"
ROTATION_NAME = "rotation.safetensors"
ACTIVATIONS_NOTE = (
    "input activations are MX-quantised at run time to the layer's format (same block size, "
    "blocks along in_features); they are not stored"
)


def _elements_key(layer: str) -> str:
    return f"mx.{layer}.elements"


def _scales_key(layer: str) -> str:
    return f"mx.{layer}.scales"


def quantize_weight(
    weight: torch.Tensor, fmt: str, block_size: int, *, scale_mode: str = "floor", rounding: str = "rne"
) -> tuple[np.ndarray, np.ndarray]:
    """``(packed element bytes, E8M0 scales)`` of a Linear weight ``[out, in]``, blocks along
    ``in`` (axis 1), via ``mx_spec.quantize`` + ``mx_spec.pack``."""
    w = weight.detach().to("cpu", torch.float32).numpy()
    mx = quantize(w, fmt, block_size=block_size, axis=1, scale_mode=scale_mode, rounding=rounding)
    return pack(mx), np.ascontiguousarray(mx.scales, dtype=np.uint8)


def dequantize_weight(
    elements: np.ndarray, scales: np.ndarray, fmt: str, shape: tuple[int, int], block_size: int
) -> np.ndarray:
    """float32 ``[out, in]`` weight from packed bytes and scales (inverse of ``quantize_weight``
    up to MX rounding), via ``mx_spec.unpack`` + ``mx_spec.dequantize``."""
    mx = unpack(elements, fmt, shape, axis=1, scales=scales, block_size=block_size)
    return dequantize(mx, dtype=np.float32)


def _family_name(layer: nn.Module) -> str:
    fam = getattr(layer, "family")
    return fam if isinstance(fam, str) else fam.name


def export_model(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    out_dir: str | os.PathLike,
    *,
    tokenizer: Any = None,
    assignment: Assignment | None = None,
    include_lm_head: bool = False,
) -> Path:
    """Write ``model`` (with its ``DMXLinear`` ``layers`` at fixed formats) to ``out_dir``.

    Each layer is exported at its deployed format (``layer.format_name()``; apply an
    assignment first with ``dmx.assignment.apply_assignment``). ``assignment`` (optional) adds
    its provenance and achieved bits to the manifest; ``include_lm_head`` must match how the
    model was quantised. Files are written atomically, the manifest last, so a directory with
    a manifest is always complete. Returns ``out_dir``.
    """
    from safetensors.torch import save

    if not layers:
        raise ValueError("no quantised layers to export; quantise the model (dmx.llm.pipeline.quantize_model) first")
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ValueError(
            f"{type(model).__name__} has no Hugging Face config; export needs a transformers causal LM"
        )
    out = Path(out_dir)
    settings = {
        (_family_name(layer), int(layer.block_size), layer.scale_mode, layer.rounding, bool(layer.quantize_input))
        for layer in layers.values()
    }
    if len(settings) != 1:
        raise ValueError(
            f"layers mix quantiser settings (family, block size, scale mode, rounding, input quantisation) "
            f"{sorted(settings)}; export needs one setting for all layers"
        )
    family, block_size, scale_mode, rounding, quantize_input = settings.pop()

    rotation = rotation_state(model)
    if rotation is not None and not rotation.baked:
        raise ValueError("the model's learned rotation is still being trained (parametrised weights); fold it "
                         "into the weights with dmx.llm.rotation.bake_rotation(model) before exporting")

    tensors: dict[str, torch.Tensor] = {}
    manifest_layers: dict[str, dict[str, Any]] = {}
    quantised_keys = set()
    for name, layer in layers.items():
        fmt = layer.format_name()
        elem = get_format(fmt).element
        weight = layer.linear.weight
        elements, scales = quantize_weight(weight, fmt, block_size, scale_mode=scale_mode, rounding=rounding)
        tensors[_elements_key(name)] = torch.from_numpy(elements)
        tensors[_scales_key(name)] = torch.from_numpy(scales)
        quantised_keys.add(f"{name}.linear.weight")
        manifest_layers[name] = {
            "format": fmt,
            "element": elem.name,
            "element_bits": int(elem.bits),
            "shape": [int(s) for s in weight.shape],
            "block_size": block_size,
            "block_axis": 1,
            "elements": _elements_key(name),
            "scales": _scales_key(name),
            "packed_bytes": int(elements.size),
        }

    full: dict[str, dict[str, Any]] = {}
    tied: dict[str, str] = {}
    stored_by_storage: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}
    for key, value in model.state_dict(keep_vars=False).items():
        if key in quantised_keys:
            continue
        ident = (value.untyped_storage().data_ptr() + value.storage_offset() * value.element_size(),
                 tuple(value.shape), tuple(value.stride()))
        if ident in stored_by_storage:
            tied[key] = stored_by_storage[ident]
            continue
        stored_by_storage[ident] = key
        tensors[key] = value.detach().to("cpu").contiguous()
        full[key] = {"shape": [int(s) for s in value.shape], "dtype": str(value.dtype).removeprefix("torch.")}

    out.mkdir(parents=True, exist_ok=True)
    tensors_path = atomic_write_bytes(out / TENSORS_NAME, save(tensors))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    rotation_file = None
    if rotation is not None and rotation.spec.kind == "learned":
        rotation_file = save_rotation(rotation, out / ROTATION_NAME)
    bits = assignment if assignment is not None else Assignment.from_layers(layers)
    dtype = next(iter(layers.values())).linear.weight.dtype
    manifest = {
        "schema": EXPORT_SCHEMA,
        "tensors_file": TENSORS_NAME,
        "tensors_sha256": sha256_file(tensors_path),
        "model_class": type(model).__name__,
        "model_config": config.to_dict(),
        "dtype": str(dtype).removeprefix("torch."),
        "source": {
            "model": getattr(model, "dmx_source", None),
            "assignment": None if assignment is None else assignment.provenance,
        },
        "quantization": {
            "family": family,
            "block_size": block_size,
            "include_lm_head": bool(include_lm_head),
            "block_axis": "in_features (axis 1 of the weight)",
            "scale_mode": scale_mode,
            "rounding": rounding,
            "quantize_input": quantize_input,
            "scale": "E8M0 (OCP MX v1.0 §5.1), one per block of block_size weights",
            "activations": ACTIVATIONS_NOTE if quantize_input else "input activations stay full precision",
        },
        "element_bits": bits.element_bits,
        "storage_bits": bits.storage_bits,
        "layers": manifest_layers,
        "full_precision": full,
        "tied": tied,
        "rotation": None if rotation is None else rotation.describe(),
        "rotation_file": None if rotation_file is None else rotation_file.name,
        "rotation_sha256": None if rotation_file is None else sha256_file(rotation_file),
        "tokenizer": tokenizer is not None,
        "versions": software_versions(),
    }
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=1, default=str) + "\n")
    return out


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The validated manifest of an export directory (ValueError / FileNotFoundError saying what is wrong)."""
    folder = Path(path)
    mpath = folder / MANIFEST_NAME
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath} does not exist; {folder} is not a dmx export (write one with `dmx export`)")
    manifest = read_json(mpath, what="export manifest", fix="re-export the model with `dmx export`")
    if manifest.get("schema") != EXPORT_SCHEMA:
        raise ValueError(f"{mpath} has schema {manifest.get('schema')!r}; this loader reads {EXPORT_SCHEMA!r}")
    return manifest


def _build_model(manifest: Mapping[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(manifest["model_config"])
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(manifest["dtype"]))
    model.eval()
    model.requires_grad_(False)
    return model


def _rebuild_rotation(model: nn.Module, manifest: Mapping[str, Any], folder: Path, *, verify: bool) -> None:
    """Re-apply the recorded rotation to the freshly built model (its weights are replaced afterwards)."""
    description = manifest.get("rotation")
    if not description:
        return
    matrices = None
    if manifest.get("rotation_file"):
        rpath = folder / manifest["rotation_file"]
        if not rpath.is_file():
            raise FileNotFoundError(f"{rpath} is missing; the export in {folder} is incomplete, re-export it")
        if verify and sha256_file(rpath) != manifest.get("rotation_sha256"):
            raise ValueError(f"{rpath} does not match the sha256 in its manifest (corrupt or replaced); re-export it")
        _, matrices = load_rotation(rpath)
    apply_rotation_description(model, description, matrices)


def load_exported(path: str | os.PathLike, *, device: str = "cpu", verify: bool = True) -> nn.Module:
    """Rebuild the fake-quantised model of an export directory (see module docstring).

    ``verify`` checks the sha256 of the tensors file first (a corrupt or truncated file raises
    ValueError). Returns the model in eval mode, its dMX layers fixed to the exported formats
    (``dmx.wrap.dmx_layers(model)`` lists them); the tokenizer, if exported, loads with
    ``AutoTokenizer.from_pretrained(path)``.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    manifest = read_manifest(folder)
    tpath = folder / manifest["tensors_file"]
    if not tpath.is_file():
        raise FileNotFoundError(f"{tpath} is missing; the export in {folder} is incomplete, re-export it")
    if verify and sha256_file(tpath) != manifest["tensors_sha256"]:
        raise ValueError(f"{tpath} does not match the sha256 in its manifest (corrupt or replaced); re-export it")
    tensors = load_file(str(tpath))
    q = manifest["quantization"]
    model = _build_model(manifest)
    _rebuild_rotation(model, manifest, folder, verify=verify)
    layers = quantize_model(
        model, family=q["family"], include_lm_head=q["include_lm_head"], block_size=q["block_size"],
        scale_mode=q["scale_mode"], rounding=q["rounding"], quantize_input=q["quantize_input"],
    )
    if set(layers) != set(manifest["layers"]):
        raise ValueError(
            f"the rebuilt {manifest['model_class']} quantises {len(layers)} layers but the export lists "
            f"{len(manifest['layers'])}; the export was made with other settings or another model"
        )
    state = {k: tensors[k] for k in manifest["full_precision"]}
    state.update({alias: tensors[key] for alias, key in manifest["tied"].items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    expected_missing = {f"{n}.linear.weight" for n in layers}
    if set(missing) != expected_missing or unexpected:
        raise ValueError(
            f"state of {folder} does not fit the rebuilt model: missing {sorted(set(missing) - expected_missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    with torch.no_grad():
        for name, layer in layers.items():
            info = manifest["layers"][name]
            w = dequantize_weight(
                tensors[info["elements"]].numpy(), tensors[info["scales"]].numpy(), info["format"],
                tuple(info["shape"]), int(info["block_size"]),
            )
            layer.linear.weight.copy_(torch.from_numpy(w))
            layer.reconfigure(fixed_format=info["format"])
    model.to(device)
    model.dmx_source = f"export:{folder}"
    return model
