"""KL baseline: the KL measure, the greedy selection rule, and the resumable score cache."""

import json

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from dmx.kl_baseline import (
    demotion_order,
    mean_token_kl,
    open_cache,
    select_by_sensitivity,
)

LOW, HIGH = "mxfp4_e2m1", "mxfp8_e4m3"


def test_mean_token_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    ref = torch.log_softmax(torch.randn(2, 5, 11, generator=g), dim=-1)
    cand = torch.log_softmax(torch.randn(2, 5, 11, generator=g), dim=-1)
    expected = kl_divergence(Categorical(logits=ref.double()), Categorical(logits=cand.double())).mean()
    torch.testing.assert_close(mean_token_kl(ref, cand), expected, rtol=1e-6, atol=1e-9)
    assert float(mean_token_kl(ref, ref)) == 0.0


def test_mean_token_kl_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        mean_token_kl(torch.zeros(1, 3, 4), torch.zeros(1, 3, 5))


SCORES = {"a": 0.3, "b": 0.1, "c": 0.2, "d": 0.5}
ORDER = ["a", "b", "c", "d"]


def test_demotion_order_ascending_with_stable_ties():
    assert demotion_order(SCORES, ORDER) == ["b", "c", "a", "d"]
    assert demotion_order({"x": 1.0, "y": 0.0, "z": 1.0}, ["z", "y", "x"]) == ["y", "z", "x"]
    with pytest.raises(ValueError, match="no KL score"):
        demotion_order({"a": 1.0}, ["a", "b"])


@pytest.mark.parametrize(
    "target, low_layers",
    [(8.0, set()), (7.0, {"b"}), (6.5, {"b", "c"}), (6.0, {"b", "c"}), (5.0, {"b", "c", "a"}), (4.0, set(ORDER))],
)
def test_select_demotes_least_sensitive_until_budget(target, low_layers):
    got = select_by_sensitivity(SCORES, ORDER, low_format=LOW, high_format=HIGH, target_bits=target)
    assert {n for n, f in got.items() if f == LOW} == low_layers
    assert {n for n, f in got.items() if f == HIGH} == set(ORDER) - low_layers
    bits = [4 if got[n] == LOW else 8 for n in ORDER]
    assert sum(bits) / len(bits) <= target


def test_select_elements_weighting_counts_sizes():
    sizes = {"a": 1, "b": 1, "c": 1, "d": 9}
    # Demoting b, c, a (3 of 12 elements) gives 7 bits; the target 6 needs d too.
    got = select_by_sensitivity(
        SCORES, ORDER, low_format=LOW, high_format=HIGH, target_bits=6.0, sizes=sizes, weighting="elements"
    )
    assert all(f == LOW for f in got.values())
    got = select_by_sensitivity(
        SCORES, ORDER, low_format=LOW, high_format=HIGH, target_bits=7.0, sizes=sizes, weighting="elements"
    )
    assert got == {"a": LOW, "b": LOW, "c": LOW, "d": HIGH}


@pytest.mark.parametrize("target", [3.9, 8.5, float("nan")])
def test_select_unreachable_target_names_the_range(target):
    with pytest.raises(ValueError, match=r"choose a target in \[4, 8\]"):
        select_by_sensitivity(SCORES, ORDER, low_format=LOW, high_format=HIGH, target_bits=target)


def test_cache_roundtrip_and_key_mismatch(tmp_path):
    key = {"model": "tiny/llama", "data": "abc", "low": LOW, "high": HIGH, "layers": ["a", "b"]}
    c = open_cache(tmp_path, key)
    assert c.scores == {}
    c.scores["a"] = 0.25
    c.save()
    again = open_cache(tmp_path, key)
    assert again.scores == {"a": 0.25} and again.path == c.path
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write leaves no temp files
    other = open_cache(tmp_path, {**key, "data": "def"})
    assert other.path != c.path and other.scores == {}
    # A file whose stored key does not match its name is refused, not reused.
    doc = json.loads(c.path.read_text())
    doc["key"]["data"] = "zzz"
    c.path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="different key"):
        open_cache(tmp_path, key)
    c.path.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        open_cache(tmp_path, key)
