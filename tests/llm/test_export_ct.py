"""compressed-tensors export: the stored bits are mx_spec's (decoded with compressed-tensors' own
decompressors), the round trip through transformers + compressed-tensors on CPU, the runtime's
activation rule, and the errors before any work."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationScheme
from safetensors.torch import load_file
from test_export import _rotated_mixed
from tiny_checkpoint import save_tiny_byte_llama

import mx_spec
from dmx.llm.export_ct import (CT_EXTRA_HINT, check_ct_formats, export_compressed_tensors,
                           load_compressed_tensors, read_export_config, require_compressed_tensors)
from dmx.llm.export_ct_runtime import ct_scales_and_values, ct_quantize
from dmx.llm.models import tiny_model
from dmx.llm.pipeline import quantize_model

CT = ("mxfp4_e2m1", "mxfp6_e2m3", "mxfp8_e4m3")
REPO = Path(__file__).resolve().parents[2]


def _model(kind="none", formats=CT, quantize_input=True):
    """A tiny Llama rotated as ``kind`` at the mixed compressed-tensors ``formats``."""
    return _rotated_mixed(kind, formats, quantize_input)


def _ids(n=40):
    return torch.randint(0, 256, (2, n), generator=torch.Generator().manual_seed(3))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def mixed_export(tmp_path_factory):
    model, layers = _model()
    out = export_compressed_tensors(model, layers, tmp_path_factory.mktemp("ct") / "mixed")
    return model, layers, out


def test_stored_bits_are_mx_spec(mixed_export):
    """Decode every layer with compressed-tensors' decompressor: codes, E8M0 scales and values are
    exactly mx_spec.quantize's of the layer's weight."""
    _, layers, out = mixed_export
    config = read_export_config(out)["quantization_config"]
    tensors = load_file(str(out / "model.safetensors"))
    seen = set()
    for scheme_dict in config["config_groups"].values():
        scheme = QuantizationScheme.model_validate(scheme_dict)
        compressor = BaseCompressor.get_value_from_registry(scheme.format)
        for name in scheme.targets:
            fmt = layers[name].format_name()
            seen.add(fmt)
            mx = mx_spec.quantize(layers[name].linear.weight.numpy(), fmt, block_size=32, axis=1)
            state = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
            assert state["weight_scale"].dtype == torch.uint8
            np.testing.assert_array_equal(state["weight_scale"].numpy(), mx.scales, err_msg=name)
            if fmt == "mxfp8_e4m3":
                codes = state["weight"].view(torch.uint8).numpy()
                np.testing.assert_array_equal(codes, mx.elements, err_msg=name)
            else:  # packed: compressed-tensors' FP4/FP6 byte layouts are mx_spec.pack's, row by row
                np.testing.assert_array_equal(state["weight_packed"].numpy().reshape(-1), mx_spec.pack(mx), err_msg=name)
            decoded = compressor.decompress(state, scheme)["weight"]
            np.testing.assert_array_equal(decoded.float().numpy(), mx_spec.dequantize(mx), err_msg=name)
    assert seen == set(CT)


def test_config_names_every_layer_and_records_provenance(mixed_export):
    model, layers, out = mixed_export
    config = read_export_config(out)
    groups = config["quantization_config"]["config_groups"]
    named = {t: key for key, g in groups.items() for t in g["targets"]}
    assert set(named) == set(layers)
    for name, layer in layers.items():
        fmt = layer.format_name()
        assert named[name] == f"w_{fmt}-a_{fmt}"
        group = groups[named[name]]
        assert group["input_activations"]["dynamic"] is True and group["weights"]["group_size"] == 32
    assert config["dmx_export"]["formats"][name] == {"weight": fmt, "input": fmt}
    assert config["dmx_export"]["recipe"]["block_size"] == 32


@pytest.mark.parametrize("kind", ["none", "hadamard", "hadamard-folded", "learned"])
def test_weights_only_round_trip_equals_dmx_eval(tmp_path, kind):
    """Weights only quantised: the model transformers + compressed-tensors load gives the logits
    of the project's quantised model (bit for bit unrotated; float rounding with a rotation,
    whose online Hadamard the runtime applies as a stored matrix product)."""
    model, layers = _model(kind, quantize_input=False)
    ids = _ids()
    expected = _logits(model, ids)
    out = export_compressed_tensors(model, layers, tmp_path / kind)
    config = read_export_config(out)["quantization_config"]
    assert all(g["input_activations"] is None for g in config["config_groups"].values())
    assert bool(config["transform_config"]) == (kind != "none")
    got = _logits(load_compressed_tensors(out), ids)
    if kind == "none":
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert not torch.equal(got, _logits(_model("none", quantize_input=False)[0], ids))  # the rotation matters


def test_activation_rule_is_even_for_fp4_fp6(tmp_path):
    """With activations quantised, the export under compressed-tensors' rule equals the project's
    model with the `even` scale mode (same weights) for FP4/FP6 E2M3 layers, and differs from the
    project's `floor` (OCP) rule."""
    model, layers = _model("hadamard", formats=("mxfp4_e2m1", "mxfp6_e2m3"))
    ids = _ids(64)
    floor = _logits(model, ids)
    got = _logits(load_compressed_tensors(export_compressed_tensors(model, layers, tmp_path / "a")), ids)
    from dmx.llm.export_ct_runtime import _use_decoded_weights

    _use_decoded_weights(layers)
    for layer in layers.values():
        layer.reconfigure(scale_mode="even")
    torch.testing.assert_close(got, _logits(model, ids), rtol=1e-5, atol=1e-5)
    assert (got - floor).abs().max() > 1e-3


@pytest.mark.parametrize("fmt, emax, bumped", [("mxfp4_e2m1", 2, True), ("mxfp6_e2m3", 2, False),
                                               ("mxfp8_e4m3", 8, True)])
def test_runtime_scale_rule(fmt, emax, bumped):
    """Block amax 1.8 * 2^3: OCP floor gives X = 3 - emax; compressed-tensors rounds 1.8 to the
    element's mantissa width first (1 bit for E2M1 AND E4M3 -> 2.0, so X + 1; 3 bits for E2M3 ->
    1.75, no bump). For E4M3 that is one more than the golden `even` mode (3 bits)."""
    x = torch.full((1, 32), 0.5)
    x[0, 0] = 1.8 * 8
    scale, _ = ct_scales_and_values(x, fmt)
    assert float(scale) == 2.0 ** (3 - emax + bumped)
    even = mx_spec.quantize(x.numpy(), fmt, block_size=32, axis=1, scale_mode="even").scales
    assert int(even[0, 0]) - 127 == 3 - emax + (bumped and fmt != "mxfp8_e4m3")


@pytest.mark.results
def test_conformance_results_file_is_current():
    """The committed conformance table is what mx_spec.conformance.verify gives for the installed
    compressed-tensors; E2M1 is `even` up to signed zeros and non-finite blocks, E4M3 is no mode."""
    from dmx.llm.export_ct_runtime import conformance

    path = REPO / "results" / "export_ct" / "results.json"
    recorded = json.loads(path.read_text())["conformance"]
    now = conformance()
    assert now == recorded
    rows = {(r["format"], r["scale_mode"]): r for r in now["rows"]}
    assert "rule" not in rows[("mxfp4_e2m1", "even")]["failed_by_cause"]
    assert all(rows[("mxfp8_e4m3", m)]["failed_by_cause"].get("rule", 0) > 0 for m in ("floor", "ceil", "even", "rceil"))


def test_ct_quantize_skips_what_it_lacks():
    x = np.ones((1, 32), np.float32)
    for kwargs in ({"fmt": "mxfp6_e3m2"}, {"fmt": "mxfp4_e2m1", "block_size": 16}):
        args = {"fmt": "mxfp4_e2m1", "block_size": 32, **kwargs}
        with pytest.raises(NotImplementedError):
            ct_quantize(x, args["fmt"], block_size=args["block_size"], axis=1, scale_mode="even", rounding="rne")


@pytest.mark.parametrize("fmt", ["mxint8", "mxfp6_e3m2", "mxfp8_e5m2"])
def test_unsupported_format_is_refused(fmt, tmp_path):
    with pytest.raises(ValueError, match=r"no scheme for .*supports \['mxfp4_e2m1', 'mxfp6_e2m3', 'mxfp8_e4m3'\]"):
        check_ct_formats({"layer": fmt}, 32)
    model, layers = _model(formats=("mxfp4_e2m1", fmt))
    with pytest.raises(ValueError, match="output_format='dmx'"):
        export_compressed_tensors(model, layers, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_rotation_it_cannot_express_is_refused(tmp_path):
    from dmx.llm.rotation import OnlineHadamard, rotation_state

    model, layers = _model("hadamard")
    rotation_state(model).online["model.norm"] = OnlineHadamard.seeded(64, 0, "norm")  # not a linear
    with pytest.raises(ValueError, match="not linears.*transform_config"):
        export_compressed_tensors(model, layers, tmp_path / "x")


def test_unbaked_learned_rotation_is_refused(tmp_path):
    from dmx.llm.rotation import RotationSpec, apply_rotation

    model = tiny_model("llama", seed=1)
    apply_rotation(model, RotationSpec("learned"))
    layers = quantize_model(model)
    for layer in layers.values():
        layer.reconfigure(fixed_format="mxfp4_e2m1")
    with pytest.raises(ValueError, match="bake_rotation"):
        export_compressed_tensors(model, layers, tmp_path / "x")


def test_block_size_and_missing_dependency_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="blocks of 32; block_size is 16"):
        check_ct_formats({"layer": "mxfp4_e2m1"}, 16)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "compressed_tensors" else real(name, *a))
    with pytest.raises(ImportError, match=r"dmx-reference\[export\]"):
        require_compressed_tensors()
    assert "export" in CT_EXTRA_HINT


def test_cli_export_and_errors(tmp_path, capsys):
    """`dmx export --output-format compressed-tensors` on a local checkpoint: loadable, the
    assignment's sha256 recorded; unsupported formats refused before the model loads."""
    from dmx.assignment import Assignment
    from dmx.cli import main
    from dmx.files import sha256_file

    src = save_tiny_byte_llama(tmp_path / "ckpt", seed=4)
    names = list(quantize_model(tiny_model("llama", seed=4)))
    apath = tmp_path / "a.json"
    Assignment.from_formats({n: CT[i % 3] for i, n in enumerate(names)}, provenance={"method": "test"}).to_json(apath)
    out = tmp_path / "ct"
    assert main(["export", "--model", str(src), "--assignment", str(apath), "--output-format", "compressed-tensors",
                 "--weights-only", "--out", str(out), "--threads", "1"]) == 0
    config = read_export_config(out)
    assert config["dmx_export"]["assignment_sha256"] == sha256_file(apath)
    assert config["dmx_export"]["assignment_provenance"]["method"] == "test"
    assert (out / "tokenizer.json").is_file()
    ref = tiny_model("llama", seed=4)
    layers = quantize_model(ref, quantize_input=False)
    for i, layer in enumerate(layers.values()):
        layer.reconfigure(fixed_format=CT[i % 3])
    ids = _ids()
    assert torch.equal(_logits(load_compressed_tensors(out), ids), _logits(ref, ids))
    capsys.readouterr()
    missing = tmp_path / "no-such-model"
    assert main(["export", "--model", str(missing), "--format", "mxint8", "--output-format", "compressed-tensors",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "no scheme for ['mxint8']" in capsys.readouterr().err
    assert main(["export", "--model", str(missing), "--format", "mxfp4_e2m1", "--output-format", "compressed-tensors",
                 "--block-size", "16", "--out", str(tmp_path / "bad")]) == 2
    assert "blocks of 32" in capsys.readouterr().err


@pytest.mark.results
@pytest.mark.slow
@pytest.mark.parametrize("rotated", [False, True])
def test_embedded_demo_assignment_round_trip(embedded_model, tmp_path, rotated):
    """The embedded SmolLM2-135M at the demo's assignment (FP8/FP4 mix), unrotated and with the
    default online Hadamard: codes and scales of every layer, logits with weights only quantised
    equal to float rounding; with activations quantised, the runtime's scales on the activations
    every layer sees are the `even` mode's, one step higher in the E4M3 blocks whose max
    significand lies in [1.75, 1.9375)."""
    from dmx.assignment import Assignment, apply_assignment
    from dmx.llm.rotation import RotationSpec, apply_rotation

    model = copy.deepcopy(embedded_model[0])
    if rotated:
        apply_rotation(model, RotationSpec("hadamard"))
    layers = quantize_model(model, quantize_input=False)
    apply_assignment(layers, Assignment.from_json(REPO / "results" / "demo_unrotated" / "seed-0" / "assignment.json"))
    ids = embedded_model[1]("The capital of France is Paris, and the capital of Italy is", return_tensors="pt").input_ids
    expected = _logits(model, ids)
    out = export_compressed_tensors(model, layers, tmp_path / "w", tokenizer=embedded_model[1])
    loaded = load_compressed_tensors(out)
    torch.testing.assert_close(_logits(loaded, ids), expected, rtol=1e-4, atol=1e-4)
    tensors = load_file(str(out / "model.safetensors"))
    for name, layer in layers.items():
        mx = mx_spec.quantize(layer.linear.weight.numpy(), layer.format_name(), block_size=32, axis=1)
        np.testing.assert_array_equal(tensors[f"{name}.weight_scale"].numpy(), mx.scales, err_msg=name)
        stored = tensors.get(f"{name}.weight_packed")
        codes = tensors[f"{name}.weight"].view(torch.uint8).numpy() if stored is None else stored.numpy().reshape(-1)
        np.testing.assert_array_equal(codes, mx.elements if stored is None else mx_spec.pack(mx), err_msg=name)
    for layer in layers.values():
        layer.reconfigure(quantize_input=True)
    seen = {}  # what each layer's input quantiser sees (after the online rotation)
    handles = [layer.register_forward_hook(lambda m, a, o, n=name: seen.__setitem__(n, a[0].detach()))
               for name, layer in layers.items()]
    floor = _logits(model, ids)
    for handle in handles:
        handle.remove()
    runtime = _logits(load_compressed_tensors(export_compressed_tensors(model, layers, tmp_path / "a")), ids)
    assert not torch.equal(runtime, floor)  # another activation-scale rule
    bumped = 0
    for name, x in seen.items():  # the runtime's scales on these activations: `even`, one up for the E4M3 band
        fmt = layers[name].format_names()["input"]
        scale, _ = ct_scales_and_values(x, fmt)
        ct = torch.log2(scale).numpy().astype(int) + 127
        even = mx_spec.quantize(x.numpy(), fmt, block_size=32, axis=-1, scale_mode="even").scales.astype(int)
        amax = x.abs().unflatten(-1, (-1, 32)).amax(-1).double()
        significand = (amax / torch.exp2(torch.floor(torch.log2(amax)))).numpy()
        band = (significand >= 1.75) & (significand < 1.9375) if fmt == "mxfp8_e4m3" else np.zeros_like(ct, bool)
        np.testing.assert_array_equal(ct - even, band.astype(int), err_msg=name)
        bumped += int(band.sum())
    assert bumped > 0


def test_vllm_script_finds_mixed_fused_layers(mixed_export):
    """benchmarks/vllm_check.py (prepared for a GPU user, not run here) lists the fused vLLM layers
    whose parts the export puts in different groups, before it imports vLLM."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vllm_check", REPO / "benchmarks" / "vllm_check.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _, layers, out = mixed_export
    mixed = script.mixed_fused_layers(read_export_config(out))
    expected = set()
    for parent in {n.rsplit(".", 1)[0] for n in layers}:
        for fused, parts in script.FUSED.items():
            fmts = {layers[f"{parent}.{p}"].format_name() for p in parts if f"{parent}.{p}" in layers}
            if len(fmts) > 1:
                expected.add(f"{parent}.{fused}")
    assert set(mixed) == expected and mixed
