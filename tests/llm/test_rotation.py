"""Rotated models compute the same function; online rotations run before the MX input quantiser.

Equivalence is checked in float64 on tiny random Llama/Qwen3 models (the HF RMSNorm still
normalises in float32, so agreement is ~1e-7, against O(0.1) for any wrong fold), and once in
float32 on the embedded SmolLM2-135M (576 = 2^4·36 residual, 1536 = 2^7·12 MLP).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmx.llm.models import tiny_model
from dmx.llm.rotation import (
    RotationSpec,
    apply_rotation,
    apply_rotation_description,
    attach_online_rotations,
    bake_rotation,
    load_rotation,
    rotation_parameters,
    save_rotation,
)
from dmx.llm.rotation.cayley import CayleySGD, stiefel_error
from dmx.llm.rotation.hadamard import hadamard_transform
from mx_spec.quantize import quantize_dequantize

TOL = dict(rtol=0, atol=1e-5)


def _ids(batch: int = 2, length: int = 24, vocab: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _tiny64(arch: str):
    return tiny_model(arch, seed=1).double()


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_hadamard_rotation_preserves_logits(arch):
    model = _tiny64(arch)
    ids = _ids()
    reference = _logits(model, ids)
    rotated = copy.deepcopy(model)
    state = apply_rotation(rotated, RotationSpec("hadamard", seed=5, placement="folded"))
    torch.testing.assert_close(_logits(rotated, ids), reference, **TOL)
    # the weights really changed, the norms lost their scales, the online hooks exist
    assert not torch.allclose(rotated.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert torch.all(rotated.model.layers[0].input_layernorm.weight == 1)
    assert torch.all(rotated.model.norm.weight == 1)
    assert set(state.online) == {f"model.layers.{i}.{p}" for i in range(2) for p in ("self_attn.o_proj", "mlp.down_proj")}
    # without the online Hadamards the folded model is wrong: they are load-bearing
    for path in state.online:
        rotated.get_submodule(path)._forward_pre_hooks.clear()
    rotated.dmx_rotation = None
    assert (_logits(rotated, ids) - reference).abs().max() > 1e-2


@pytest.mark.parametrize("arch, block", [("llama", 32), ("qwen3", 32), ("llama", None)])
def test_online_placement_preserves_logits_and_rotates_every_linear_input(arch, block):
    from dmx.llm.models import decoder_linear_names

    model = _tiny64(arch)
    ids = _ids()
    reference = _logits(model, ids)
    norms = model.model.layers[0].input_layernorm.weight.detach().clone()
    state = apply_rotation(model, RotationSpec("hadamard", seed=5, block=block))  # placement="online" is the default
    assert state.spec.placement == "online" and set(state.online) == set(decoder_linear_names(model))
    q = state.online["model.layers.0.mlp.down_proj"].matrix()  # 128 x 128
    torch.testing.assert_close(q @ q.T, torch.eye(128, dtype=torch.float64), rtol=0, atol=1e-12)
    off_diagonal = q.clone()
    for b in range(0, 128, block or 128):
        off_diagonal[b : b + (block or 128), b : b + (block or 128)] = 0
    assert torch.all(off_diagonal == 0) and torch.all(q.abs() > 0) == (block is None)
    torch.testing.assert_close(_logits(model, ids), reference, **TOL)
    assert torch.equal(model.model.layers[0].input_layernorm.weight, norms)  # norm scales stay put
    for path in state.online:
        model.get_submodule(path)._forward_pre_hooks.clear()
    model.dmx_rotation = None
    assert (_logits(model, ids) - reference).abs().max() > 1e-2


def test_tied_embeddings_gqa_and_biases():
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, head_dim=12, tie_word_embeddings=True,
                         attention_bias=True, mlp_bias=True, max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float64).eval()
    with torch.no_grad():  # non-trivial norm scales and biases
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = _ids(vocab=128)
    reference = _logits(model, ids)
    apply_rotation(model, RotationSpec("hadamard", seed=1, placement="folded"))
    torch.testing.assert_close(_logits(model, ids), reference, **TOL)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert model.config.tie_word_embeddings is False


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_learned_rotation_is_exact_for_any_orthogonal_matrices(arch):
    model = _tiny64(arch)
    ids = _ids()
    reference = _logits(model, ids)
    apply_rotation(model, RotationSpec("learned", seed=2))
    params = rotation_parameters(model)
    assert len(params) == 1 + 2 and all(p.requires_grad for p in params)
    torch.testing.assert_close(_logits(model, ids), reference, **TOL)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in params:  # arbitrary orthogonal matrices, far from the Hadamard start
            q, _ = torch.linalg.qr(torch.randn(p.shape, generator=generator, dtype=torch.float64))
            p.copy_(q)
    torch.testing.assert_close(_logits(model, ids), reference, **TOL)
    bake_rotation(model)
    assert rotation_parameters(model) == []
    assert not any("parametrizations" in name for name, _ in model.named_parameters())
    torch.testing.assert_close(_logits(model, ids), reference, **TOL)


def test_learned_rotation_trains_with_cayley_sgd_under_mxfp4():
    from dmx.llm.pipeline import quantize_model
    from dmx.wrap import set_calibration_mode
    from dmx.wrap import set_fixed_format

    model = tiny_model("llama", seed=1)
    state = apply_rotation(model, RotationSpec("learned", seed=0))
    layers = quantize_model(model)
    set_fixed_format(model, "mxfp4_e2m1")
    set_calibration_mode(model, layers, training=True)
    params = rotation_parameters(state)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "original" in n}
    assert frozen and not any(p.requires_grad for n, p in model.named_parameters() if "original" in n)
    optimizer = CayleySGD(params, lr=1.5)
    ids = _ids(batch=2, length=32)
    start = [p.detach().clone() for p in params]
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        logits = model(input_ids=ids, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(stiefel_error(p) < 1e-5 for p in params)
    assert all((p.detach() - s).abs().max() > 1e-4 for p, s in zip(params, start))
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p.detach(), frozen[name])  # weights frozen, only rotations move


def _quantised_down_proj_io(model, path):
    """Run the model once; return (raw input before any pre-hook, output) of the module at ``path``."""
    captured = {}
    module = model.get_submodule(path)
    pre = module.register_forward_pre_hook(lambda m, a: captured.__setitem__("x", a[0].detach().clone()), prepend=True)
    post = module.register_forward_hook(lambda m, a, out: captured.__setitem__("y", out.detach().clone()))
    _logits(model, _ids(batch=1, length=16))
    pre.remove()
    post.remove()
    return captured["x"], captured["y"]


def test_online_rotation_runs_before_the_input_quantiser():
    from dmx.llm.pipeline import quantize_model
    from dmx.wrap import set_fixed_format

    model = tiny_model("llama", seed=1)
    state = apply_rotation(model, RotationSpec("hadamard", seed=4, placement="folded"))  # before quantize_model, as the CLI does
    layers = quantize_model(model)
    set_fixed_format(model, "mxfp4_e2m1")
    path = "model.layers.1.mlp.down_proj"
    _logits(model, _ids(batch=1, length=16))  # first forward re-attaches the hooks to the DMXLinear
    x, y = _quantised_down_proj_io(model, path)
    signs = state.online[path].signs.float()

    def qdq(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(quantize_dequantize(t.numpy().astype(np.float32), "mxfp4_e2m1", block_size=32))

    weight = layers[path].linear.weight.detach()
    expected = F.linear(qdq(hadamard_transform(x * signs)), qdq(weight))
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-5)
    wrong_order = F.linear(hadamard_transform(qdq(x) * signs), qdq(weight))
    assert (y - wrong_order).abs().max() > 1e-3


def test_rotate_before_or_after_quantize_model_is_the_same_model():
    from dmx.llm.pipeline import quantize_model
    from dmx.wrap import set_fixed_format

    ids = _ids()
    outputs = []
    for rotate_first in (True, False):
        model = tiny_model("qwen3", seed=2)
        if rotate_first:
            apply_rotation(model, RotationSpec("hadamard", seed=6, placement="folded"))
        quantize_model(model)
        if not rotate_first:
            apply_rotation(model, RotationSpec("hadamard", seed=6, placement="folded"))
        set_fixed_format(model, "mxfp4_e2m1")
        outputs.append(_logits(model, ids))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-5)


def test_saved_rotation_rebuilds_an_identical_model(tmp_path):
    ids = _ids()
    for kind, placement in (("hadamard", "online"), ("hadamard", "folded"), ("learned", "folded")):
        model = tiny_model("llama", seed=3)
        state = apply_rotation(model, RotationSpec(kind, seed=9, placement=placement))
        if kind == "learned":
            with torch.no_grad():
                for p in rotation_parameters(state):
                    p.copy_(torch.linalg.qr(torch.randn(p.shape, dtype=torch.float64))[0])
            bake_rotation(model)
        path = save_rotation(state, tmp_path / f"{kind}-{placement}.safetensors")
        description, matrices = load_rotation(path)
        assert json.loads(json.dumps(description)) == state.describe()
        rebuilt = tiny_model("llama", seed=3)
        apply_rotation_description(rebuilt, description, matrices)
        for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"{kind}: {name} differs")
        torch.testing.assert_close(_logits(rebuilt, ids), _logits(model, ids), rtol=0, atol=1e-5)


def test_none_leaves_the_model_alone():
    model = tiny_model("llama")
    before = copy.deepcopy(model.state_dict())
    assert apply_rotation(model, RotationSpec("none")) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_requests_raise_clear_errors(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    with pytest.raises(ValueError, match="choose one of"):
        apply_rotation(tiny_model("llama"), RotationSpec("random"))
    with pytest.raises(ValueError, match="online sites"):
        apply_rotation(tiny_model("llama"), RotationSpec("hadamard", online_sites=("q_proj",)))
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="model types"):
        apply_rotation(gpt2, RotationSpec("hadamard"))
    odd = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=52,
                                                       num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(ValueError, match="intermediate_size"):
        apply_rotation(odd, RotationSpec("hadamard", placement="folded"))
    with pytest.raises(ValueError, match="input size 52"):
        apply_rotation(copy.deepcopy(odd), RotationSpec("hadamard", block=None))
    with pytest.raises(ValueError, match="block=64 does not divide the input size 32"):  # the default block
        apply_rotation(copy.deepcopy(odd), RotationSpec("hadamard"))
    with pytest.raises(ValueError, match="block"):
        apply_rotation(tiny_model("llama"), RotationSpec("hadamard", block=7))
    with pytest.raises(ValueError, match="does not divide"):
        apply_rotation(tiny_model("llama"), RotationSpec("hadamard", block=12))
    with pytest.raises(ValueError, match="placement"):
        apply_rotation(tiny_model("llama"), RotationSpec("hadamard", placement="everywhere"))
    model = tiny_model("llama")
    apply_rotation(model, RotationSpec("hadamard"))
    with pytest.raises(ValueError, match="already rotated"):
        apply_rotation(model, RotationSpec("hadamard"))
    with pytest.raises(ValueError, match="do not fit"):
        apply_rotation(tiny_model("llama"), RotationSpec("learned"), matrices={"r1": torch.eye(8), "r2": []})
    with pytest.raises(ValueError, match="needs its matrices"):
        apply_rotation_description(tiny_model("llama"), {"version": 1, "kind": "learned", "seed": 0, "online_sites": []})
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="no dMX rotation"):
        load_rotation(tmp_path / "other.safetensors")


def test_learned_rotation_refuses_a_wrapped_lm_head():
    from dmx.llm.pipeline import quantize_model

    model = tiny_model("llama")
    apply_rotation(model, RotationSpec("learned"))
    quantize_model(model, include_lm_head=True)
    with pytest.raises(ValueError, match="lm_head"):
        attach_online_rotations(model)


@pytest.mark.slow
def test_embedded_smollm2_logits_unchanged(embedded_model):
    model = copy.deepcopy(embedded_model[0])
    ids = _ids(batch=1, length=32, vocab=model.config.vocab_size, seed=1)
    reference = _logits(embedded_model[0], ids)
    apply_rotation(model, RotationSpec("hadamard", seed=0, placement="folded"))
    rotated = _logits(model, ids)
    scale = reference.abs().max()
    assert (rotated - reference).abs().max() < 2e-4 * scale
    assert torch.equal(rotated.argmax(-1), reference.argmax(-1))


def test_command_line_flags(tmp_path):
    import argparse

    from dmx.commands import add_rotation_flags
    from dmx.llm.rotation import resolve_rotation

    def rotate(model, argv, trainable=False):
        spec = resolve_rotation(parser.parse_args(argv))
        spec.check_buildable(trainable=trainable)
        return apply_rotation(model, spec)

    parser = argparse.ArgumentParser()
    add_rotation_flags(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--rotation", "random"])
    assert rotate(tiny_model("llama"), []) is None
    with pytest.raises(ValueError, match="file=PATH"):
        rotate(tiny_model("llama"), ["--rotation", "learned"])
    trained = tiny_model("llama")
    state = rotate(trained, ["--rotation", "learned"], trainable=True)
    assert len(rotation_parameters(state)) == 3
    bake_rotation(trained)
    path = save_rotation(state, tmp_path / "rotation.safetensors")
    with pytest.raises(ValueError, match="contradicts rotation_file"):
        rotate(tiny_model("llama"), ["--rotation", "none", "--rotation-file", str(path)])
    rebuilt = tiny_model("llama")
    rotate(rebuilt, ["--rotation-file", str(path)])
    torch.testing.assert_close(rebuilt.model.embed_tokens.weight, trained.model.embed_tokens.weight)


def test_deep_copied_learned_model_owns_its_rotations():
    model = _tiny64("llama")
    ids = _ids()
    reference = _logits(model, ids)
    apply_rotation(model, RotationSpec("learned", seed=1))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in rotation_parameters(twin):
            p.copy_(torch.linalg.qr(torch.randn(p.shape, dtype=torch.float64))[0])
    assert not torch.equal(rotation_parameters(twin)[0], rotation_parameters(model)[0])
    torch.testing.assert_close(_logits(twin, ids), reference, **TOL)
    torch.testing.assert_close(_logits(model, ids), reference, **TOL)


def test_rotated_model_id_keys_results_by_the_rotation_applied():
    """KL score caches (dmx kl and dmx sweep alike) must never mix scores of differently rotated models."""
    from dmx.llm.rotation import rotated_model_id

    assert rotated_model_id("m", tiny_model("llama")) == "m"

    def fixed(seed, **kw):
        model = tiny_model("llama")
        apply_rotation(model, RotationSpec("hadamard", seed=seed, **kw))
        return rotated_model_id("m", model)

    assert fixed(0) == fixed(0) != fixed(1)
    assert fixed(0) != fixed(0, placement="folded") and fixed(0) != fixed(0, block=None)
    assert fixed(0).startswith("m|rotation=")

    def learned(scale):
        model = tiny_model("llama")
        state = apply_rotation(model, RotationSpec("learned", seed=0))
        with torch.no_grad():  # a different (still orthogonal) R1: another learned run
            state.r1.copy_(state.r1 @ torch.diag(torch.tensor([scale] + [1.0] * (state.r1.shape[0] - 1))))
        return rotated_model_id("m", model)

    assert learned(1.0) == learned(1.0) != learned(-1.0)


def test_rotation_spec_normalises_and_describes_as_recorded():
    """One request, one record: learned is folded, folded has no online size, and the description
    keeps the keys (``"block"``: the online size) that the files already written hold."""
    assert RotationSpec("learned", seed=3, block=32) == RotationSpec("learned", seed=3, placement="folded")
    assert RotationSpec("hadamard", placement="folded", block=32).block is None
    assert RotationSpec("hadamard", source="a") == RotationSpec("hadamard", source="b")  # the source only names it
    online = RotationSpec("hadamard", seed=2, block=32).description(576, 64)
    assert online == {"version": 1, "kind": "hadamard", "seed": 2, "online_sites": ["all"], "hidden_size": 576,
                      "head_dim": 64, "placement": "online", "block": 32, "matrices_needed": False}
    assert RotationSpec.from_description(online) == RotationSpec("hadamard", seed=2, block=32)
    learned = RotationSpec("learned").description(576, 64)
    assert (learned["placement"], learned["block"], learned["online_sites"]) == ("folded", None, ["o_proj", "down_proj"])
    assert RotationSpec("hadamard", block=None).settings() == {"kind": "hadamard", "seed": 0, "placement": "online",
                                                                "block": None}
    assert RotationSpec("learned", seed=1).fixed_start() == RotationSpec("hadamard", seed=1, placement="folded")
    with pytest.raises(ValueError, match="block=0 is not a Hadamard order"):
        RotationSpec("hadamard", block=0)


@pytest.mark.results
def test_descriptions_recorded_in_results_read_back_unchanged():
    """Every rotation description under results/ reads back to a spec that records it key for key."""
    from pathlib import Path

    def descriptions(node):
        if isinstance(node, dict):
            if "matrices_needed" in node and "version" in node:
                yield node
            for value in node.values():
                yield from descriptions(value)
        elif isinstance(node, list):
            for value in node:
                yield from descriptions(value)

    results = Path(__file__).resolve().parents[2] / "results"
    found = [d for path in results.rglob("*.json") for d in descriptions(json.loads(path.read_text()))]
    assert found, "no rotation description found under results/ (the committed sweeps record several)"
    for recorded in found:
        again = RotationSpec.from_description(recorded).description(recorded["hidden_size"], recorded["head_dim"])
        assert list(again.items()) == list(recorded.items())
