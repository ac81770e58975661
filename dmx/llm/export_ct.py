"""Export a mixed-precision dMX model as a compressed-tensors checkpoint, and load it back.

compressed-tensors is the checkpoint format llm-compressor writes and vLLM and Hugging Face
transformers read. Its MX schemes (``compressed_tensors.quantization.quant_scheme``: MXFP4,
MXFP6 E2M3, MXFP8 E4M3; group 32 along ``in_features``, E8M0 scales as uint8) and per-module
``config_groups`` express a per-layer mixed assignment; its ``transform_config`` expresses the
online part of a rotation. Everything is written through compressed-tensors' own classes:
``QuantizationArgs``/``QuantizationScheme``/``QuantizationConfig`` and
``apply_quantization_config`` attach the schemes, ``ModelCompressor`` (its MX compressors)
packs the weights and writes ``quantization_config`` into ``config.json``, and
``TransformScheme``/``TransformConfig``/``apply_transform_config`` attach the rotations.

The directory (``export_compressed_tensors``)::

    config.json          the model's HF config + quantization_config (compressed-tensors) +
                         dmx_export (provenance: assignment sha256 and provenance, rotation, recipe)
    model.safetensors    <layer>.weight_packed (FP4 two codes per byte, low nibble first; FP6
                         four codes in three bytes, little-endian) or <layer>.weight (float8_e4m3fn),
                         <layer>.weight_scale (uint8 E8M0, [out, in/32]), every other tensor in
                         full precision, and each online rotation matrix
    tokenizer files      unless no tokenizer was given

The weights are the project's bits: each layer's weight is ``mx_spec.quantize(W, fmt, 32,
axis=1)`` (the layer's scale mode and rounding), decoded exactly (:func:`dmx.llm.export.dequantize_weight`)
and handed to compressed-tensors with its E8M0 scale; values already on the MX grid are
re-quantised by the compressor without rounding, so the stored scales and element values are
mx_spec's; its packer writes -0.0 as +0.0, so :func:`store_project_codes` puts mx_spec's bytes in
(same layout, checked) and the codes are mx_spec's too (tested against ``mx_spec.quantize`` by
decoding the file with compressed-tensors' decompressors).

Input activations: each layer's scheme says its input format (``dynamic=True``, group 32, uint8
scales), and the runtime computes the scales itself: compressed-tensors' rule
(``quantization.utils.mxfp_utils.generate_mx_scales``) rounds the block max to the element's
mantissa width (E2M1: 1 bit, E2M3: 3 bits, and 1 bit for E4M3 too) before ``floor(log2) - emax``;
:mod:`dmx.llm.export_ct_runtime` measures what that changes.

Rotations: the folded parts (norm scales, R1, R2, ``W <- W Q``) are already in the weights; each
online randomized Hadamard (``x -> x Q`` before a linear, one per layer in the ``online`` layout,
before o_proj/down_proj in the folded and learned ones) becomes a ``TransformScheme`` of type
``random-matrix`` at that linear's ``input`` whose matrix ``Q`` is stored in the checkpoint (a
``head_dim`` block-diagonal scheme repeats ONE block, but the project's Q has different random
signs in every 64-block, so the full-width block-diagonal matrix is stored: 30 x (6 x 576^2 +
1536^2) = 130 M float32 values, 522 MB, on SmolLM2-135M with the default online layout). transformers does not apply ``transform_config`` when it loads a checkpoint
(5.25); :func:`load_compressed_tensors` applies it with compressed-tensors' ``apply_transform_config``
and loads the stored matrices.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dmx.assignment import Assignment
from dmx.llm.export import dequantize_weight, quantize_weight
from dmx.files import read_json
from dmx.provenance import software_versions
from dmx.llm.rotation import rotation_state
from mx_spec import get_format
from mx_spec.packing import unpack_elements

#: The MX formats compressed-tensors has a scheme for, with the element width its MX
#: compressors and quantisers key on (``num_bits``; FP6 is E2M3 and FP8 is E4M3 there).
CT_FORMATS = {"mxfp4_e2m1": 4, "mxfp6_e2m3": 6, "mxfp8_e4m3": 8}
CT_BLOCK_SIZE = 32
#: The optional dependency and how to install it (pyproject.toml ``export`` extra).
CT_EXTRA_HINT = "pip install 'dmx-reference[export]' (the `export` extra: compressed-tensors)"
PROVENANCE_KEY = "dmx_export"
TRANSFORM_TYPE = "random-matrix"


def require_compressed_tensors() -> None:
    """ImportError naming the extra to install when compressed-tensors is missing."""
    if importlib.util.find_spec("compressed_tensors") is None:
        raise ImportError(f"output_format='compressed-tensors' needs compressed-tensors: {CT_EXTRA_HINT}")


def check_ct_formats(formats: Mapping[str, str], block_size: int) -> None:
    """ValueError before any work when an assignment has no compressed-tensors scheme.

    ``formats``: ``{layer: MX format}`` (weights and inputs); ``block_size``: the MX block size.
    """
    if block_size != CT_BLOCK_SIZE:
        raise ValueError(f"compressed-tensors' MX schemes use blocks of {CT_BLOCK_SIZE}; block_size is {block_size}. "
                         f"Export with block_size={CT_BLOCK_SIZE}, or use output_format='dmx'")
    bad = sorted({fmt for fmt in formats.values() if fmt not in CT_FORMATS})
    if bad:
        layers = [n for n, f in formats.items() if f in bad]
        raise ValueError(f"compressed-tensors has no scheme for {bad} (used by {len(layers)} layers, e.g. {layers[:2]}); "
                         f"it supports {sorted(CT_FORMATS)}. Use output_format='dmx', which stores every MX format")


def _operand_formats(layers: Mapping[str, nn.Module]) -> dict[str, dict[str, str]]:
    return {name: layer.format_names() for name, layer in layers.items()}


def check_exportable(layers: Mapping[str, nn.Module], model: nn.Module) -> None:
    """Every check of :func:`export_compressed_tensors` that needs no work (ValueError / ImportError)."""
    require_compressed_tensors()
    if not layers:
        raise ValueError("no quantised layers to export; quantise the model (dmx.llm.pipeline.quantize_model) first")
    settings = {(int(layer.block_size), bool(layer.quantize_input)) for layer in layers.values()}
    if len(settings) != 1:
        raise ValueError(f"layers mix block sizes or input quantisation {sorted(settings)}; export needs one setting")
    block_size, _ = settings.pop()
    ops = _operand_formats(layers)
    check_ct_formats({f"{n} ({op})": f for n, fm in ops.items() for op, f in fm.items()}, block_size)
    rotation = rotation_state(model)
    if rotation is None:
        return
    if not rotation.baked:
        raise ValueError("the model's learned rotation is still being trained; fold it into the weights with "
                         "dmx.llm.rotation.bake_rotation(model) before exporting")
    not_linear = sorted(p for p in rotation.online if not _is_linear(model.get_submodule(p)))
    if not_linear:
        raise ValueError(f"online rotations before {not_linear[:3]} sit on modules that are not linears; "
                         f"compressed-tensors' transform_config applies input transforms to linears only: "
                         f"use output_format='dmx'")


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or isinstance(getattr(module, "linear", None), nn.Linear)


def mx_args(fmt: str, *, dynamic: bool):
    """compressed-tensors ``QuantizationArgs`` of the MX format ``fmt`` (as its MXFP4/6/8 presets)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationStrategy, QuantizationType

    return QuantizationArgs(num_bits=CT_FORMATS[fmt], type=QuantizationType.FLOAT, strategy=QuantizationStrategy.GROUP,
                            group_size=CT_BLOCK_SIZE, symmetric=True, dynamic=dynamic, scale_dtype=torch.uint8,
                            zp_dtype=torch.uint8)


def group_name(weight_fmt: str, input_fmt: str | None) -> str:
    """The config group of a (weight, input) format pair, e.g. ``w_mxfp4_e2m1-a_mxfp4_e2m1``."""
    return f"w_{weight_fmt}" + ("-a_none" if input_fmt is None else f"-a_{input_fmt}")


def quantization_config(layers: Mapping[str, nn.Module], *, quantize_input: bool | None = None):
    """The ``QuantizationConfig`` naming every layer in the group of its (weight, input) formats.

    ``quantize_input`` (default: as the layers do) adds the dynamic input-activation scheme.
    """
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme

    groups: dict[str, tuple[str, str | None, list[str]]] = {}
    for name, layer in layers.items():
        fm = layer.format_names()
        act = fm["input"] if (layer.quantize_input if quantize_input is None else quantize_input) else None
        groups.setdefault(group_name(fm["weight"], act), (fm["weight"], act, []))[2].append(name)
    schemes = {
        key: QuantizationScheme(targets=names, weights=mx_args(w, dynamic=False),
                                input_activations=None if a is None else mx_args(a, dynamic=True))
        for key, (w, a, names) in sorted(groups.items())
    }
    return QuantizationConfig(config_groups=schemes)


def plain_model(model: nn.Module, layers: Mapping[str, nn.Module]) -> tuple[nn.Module, dict[str, Any]]:
    """A transformers model of ``model``'s config whose quantised linears hold their MX-decoded
    weights, and ``{layer: (packed bytes, E8M0 scales)}`` from :func:`dmx.llm.export.quantize_weight`."""
    from transformers import AutoModelForCausalLM

    dtype = next(iter(layers.values())).linear.weight.dtype
    plain = AutoModelForCausalLM.from_config(model.config, dtype=dtype).eval()
    plain.requires_grad_(False)
    state = {}
    wrapped = {f"{n}.linear.": f"{n}." for n in layers}
    for key, value in model.state_dict().items():
        prefix = next((p for p in wrapped if key.startswith(p)), None)
        if prefix is None and ".beta_hat" in key:
            continue  # the dMX offsets are not part of the served model
        state[key if prefix is None else wrapped[prefix] + key[len(prefix):]] = value
    bits = {}
    for name, layer in layers.items():
        fmt, weight = layer.format_name(), layer.linear.weight
        packed, scales = quantize_weight(weight, fmt, layer.block_size, scale_mode=layer.scale_mode,
                                         rounding=layer.rounding)
        decoded = dequantize_weight(packed, scales, fmt, tuple(weight.shape), layer.block_size)
        state[f"{name}.weight"] = torch.from_numpy(decoded).to(dtype)
        bits[name] = (packed, scales)
    missing, unexpected = plain.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"the model's state does not fit a fresh {type(plain).__name__}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return plain, bits


def store_project_codes(plain: nn.Module, layers: Mapping[str, nn.Module], bits: Mapping[str, Any]) -> None:
    """Put mx_spec's element bytes into the compressed modules, after checking that
    compressed-tensors' own packing of the same values differs from them only in the sign of
    zeros: its quantiser writes -0.0 (an element that underflowed from a negative weight) as +0.0,
    so without this the file would hold code 0 where mx_spec holds the negative zero. The byte
    layouts are the same (FP4 two codes per byte, low nibble first; FP6 four in three bytes, LSB
    first; FP8 one per byte), so the file then holds exactly ``mx_spec.pack(mx_spec.quantize(W))``.
    """
    for name, (packed, _) in bits.items():
        module, fmt = plain.get_submodule(name), layers[name].format_name()
        key = "weight" if CT_FORMATS[fmt] == 8 else "weight_packed"
        theirs = getattr(module, key)
        elem = get_format(fmt).element
        count = packed.size * 8 // int(elem.bits)
        ours_codes = unpack_elements(packed, elem, count)
        their_codes = unpack_elements(theirs.data.reshape(-1).view(torch.uint8).numpy(), elem, count)
        negative_zero = 1 << (int(elem.bits) - 1)
        differ = ours_codes != their_codes
        if not (ours_codes[differ] == negative_zero).all() or their_codes[differ].any():
            raise RuntimeError(f"compressed-tensors packed {name} ({fmt}) differently from mx_spec beyond the sign of "
                               f"zeros; this compressed-tensors version stores another layout")
        theirs.data = torch.from_numpy(packed.copy()).reshape(theirs.shape).view(theirs.dtype)


def transform_config(model: nn.Module):
    """``(TransformConfig | None, {layer: Q})``: one ``random-matrix`` scheme at the input of
    every linear that has an online rotation, ``Q`` the dense float32 matrix it applies."""
    from compressed_tensors.transform import TransformArgs, TransformConfig, TransformScheme

    rotation = rotation_state(model)
    if rotation is None or not rotation.online:
        return None, {}
    schemes, matrices = {}, {}
    for i, (path, hook) in enumerate(sorted(rotation.online.items())):
        schemes[f"dmx_online_{i}"] = TransformScheme(type=TRANSFORM_TYPE, head_dim=None, precision=torch.float32,
                                                     apply=[TransformArgs(targets=[path], location="input")])
        matrices[path] = hook.matrix().to(torch.float32)
    return TransformConfig(config_groups=schemes), matrices


def _transform_modules(model: nn.Module, config) -> dict[str, nn.Module]:
    """``{target path: transform submodule}`` that ``apply_transform_config`` attached."""
    found = {}
    for key, scheme in config.config_groups.items():
        for args in scheme.apply:
            for path in args.targets:
                found[path] = model.get_submodule(path).get_submodule(f"{key}_{args.location}")
    return found


def provenance(model: nn.Module, assignment: Assignment | None, layers: Mapping[str, nn.Module],
               assignment_sha256: str | None = None) -> dict[str, Any]:
    """What ``config.json``'s ``dmx_export`` records: where the model and its assignment came from."""
    rotation = rotation_state(model)
    first = next(iter(layers.values()))
    return {
        "schema": "dmx.llm.export.compressed-tensors/1",
        "source_model": getattr(model, "dmx_source", None),
        "assignment_sha256": assignment_sha256,
        "assignment_provenance": None if assignment is None else assignment.provenance,
        "formats": {n: layer.format_names() for n, layer in layers.items()},
        "element_bits": None if assignment is None else assignment.element_bits,
        "recipe": {"family": first.family.name, "block_size": int(first.block_size), "weight_scale_mode":
                   first.scale_mode, "rounding": first.rounding, "quantize_input": bool(first.quantize_input)},
        "rotation": None if rotation is None else rotation.describe(),
        "activation_scales": "computed at run time by the runtime's own rule (compressed-tensors: generate_mx_scales)",
        "versions": software_versions(),
    }


def export_compressed_tensors(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    out_dir: str | os.PathLike,
    *,
    tokenizer: Any = None,
    assignment: Assignment | None = None,
    assignment_sha256: str | None = None,
    quantize_input: bool | None = None,
) -> Path:
    """Write ``model`` (its ``DMXLinear`` ``layers`` at fixed formats) as a compressed-tensors
    checkpoint in ``out_dir`` (module docstring). ``assignment``: its provenance goes into
    ``config.json`` (with ``assignment_sha256``, the sha256 of its file); ``quantize_input``: override the layers' input-activation quantisation.
    Checks (:func:`check_exportable`) run before any work. Returns ``out_dir``."""
    check_exportable(layers, model)
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.compressors.format import infer_model_format
    from compressed_tensors.quantization import apply_quantization_config
    from compressed_tensors.transform import apply_transform_config

    plain, bits = plain_model(model, layers)
    tconfig, matrices = transform_config(model)
    if tconfig is not None:
        apply_transform_config(plain, tconfig)
        with torch.no_grad():
            for path, module in _transform_modules(plain, tconfig).items():
                module.weight.data = matrices[path].clone()
    qconfig = quantization_config(layers, quantize_input=quantize_input)
    apply_quantization_config(plain, qconfig)
    with torch.no_grad():
        for name, (_, scales) in bits.items():
            module = plain.get_submodule(name)
            module.weight_scale.data = torch.exp2(torch.from_numpy(scales).to(torch.float64) - 127).to(module.weight.dtype)
    qconfig.format = infer_model_format(plain)  # sets each module's compression format (mxfp4-pack-quantized, ...)
    for scheme in qconfig.config_groups.values():  # and names it in config.json's groups
        scheme.format = plain.get_submodule(scheme.targets[0]).quantization_scheme.format
    compressor = ModelCompressor(quantization_config=qconfig, transform_config=tconfig)
    compressor.compress_model(plain)
    store_project_codes(plain, layers, bits)
    plain.config.update({PROVENANCE_KEY: provenance(model, assignment, layers, assignment_sha256)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    compressor.update_config(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def read_export_config(path: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a compressed-tensors export (FileNotFoundError / ValueError saying what is wrong)."""
    cpath = Path(path) / "config.json"
    if not cpath.is_file():
        raise FileNotFoundError(f"{cpath} does not exist; write an export with `dmx export --output-format compressed-tensors`")
    config = read_json(cpath, what="model config", fix="re-export the model")
    if "quantization_config" not in config:
        raise ValueError(f"{cpath} has no quantization_config; it is not a compressed-tensors checkpoint")
    return config


def load_compressed_tensors(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load an export on CPU through transformers + compressed-tensors, as a runtime would.

    ``AutoModelForCausalLM.from_pretrained`` applies the quantization config (dynamic activation
    quantisation included); the weights are decompressed with compressed-tensors' decompressors
    and cast to ``dtype`` (its MX decompressors return bfloat16, which holds every MX value
    exactly, but a float32 model's matmul refuses it); the ``transform_config`` is applied with
    ``apply_transform_config`` and its matrices loaded from the checkpoint.
    """
    require_compressed_tensors()
    from compressed_tensors.transform import TransformConfig, apply_transform_config
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    folder = Path(path)
    config = read_export_config(folder)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the stored transform matrices as unexpected keys
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    finally:
        hf_logging.set_verbosity(level)
    model.hf_quantizer.compressor.decompress_model(model)
    for module in model.modules():
        if getattr(module, "quantization_scheme", None) is not None:
            module.weight.data = module.weight.data.to(dtype)
    tdict = config["quantization_config"].get("transform_config") or {}
    if tdict:
        tconfig = TransformConfig.model_validate(tdict)
        apply_transform_config(model, tconfig)
        modules = _transform_modules(model, tconfig)
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f, torch.no_grad():
            for target, module in modules.items():
                key = next(k for k, m in model.named_modules() if m is module) + ".weight"
                module.weight.data = f.get_tensor(key).to(module.weight.dtype)
    model.requires_grad_(False)
    model.dmx_export = config.get(PROVENANCE_KEY)
    return model
