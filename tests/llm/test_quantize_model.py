"""quantize_model on a subset of the decoder linears (tiny random Llama, no data needed)."""

import pytest
import torch
from torch import nn

from dmx.linear import DMXLinear
from dmx.llm.models import decoder_linear_names
from dmx.llm.pipeline import quantize_model


def test_names_wrap_exactly_the_chosen_layers_in_model_order(tiny_llama):
    all_names = decoder_linear_names(tiny_llama)
    # Chosen out of order: the result follows the model's order, not the caller's.
    chosen = [all_names[-1], all_names[0], all_names[3]]
    layers = quantize_model(tiny_llama, "fp8_fp4", names=chosen, block_size=32)
    assert list(layers) == [all_names[0], all_names[3], all_names[-1]]
    modules = dict(tiny_llama.named_modules())
    for name in all_names:
        assert isinstance(modules[name], DMXLinear) == (name in chosen), name
    assert all(not p.requires_grad for n, p in tiny_llama.named_parameters() if "beta_hat" not in n)
    ids = torch.randint(0, tiny_llama.config.vocab_size, (1, 16))
    assert torch.isfinite(tiny_llama(input_ids=ids).logits).all()


def test_names_and_predicate_combine(tiny_llama):
    all_names = decoder_linear_names(tiny_llama)
    layers = quantize_model(tiny_llama, names=all_names[:7], predicate=lambda name, _: "mlp" in name)
    assert list(layers) == [n for n in all_names[:7] if "mlp" in n] and layers


def test_unknown_name_lists_valid_ones(tiny_llama):
    valid = decoder_linear_names(tiny_llama)
    with pytest.raises(ValueError, match=r"model\.layers\.9\.mlp\.up_proj.*model\.layers\.0\.self_attn\.q_proj"):
        quantize_model(tiny_llama, names=[valid[0], "model.layers.9.mlp.up_proj"])
    # Nothing was wrapped by the failed call.
    assert not any(isinstance(m, DMXLinear) for m in tiny_llama.modules())


def test_lm_head_name_needs_the_flag(tiny_llama):
    with pytest.raises(ValueError, match="include_lm_head=True"):
        quantize_model(tiny_llama, names=["lm_head"])
    layers = quantize_model(tiny_llama, names=["lm_head"], include_lm_head=True)
    assert list(layers) == ["lm_head"] and isinstance(tiny_llama.lm_head, DMXLinear)


def test_bare_string_and_empty_names_are_rejected(tiny_llama):
    name = decoder_linear_names(tiny_llama)[0]
    with pytest.raises(TypeError, match="wrap it"):
        quantize_model(tiny_llama, names=name)
    with pytest.raises(ValueError, match="names is empty"):
        quantize_model(tiny_llama, names=[])
    assert isinstance(tiny_llama.get_submodule(name), nn.Linear)
