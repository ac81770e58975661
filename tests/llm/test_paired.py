"""The paired bootstrap comparison of two methods (dmx.llm.sweep.paired) and the verdict it allows."""

from __future__ import annotations

import numpy as np
import pytest

from dmx.llm.sweep.paired import paired_accuracy_difference, paired_difference, seed_documents, seed_nlls, verdict

SEQLEN = 2048


def _nlls(rng, base, n_seeds, shift=0.0, seed_sd=0.0, noise=0.02):
    """Per-seed per-window NLLs: a shared window difficulty ``base`` plus a method shift (nats per
    token), a per-seed offset and per-window noise."""
    return [((base + shift + rng.normal(0, seed_sd) + rng.normal(0, noise, base.size)) * SEQLEN).tolist()
            for _ in range(n_seeds)]


def test_a_clear_paired_win_is_called_and_its_interval_excludes_zero():
    rng = np.random.default_rng(0)
    base = rng.normal(3.4, 0.3, 32)  # windows differ far more than the methods do: the pairing matters
    a, b = _nlls(rng, base, 3, shift=-0.03), _nlls(rng, base, 3)
    res = paired_difference(a, b, seqlen=SEQLEN)
    assert res.high < 0 and res.excludes_zero and res.n_paired == 32
    assert verdict(res) == "dMX better"
    assert verdict(paired_difference(b, a, seqlen=SEQLEN)) == "KL better"
    # the difference is of the seed-mean perplexities, computed independently here
    ppl = lambda m: np.mean([np.exp(np.mean(r) / SEQLEN) for r in m])
    assert res.difference == pytest.approx(ppl(a) - ppl(b), rel=1e-12)


def test_no_win_is_claimed_when_the_interval_includes_zero():
    """Over many random comparisons without a true difference, every claimed win has an interval
    excluding zero, and the seed spread (KL's draws too) widens the interval."""
    rng = np.random.default_rng(1)
    for trial in range(30):
        base = rng.normal(3.4, 0.3, 16)
        res = paired_difference(_nlls(rng, base, 3, seed_sd=0.01), _nlls(rng, base, 3, seed_sd=0.01),
                                seqlen=SEQLEN, replicates=2000, rng_seed=trial)
        if verdict(res) != "no difference shown":
            assert res.excludes_zero
        if not res.excludes_zero:
            assert verdict(res) == "no difference shown"
    base = rng.normal(3.4, 0.3, 16)
    a = _nlls(rng, base, 3, shift=-0.01)
    tight = paired_difference(a, _nlls(rng, base, 3), seqlen=SEQLEN, replicates=2000)
    loose = paired_difference(a, _nlls(rng, base, 3, seed_sd=0.05), seqlen=SEQLEN, replicates=2000)
    assert loose.high - loose.low > tight.high - tight.low


def test_a_win_needs_every_seed_below_the_other_mean():
    """A mean win carried by three good seeds while a fourth is worse than KL is not called a win."""
    rng = np.random.default_rng(2)
    base = rng.normal(3.4, 0.3, 64)
    good = [((base - 0.05) * SEQLEN).tolist()] * 3 + [((base + 0.002) * SEQLEN).tolist()]
    res = paired_difference(good, [(base * SEQLEN).tolist()], seqlen=SEQLEN)
    assert res.high < 0  # the interval alone would call it
    assert verdict(res) == "no difference shown"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="different numbers of windows"):
        paired_difference([[1.0, 2.0, 3.0]], [[1.0, 2.0]], seqlen=SEQLEN)
    with pytest.raises(ValueError, match="at least one seed, two windows"):
        paired_difference([[1.0]], [[1.0]], seqlen=SEQLEN)
    with pytest.raises(ValueError, match="non-finite"):
        paired_difference([[1.0, float("nan")]], [[1.0, 2.0]], seqlen=SEQLEN)


def test_seed_nlls_reads_points_in_seed_order_and_refuses_points_without_them():
    points = [{"key": "dmx@5:s1", "method": "dmx", "target": 5.0, "seed": 1, "window_nlls": [2.0, 3.0]},
              {"key": "dmx@5", "method": "dmx", "target": 5.0, "seed": 0, "window_nlls": [1.0, 2.0]},
              {"key": "kl@5", "method": "kl", "target": 5.0, "seed": None, "window_nlls": [4.0, 5.0]},
              {"key": "dmx@6", "method": "dmx", "target": 6.0, "seed": 0}]
    assert seed_nlls(points, "dmx", 5.0) == [[1.0, 2.0], [2.0, 3.0]]
    assert seed_nlls(points, "kl", 5.0) == [[4.0, 5.0]]
    with pytest.raises(ValueError, match=r"\['dmx@6'\] store no per-window NLLs"):
        seed_nlls(points, "dmx", 6.0)


def _answers(rng, easy, n_seeds, skill=0.0):
    """Per-seed 0/1 answers: a question is right when its shared ease plus the method's ``skill``
    and per-seed noise beats a uniform draw (questions differ far more than methods do)."""
    return [(easy + skill + rng.normal(0, 0.05, easy.size) > rng.uniform(0, 1, easy.size)).astype(int).tolist()
            for _ in range(n_seeds)]


def test_a_clear_accuracy_win_is_called_the_right_way_round():
    """Higher accuracy is better: A answering more questions right is "dMX better", with the
    interval above zero, and swapping the methods swaps the verdict."""
    rng = np.random.default_rng(3)
    easy = rng.uniform(0, 1, 600)
    a, b = _answers(rng, easy, 3, skill=0.15), _answers(rng, easy, 3)
    res = paired_accuracy_difference(a, b, task_sizes=[200, 400])
    assert res.low > 0 and not res.lower_is_better and res.n_paired == 600
    assert verdict(res) == "dMX better"
    assert verdict(paired_accuracy_difference(b, a, task_sizes=[200, 400])) == "KL better"
    same = paired_accuracy_difference(a[:1], a[:1], task_sizes=[200, 400], replicates=500)
    assert same.difference == 0 and verdict(same) == "no difference shown"


def test_accuracy_is_the_average_over_tasks_and_documents_are_drawn_within_their_task():
    """The figure weighs each task once (lm-eval's average), not each document: a small task counts
    as much as a large one, computed independently here; every replicate keeps each task's size,
    so a method that differs only on the small task moves the figure by half that task's change."""
    small, large = [1] * 8 + [0] * 2, [1] * 10 + [0] * 90
    a = [small + large]
    b = [[0] * 10 + large]
    res = paired_accuracy_difference(a, b, task_sizes=[10, 100], replicates=2000)
    assert res.per_seed_a[0] == pytest.approx((0.8 + 0.1) / 2) and res.per_seed_b[0] == pytest.approx(0.05)
    assert res.difference == pytest.approx(0.4)
    # drawing within tasks: the large task never lends documents to the small one's places, so the
    # interval stays near 0.4 (drawn from all 110 documents, the small task's places would mostly
    # hold large-task documents, on which the methods agree, and the interval would reach zero)
    assert 0.1 <= res.low and res.high <= 0.5


def test_bad_accuracy_inputs_are_refused():
    with pytest.raises(ValueError, match="same documents"):
        paired_accuracy_difference([[1, 0, 1]], [[1, 0, 1]], task_sizes=[2, 2])
    with pytest.raises(ValueError, match="same documents"):
        paired_accuracy_difference([[1, 0, 1, 1]], [[1, 0, 1]], task_sizes=[2, 2])


def test_seed_documents_joins_tasks_in_name_order_and_refuses_other_questions():
    settings = {"tasks": ["piqa", "arc_easy"], "limit": 2, "online": False}
    points = [{"key": "kl@5:s1", "method": "kl", "target": 5.0, "seed": 1, "accuracy_settings": settings,
               "accuracy_documents": {"piqa": [1, 1], "arc_easy": [0, 1]}},
              {"key": "kl@5", "method": "kl", "target": 5.0, "seed": 0, "accuracy_settings": settings,
               "accuracy_documents": {"piqa": [0, 0], "arc_easy": [1, 0]}},
              {"key": "dmx@5", "method": "dmx", "target": 5.0, "seed": 0, "accuracy_settings": settings,
               "accuracy_documents": {"piqa": [0, 0, 1], "arc_easy": [1, 0]}},
              {"key": "dmx@5:s1", "method": "dmx", "target": 5.0, "seed": 1, "accuracy_settings": settings,
               "accuracy_documents": {"piqa": [0, 0], "arc_easy": [1, 0]}},
              {"key": "random@5", "method": "random", "target": 5.0, "seed": 0}]
    assert seed_documents(points, "kl", 5.0) == ([[1, 0, 0, 0], [0, 1, 1, 1]], ["arc_easy", "piqa"], [2, 2])
    with pytest.raises(ValueError, match="dmx@5:s1 answered other zero-shot questions"):
        seed_documents(points, "dmx", 5.0)
    with pytest.raises(ValueError, match=r"\['random@5'\] store no per-document"):
        seed_documents(points, "random", 5.0)
