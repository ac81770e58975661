"""KL baseline: the KL measure, the greedy selection rule, and the resumable score cache."""

import json

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from dmx.assignment import demotion_order, select_by_sensitivity
from dmx.llm.kl_baseline import mean_token_kl, open_cache

LOW, HIGH = "mxfp4_e2m1", "mxfp8_e4m3"


def test_mean_token_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    ref = 3 * torch.randn(2, 5, 11, generator=g)
    cand = ref + 0.01 * torch.randn(2, 5, 11, generator=g)
    expected = kl_divergence(Categorical(logits=ref.double()), Categorical(logits=cand.double())).mean()
    torch.testing.assert_close(mean_token_kl(ref, cand), expected, rtol=1e-9, atol=0)
    assert float(mean_token_kl(ref, ref)) == 0.0
    assert float(mean_token_kl(ref, ref + 5.0)) == pytest.approx(0.0, abs=1e-10)  # logits shift-invariant


def test_mean_token_kl_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        mean_token_kl(torch.zeros(1, 3, 4), torch.zeros(1, 3, 5))


SCORES = {"a": 0.3, "b": 0.1, "c": 0.2, "d": 0.5}
ORDER = ["a", "b", "c", "d"]


def test_demotion_order_ascending_with_stable_ties():
    assert demotion_order(SCORES, ORDER) == ["b", "c", "a", "d"]
    assert demotion_order({"x": 1.0, "y": 0.0, "z": 1.0}, ["z", "y", "x"]) == ["y", "z", "x"]
    with pytest.raises(ValueError, match="no score"):
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
    with pytest.raises(ValueError, match="KL score cache .* is corrupt, not valid JSON .*delete it to rescore"):
        open_cache(tmp_path, key)
    c.path.write_text("[1, 2]")  # valid JSON, but not a cache document
    with pytest.raises(ValueError, match="is not a KL score cache"):
        open_cache(tmp_path, key)


# ----------------------------------------------------------------------------- on a tiny model


@pytest.fixture(scope="module")
def tiny():
    from dmx.llm.kl_baseline import reference_logits
    from dmx.llm.models import tiny_model
    from dmx.llm.pipeline import quantize_model

    model = tiny_model("qwen3", seed=3)
    windows = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    ref = reference_logits(model, windows)  # before wrapping: full precision
    layers = quantize_model(model)
    for layer in layers.values():
        layer.reconfigure(fixed_format=HIGH)
    # Score the first block's 7 linears only (the rest stay at the high format): keeps it fast.
    first_block = {n: layer for n, layer in layers.items() if ".layers.0." in n}
    assert len(first_block) == 7
    return model, first_block, windows, ref


def test_score_is_kl_of_the_one_layer_low_model(tiny):
    from dmx.llm.kl_baseline import score_layers

    model, layers, windows, ref = tiny
    scores = score_layers(model, layers, windows, low_format=LOW, high_format=HIGH, reference=ref, progress=False)
    assert list(scores) == list(layers) and all(v >= 0 for v in scores.values())
    assert len(set(scores.values())) > 1  # layers differ in sensitivity
    name = list(layers)[4]
    for n, layer in layers.items():
        layer.reconfigure(fixed_format=LOW if n == name else HIGH)
    with torch.no_grad():
        logits = model(windows).logits
    expected = kl_divergence(Categorical(logits=ref.double()), Categorical(logits=logits.double())).mean()
    assert scores[name] == pytest.approx(float(expected), rel=1e-9)
    assert all(layer.format_name() == HIGH for n, layer in layers.items() if n != name)


def test_interrupted_scoring_resumes_from_cache(tiny, tmp_path):
    from dmx.llm.kl_baseline import kl_assignments, open_cache

    model, layers, windows, ref = tiny
    calls = {"n": 0}

    def count(module, args):
        calls["n"] += 1
        if calls["n"] == 6:  # 2 windows per layer: dies while scoring the third layer
            raise KeyboardInterrupt

    handle = model.register_forward_pre_hook(count)
    kwargs = dict(targets=[6.0, 4.0, 8.0], low_format=LOW, high_format=HIGH, model_id="tiny-qwen3",
                  cache_dir=tmp_path, progress=False)
    try:
        with pytest.raises(KeyboardInterrupt):
            kl_assignments(model, layers, windows, reference=ref, **kwargs)
        files = list(tmp_path.glob("kl_scores-*.json"))
        assert len(files) == 1
        assert set(json.loads(files[0].read_text())["scores"]) == set(list(layers)[:2])
        calls["n"] = -1000  # no more interruptions; count the forwards of the rerun
        result = kl_assignments(model, layers, windows, reference=lambda: ref, **kwargs)
    finally:
        handle.remove()
    assert calls["n"] + 1000 == 2 * (len(layers) - 2)  # only the missing layers were scored
    fresh = kl_assignments(model, layers, windows, reference=ref, **{**kwargs, "cache_dir": tmp_path / "new"})
    for t in (6.0, 4.0, 8.0):
        assert result[t].formats == fresh[t].formats
        assert result[t].element_bits <= t
    assert result[6.0].element_bits == pytest.approx(40 / 7)  # 7 layers: 4 of 7 demoted, 6 is not reachable
    assert set(result[8.0].formats.values()) == {HIGH} and set(result[4.0].formats.values()) == {LOW}
    # A complete cache needs no reference at all.
    again = kl_assignments(model, layers, windows, reference=None, **kwargs)
    assert again[6.0].formats == result[6.0].formats
    assert open_cache(tmp_path, json.loads(files[0].read_text())["key"]).scores == result[6.0].provenance["kl_scores"]


def test_unreachable_target_fails_before_scoring(tiny, tmp_path):
    from dmx.llm.kl_baseline import kl_assignments

    model, layers, windows, ref = tiny
    with pytest.raises(ValueError, match=r"choose a target in \[4, 8\]"):
        kl_assignments(model, layers, windows, targets=[5.0, 9.0], low_format=LOW, high_format=HIGH,
                       reference=ref, model_id="m", cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_cli_output_path_pattern():
    from dmx.commands.kl import output_path

    assert str(output_path("kl_{target}.json", 5.0, 2)) == "kl_5.json"
    assert str(output_path("a.json", 5.5, 1)) == "a.json"
    with pytest.raises(ValueError, match="placeholder"):
        output_path("a.json", 5.0, 2)


@pytest.mark.slow
def test_embedded_model_scores_two_layers(embedded_model, embedded_test_ids):
    """The real SmolLM2-135M path: reference logits of the GGUF model, two layers scored.

    Only the two scored layers are wrapped (quantising all 210 weights would dominate the time)."""
    import copy

    from dmx.llm.data import sample_windows
    from dmx.llm.kl_baseline import reference_logits, score_layers
    from dmx.llm.models import decoder_linear_names
    from dmx.wrap import wrap_linears

    model, _ = embedded_model
    model = copy.deepcopy(model)  # the session model must stay unquantised
    assert len(decoder_linear_names(model)) == 7 * model.config.num_hidden_layers
    windows = sample_windows(embedded_test_ids, 1, 32, seed=0)
    ref = reference_logits(model, windows)
    assert ref.shape == (1, 32, model.config.vocab_size)
    picked = wrap_linears(model, names=["model.layers.0.mlp.down_proj", "model.layers.15.self_attn.q_proj"])
    scores = score_layers(model, picked, windows, low_format=LOW, high_format=HIGH, reference=ref, progress=False)
    # Demoting one of 210 layers to 4 bits perturbs the output measurably but slightly.
    assert all(0 < v < 1 for v in scores.values()), scores


def test_replaying_the_blocks_before_a_layer_gives_the_same_scores_and_skips_them(tmp_path):
    """Scoring layers of the second block replays the first block's recorded output: scores
    bit-identical to full forwards, and the first block runs only in the recording pass."""
    from dmx.llm.kl_baseline import reference_logits, score_layers
    from dmx.llm.models import tiny_model
    from dmx.llm.pipeline import quantize_model
    from dmx.llm.prefix_replay import find_blocks

    model = tiny_model("llama", seed=5)
    windows = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(2))
    ref = reference_logits(model, windows)
    layers = quantize_model(model)
    blocks, block_of = find_blocks(model, layers)
    assert blocks is not None and max(block_of.values()) >= 1
    chosen = {n: layer for n, layer in layers.items() if block_of[n] in (0, 1)}
    kwargs = dict(low_format=LOW, high_format=HIGH, reference=ref, progress=False)
    full = score_layers(model, chosen, windows, replay=False, **kwargs)
    runs = {"n": 0}
    # a linear inside the first block computes only when its block does (a replayed block runs nothing inside)
    inside = next(layer for n, layer in layers.items() if block_of[n] == 0)
    handle = inside.register_forward_pre_hook(lambda *_: runs.__setitem__("n", runs["n"] + 1))
    try:
        replayed = score_layers(model, chosen, windows, replay=True, **kwargs)
    finally:
        handle.remove()
    assert replayed == full  # exactly: the replayed tensors are the ones a full forward computes
    in_first = sum(block_of[n] == 0 for n in chosen)
    assert runs["n"] == len(windows) * (1 + in_first)  # the recording pass, then only the first block's own layers
    assert all(layer.format_name() == HIGH for layer in chosen.values())
    assert all("forward" not in vars(block) for block in blocks)  # the blocks' own forward is back


def test_a_forward_already_on_a_block_is_put_back_after_replaying():
    """accelerate's device hooks replace a block's forward by an instance attribute: the replay
    must restore it, not delete it."""
    from dmx.llm.prefix_replay import PrefixReplay

    blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
    hooked = blocks[0].forward
    blocks[0].forward = hooked
    replay = PrefixReplay(blocks, upto=1)
    replay.outputs = [[torch.ones(1, 2)]]
    with replay.skipping(1):
        assert torch.equal(blocks[0](torch.zeros(1, 2)), torch.ones(1, 2))
    assert vars(blocks[0])["forward"] is hooked
