"""Export as real MX data: bytes decoded independently (ml_dtypes), and an exact round trip."""

import json

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, LlamaConfig

from dmx.llm.export import export_model, load_exported, read_manifest
from dmx.llm.models import tiny_model
from dmx.llm.pipeline import quantize_model

FORMATS = ("mxfp4_e2m1", "mxfp8_e4m3", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e5m2")
# Independent element decoders: ml_dtypes' OCP types, one code per uint8.
ML_DTYPES = {
    "e2m1": ml_dtypes.float4_e2m1fn,
    "e2m3": ml_dtypes.float6_e2m3fn,
    "e3m2": ml_dtypes.float6_e3m2fn,
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
}


def _mixed(model, formats=FORMATS, **quantize_kwargs):
    layers = quantize_model(model, **quantize_kwargs)
    for i, layer in enumerate(layers.values()):
        layer.reconfigure(fixed_format=formats[i % len(formats)])
    return layers


def _codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Element codes from the documented byte layout, via a little-endian bit stream."""
    stream = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    return (stream.astype(np.uint16) << np.arange(bits, dtype=np.uint16)).sum(axis=1).astype(np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model("llama", seed=1)
    layers = _mixed(model)
    ids = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
        used = {n: layer._hard_weight(layer.format_name()).clone() for n, layer in layers.items()}
    path = export_model(model, layers, tmp_path_factory.mktemp("export") / "tiny")
    return path, ids, logits, used


def test_round_trip_logits_identical(exported):
    path, ids, logits, _ = exported
    loaded = load_exported(path)
    with torch.no_grad():
        again = loaded(ids).logits
    assert torch.equal(again, logits)
    from dmx.wrap import dmx_layers

    manifest = read_manifest(path)
    assert {n: layer.format_name() for n, layer in dmx_layers(loaded).items()} == {
        n: info["format"] for n, info in manifest["layers"].items()
    }


def test_stored_bytes_are_ocp_mx(exported):
    """Decode elements with ml_dtypes and scales as 2^(e-127): equals the weight the layer used."""
    path, _, _, used = exported
    manifest = read_manifest(path)
    tensors = load_file(str(path / manifest["tensors_file"]))
    assert {info["format"] for info in manifest["layers"].values()} == set(FORMATS)
    for name, info in manifest["layers"].items():
        out_f, in_f = info["shape"]
        bits = info["element_bits"]
        packed = tensors[info["elements"]]
        assert packed.dtype == np.uint8 and packed.size == -(-out_f * in_f * bits // 8)
        codes = _codes(packed, bits, out_f * in_f).reshape(out_f, in_f)
        values = codes.view(ML_DTYPES[info["element"]]).astype(np.float64)
        scales = tensors[info["scales"]]
        assert scales.shape == (out_f, in_f // 32) and scales.dtype == np.uint8
        scale = np.exp2(scales.astype(np.float64) - 127.0)
        weight = values * np.repeat(scale, 32, axis=1)
        np.testing.assert_array_equal(weight, used[name].double().numpy(), err_msg=name)


def test_tied_embeddings_stored_once_and_retied(tmp_path):
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    layers = _mixed(model)
    export_model(model, layers, tmp_path / "tied")
    manifest = read_manifest(tmp_path / "tied")
    assert manifest["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    loaded = load_exported(tmp_path / "tied")
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    ids = torch.arange(20).reshape(1, 20)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_corrupt_or_missing_export_is_refused(exported, tmp_path):
    path, *_ = exported
    with pytest.raises(FileNotFoundError, match="not a dmx export"):
        load_exported(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    manifest = read_manifest(path)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    data = bytearray((path / manifest["tensors_file"]).read_bytes())
    data[-1] ^= 0xFF
    (bad / manifest["tensors_file"]).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_exported(bad)
    (bad / "manifest.json").write_text(json.dumps({**manifest, "schema": "other/0"}))
    with pytest.raises(ValueError, match="schema"):
        load_exported(bad)
    (bad / "manifest.json").write_text(json.dumps(manifest)[:-7])  # truncated by a crash
    with pytest.raises(ValueError, match=r"export manifest .* is corrupt, not valid JSON .*dmx export"):
        load_exported(bad)


def test_export_needs_quantised_layers(tmp_path):
    with pytest.raises(ValueError, match="no quantised layers"):
        export_model(tiny_model("qwen3"), {}, tmp_path / "x")


def test_cli_export_uniform_format_round_trip(tmp_path):
    """`dmx export --format` on a local checkpoint; the loaded export equals quantising in memory."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from dmx.cli import main

    src = tmp_path / "ckpt"
    tiny_model("qwen3", seed=4).save_pretrained(src)
    tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(src)
    out = tmp_path / "exp"
    assert main(["export", "--model", str(src), "--format", "mxfp6_e2m3", "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert {i["format"] for i in manifest["layers"].values()} == {"mxfp6_e2m3"} and manifest["tokenizer"]
    assert manifest["element_bits"] == 6.0
    ref = tiny_model("qwen3", seed=4)
    for layer in quantize_model(ref).values():
        layer.reconfigure(fixed_format="mxfp6_e2m3")
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(load_exported(out)(ids).logits, ref(ids).logits)
    assert main(["export", "--model", str(src), "--format", "mxfp5", "--out", str(tmp_path / "bad")]) == 2


def _rotated_mixed(kind, formats=FORMATS, quantize_input=True):
    """A tiny Llama rotated as ``kind`` (learned: trained one Cayley step, then baked), mixed
    ``formats`` (shared with tests/llm/test_export_ct.py)."""
    from dmx.llm.rotation import CayleySGD, RotationSpec, apply_rotation, bake_rotation, rotation_parameters

    model = tiny_model("llama", seed=1)
    kwargs = {"placement": "folded"} if kind == "hadamard-folded" else {}
    apply_rotation(model, RotationSpec(kind.split("-")[0], seed=2, **kwargs))
    layers = _mixed(model, formats, quantize_input=quantize_input)
    if kind == "learned":  # move R1/R2 off their Hadamard start so the file really matters
        opt = CayleySGD(rotation_parameters(model), lr=1.5)
        ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(7))
        for layer in layers.values():
            layer.reconfigure(fixed_format=None)
            layer.train()
        model(ids, labels=ids).loss.backward()
        opt.step()
        bake_rotation(model)
        for i, layer in enumerate(layers.values()):
            layer.eval()
            layer.reconfigure(fixed_format=formats[i % len(formats)])
    return model, layers


@pytest.mark.parametrize("kind", ["none", "hadamard", "hadamard-folded", "learned"])
def test_rotated_model_round_trip_is_exact(tmp_path, kind):
    model, layers = _rotated_mixed(kind)
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(ids).logits
    out = export_model(model, layers, tmp_path / kind)
    manifest = read_manifest(out)
    assert (manifest["rotation"] or {"kind": "none"})["kind"] == kind.split("-")[0]
    assert (out / "rotation.safetensors").is_file() == (kind == "learned")
    loaded = load_exported(out)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, expected)
    if kind == "learned":  # a replaced rotation file is detected
        (out / "rotation.safetensors").write_bytes((out / "rotation.safetensors").read_bytes()[:-8] + b"\0" * 8)
        with pytest.raises(ValueError, match="sha256"):
            load_exported(out)


def test_unbaked_learned_rotation_is_not_exported(tmp_path):
    from dmx.llm.rotation import RotationSpec, apply_rotation

    model = tiny_model("llama", seed=1)
    apply_rotation(model, RotationSpec("learned"))
    with pytest.raises(ValueError, match="bake_rotation"):
        export_model(model, _mixed(model), tmp_path / "x")
