"""Model loading, tiny configs and the choice of quantised layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dmx.llm.models import SHORT_NAMES, context_length, decoder_linear_names, load_model, resolve_dtype, tiny_model

LLAMA_BLOCK = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_tiny_model_decoder_linears_are_q_k_v_o_gate_up_down(arch):
    model = tiny_model(arch)
    names = decoder_linear_names(model)
    expected = [f"model.layers.{i}.{leaf}" for i in range(2) for leaf in LLAMA_BLOCK]
    assert names == expected
    assert "lm_head" not in names and not any("embed" in n for n in names)
    assert decoder_linear_names(model, include_lm_head=True) == expected + ["lm_head"]
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], nn.Linear) for n in names)


def test_tiny_model_is_seeded_and_runs():
    a, b, c = tiny_model("llama", seed=0), tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    wa, wb, wc = (m.model.layers[0].self_attn.q_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    logits = a(input_ids=torch.zeros(1, 5, dtype=torch.long)).logits
    assert logits.shape == (1, 5, 256)
    assert not any(p.requires_grad for p in a.parameters())


def test_unknown_tiny_arch_names_choices():
    with pytest.raises(ValueError, match="llama.*qwen3"):
        tiny_model("gpt2")


class _NoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Conv1d(4, 4, 1) for _ in range(2)])


def test_model_without_linear_layers_is_rejected():
    with pytest.raises(ValueError, match="no nn.Linear layers inside decoder blocks"):
        decoder_linear_names(_NoLinear())


def test_unknown_model_name_lists_short_names():
    with pytest.raises(ValueError, match="smollm2-135m"):
        load_model("no-such-model")


def test_bad_dtype_and_device_are_rejected_before_loading():
    with pytest.raises(ValueError, match="bfloat16"):
        resolve_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_model("smollm2-135m", device="cuda")


def test_short_names_cover_required_families():
    hub = [v for v in SHORT_NAMES.values() if isinstance(v, str)]
    assert any("SmolLM2" in v for v in hub) and any("Qwen3" in v for v in hub) and any("Llama" in v for v in hub)


@pytest.mark.slow
def test_embedded_model_is_smollm2_135m(embedded_model):
    model, tokenizer = embedded_model
    assert type(model).__name__ == "LlamaForCausalLM"
    n_params = sum(p.numel() for p in model.parameters())
    assert 130e6 < n_params < 140e6  # SmolLM2-135M (tied embeddings counted once)
    assert model.config.num_hidden_layers == 30
    names = decoder_linear_names(model)
    assert len(names) == 30 * 7
    assert context_length(model) == model.config.max_position_embeddings
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.decode(tokenizer("The capital of France").input_ids) == "The capital of France"
