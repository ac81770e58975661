"""The pipeline on the embedded SmolLM2-135M (Q4_1 GGUF): quantised layers, MX perplexity, one step."""

from __future__ import annotations

import copy

import pytest
import torch

from dmx.assignment import Assignment, apply_assignment
from dmx.calibrate import CalibrationConfig, calibrate
from dmx.llm.data import sample_windows
from dmx.llm.perplexity import perplexity
from dmx.llm.pipeline import quantize_model

pytestmark = pytest.mark.slow
SEQLEN, WINDOWS = 128, 2


@pytest.fixture(scope="module")
def quantised(embedded_model):
    model = copy.deepcopy(embedded_model[0])
    return model, quantize_model(model)


def test_every_decoder_linear_is_wrapped_and_heads_stay_full_precision(quantised):
    model, layers = quantised
    assert len(layers) == 30 * 7
    leaves = {name.rsplit(".", 1)[1] for name in layers}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert type(model.lm_head).__name__ == "Linear"
    assert type(model.model.embed_tokens).__name__ == "Embedding"


def test_uniform_mx_perplexity_orders_as_expected(embedded_model, embedded_test_ids, quantised):
    """MXFP8 stays close to full precision; MXFP4 is clearly worse (wrapping is not a no-op)."""
    model, layers = quantised
    full = perplexity(embedded_model[0], embedded_test_ids, seqlen=SEQLEN, max_windows=WINDOWS, progress=False)
    ppl = {}
    for fmt in ("mxfp8_e4m3", "mxfp4_e2m1"):
        apply_assignment(layers, Assignment.from_formats({n: fmt for n in layers}))
        ppl[fmt] = perplexity(model, embedded_test_ids, seqlen=SEQLEN, max_windows=WINDOWS, progress=False)
    assert abs(ppl["mxfp8_e4m3"] / full - 1) < 0.2  # measured: +9 % (weights and activations in MXFP8)
    assert ppl["mxfp4_e2m1"] > 1.1 * ppl["mxfp8_e4m3"]


def test_a_calibration_step_on_the_real_model(embedded_test_ids, quantised):
    model, layers = quantised
    for layer in layers.values():
        layer.reconfigure(fixed_format=None)
    windows = sample_windows(embedded_test_ids[:, :4096], 1, 32, seed=0)  # smoke test: one short window
    before = torch.stack([layer.beta_hat.detach().clone() for layer in layers.values()])
    # t_end=0.4: a 1-step run is all annealing, and at T=20 an offset at beta_hat=0 has no gradient left
    result = calibrate(model, layers, windows, CalibrationConfig(steps=1, batch_size=1, t_end=0.4), progress=False)
    after = torch.stack([layer.beta_hat.detach() for layer in layers.values()])
    assert not torch.equal(before, after)
    assert len(result.formats) == 210 and 4.0 <= result.element_bits <= 8.0


def test_recorded_context_length_is_the_loaded_models(embedded_model):
    from dmx.llm.models import EMBEDDED_MODEL, context_length

    # the value `--seqlen` is checked against before loading (dmx.llm.models.context_length_before_loading)
    assert EMBEDDED_MODEL.context_length == context_length(embedded_model[0])
