"""GPTQ-protocol perplexity against independent computations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from dmx.llm.perplexity import perplexity, perplexity_of, window_count, window_nlls


class _Bigram(nn.Module):
    """logits[t] = table[token[t]]: a model whose predictions numpy can recompute exactly."""

    def __init__(self, vocab=11, context=64, seed=0):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 2)
        self.config = SimpleNamespace(max_position_embeddings=context)

    def get_input_embeddings(self):
        return self.table

    def forward(self, input_ids, use_cache=False):
        return SimpleNamespace(logits=self.table(input_ids).to(torch.float64))


def _numpy_gptq_ppl(table: np.ndarray, ids: np.ndarray, seqlen: int, max_windows=None) -> float:
    n = len(ids) // seqlen if max_windows is None else min(len(ids) // seqlen, max_windows)
    total = 0.0
    for w in range(n):
        seg = ids[w * seqlen : (w + 1) * seqlen]
        logits = table[seg[:-1]]
        logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        nll = (logz - logits[np.arange(seqlen - 1), seg[1:]]).mean()
        total += nll * seqlen
    return math.exp(total / (n * seqlen))


@pytest.mark.parametrize("seqlen,max_windows", [(16, None), (16, 3), (7, None)])
def test_perplexity_matches_numpy_reference(seqlen, max_windows):
    model = _Bigram()
    ids = torch.randint(0, 11, (1, 203), generator=torch.Generator().manual_seed(1))
    expected = _numpy_gptq_ppl(model.table.weight.detach().double().numpy(), ids[0].numpy(), seqlen, max_windows)
    got = perplexity(model, ids, seqlen=seqlen, max_windows=max_windows, progress=False)
    assert got == pytest.approx(expected, rel=1e-6)  # window losses are taken in float32


def test_uniform_model_has_perplexity_equal_to_vocab_size():
    model = _Bigram(vocab=13)
    with torch.no_grad():
        model.table.weight.zero_()
    ids = torch.randint(0, 13, (1, 100))
    assert perplexity(model, ids, seqlen=10, progress=False) == pytest.approx(13.0, rel=1e-6)


def test_windows_are_non_overlapping_and_tail_dropped():
    assert window_count(103, 10) == 10 and window_count(103, 10, max_windows=4) == 4
    model = _Bigram()
    ids = torch.randint(0, 11, (1, 103))
    nlls = window_nlls(model, ids, seqlen=10, progress=False)
    assert nlls.shape == (10,)
    # changing the dropped tail leaves every window unchanged
    ids2 = ids.clone()
    ids2[0, 100:] = (ids2[0, 100:] + 1) % 11
    assert torch.equal(nlls, window_nlls(model, ids2, seqlen=10, progress=False))


def test_bad_seqlen_and_windows_are_rejected():
    model = _Bigram(context=64)
    ids = torch.zeros(1, 500, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds the model's context length 64"):
        perplexity(model, ids, seqlen=128, progress=False)
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(model, ids[:, :10], seqlen=32, progress=False)
    with pytest.raises(ValueError, match="max_windows"):
        perplexity(model, ids, seqlen=32, max_windows=0, progress=False)


@pytest.mark.slow
def test_embedded_model_perplexity_matches_transformers_loss(embedded_model, embedded_test_ids):
    """Our window NLL equals transformers' own shifted LM loss (labels=window) on the real model."""
    model, _ = embedded_model
    seqlen = 128
    ours = perplexity(model, embedded_test_ids, seqlen=seqlen, max_windows=2, progress=False)
    with torch.inference_mode():
        losses = [float(model(input_ids=embedded_test_ids[:, i * seqlen:(i + 1) * seqlen],
                              labels=embedded_test_ids[:, i * seqlen:(i + 1) * seqlen]).loss) for i in range(2)]
    assert ours == pytest.approx(math.exp(sum(losses) / 2), rel=1e-5)
    assert 5 < ours < 200  # a working 135M LM on WikiText-2, not a broken one


def test_first_window_scores_the_later_windows_only():
    """first_window=k scores windows k, k+1, ... exactly as a full pass does; too large a k is refused."""
    model = _Bigram()
    ids = torch.randint(0, 11, (1, 103), generator=torch.Generator().manual_seed(1))
    every = window_nlls(model, ids, seqlen=10, progress=False)
    later = window_nlls(model, ids, seqlen=10, first_window=6, max_windows=3, progress=False)
    assert torch.equal(later, every[6:9])
    assert window_count(103, 10, first_window=6) == 4
    assert perplexity(model, ids, seqlen=10, first_window=6, progress=False) == pytest.approx(perplexity_of(every[6:], 10))
    for bad in (10, -1, 1.5):
        with pytest.raises(ValueError, match="first_window must be a whole number from 0 to 9"):
            window_count(103, 10, first_window=bad)
