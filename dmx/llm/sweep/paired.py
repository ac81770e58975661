"""Comparing two methods window by window: a paired bootstrap interval and the verdict it allows.

Each sweep point stores its per-window NLLs (``window_nlls``, GPTQ protocol: the mean token NLL
of a window times ``seqlen``). Two methods scored on the same windows are compared by the
difference of their perplexities, ``ppl(A) - ppl(B)``, with each method's perplexity averaged
over its seeds (dMX calibration seeds, KL calibration draws, random draws).

The interval is a two-level percentile bootstrap: every replicate draws the windows with
replacement (the same windows for both methods: the pairing that removes the windows' own
difficulty from the comparison) and each method's seeds with replacement (so the spread between
calibration seeds, KL's included, widens the interval). A method with one seed contributes no
seed variation. The verdict claims a win only when the interval excludes zero and every seed
of the winner is on the better side of the other method's mean (:func:`verdict`).

Zero-shot accuracy is compared the same way, question by question: each point stores every
document's 0/1 score (``accuracy_documents``), the figure is the average over tasks of each task's
accuracy (lm-eval's and the paper's average), and the bootstrap draws documents within each task,
so every replicate keeps each task's weight (:func:`paired_accuracy_difference`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PairedInterval", "paired_difference", "paired_accuracy_difference", "verdict", "seed_nlls",
           "seed_documents"]

#: Bootstrap replicates of :func:`paired_difference` (the interval's ends move by ~0.01 of its
#: width between RNG seeds at this count).
REPLICATES = 10_000


@dataclass(frozen=True)
class PairedInterval:
    """``figure(A) - figure(B)`` (seed means) on ``n_paired`` shared windows or documents, with a
    ``level`` percentile bootstrap interval ``[low, high]``; ``per_seed_a``/``per_seed_b``: each
    seed's figure (perplexity, lower is better; or average accuracy, ``lower_is_better=False``)."""

    difference: float
    low: float
    high: float
    level: float
    n_paired: int
    per_seed_a: tuple[float, ...]
    per_seed_b: tuple[float, ...]
    lower_is_better: bool = True

    @property
    def excludes_zero(self) -> bool:
        return self.high < 0 or self.low > 0


def _perplexities(nlls: np.ndarray, seqlen: int) -> np.ndarray:
    """Perplexity per seed (rows of ``nlls``, windows in columns)."""
    return np.exp(nlls.mean(axis=-1) / seqlen)


def _as_matrix(nlls: Sequence[Sequence[float]], name: str) -> np.ndarray:
    m = np.asarray(nlls, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 2:
        raise ValueError(f"{name} must be per-seed lists of per-window NLLs (at least one seed, two windows), "
                         f"got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} holds a non-finite NLL")
    return m


def paired_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *, seqlen: int,
                      level: float = 0.95, replicates: int = REPLICATES, rng_seed: int = 0) -> PairedInterval:
    """``ppl(A) - ppl(B)`` with its two-level paired bootstrap interval (module docstring).

    ``a``, ``b``: per seed, the per-window NLLs (``window_nlls`` of the sweep points), every seed
    of both methods on the same windows in the same order. ``ValueError`` when they are not."""
    ma, mb = _as_matrix(a, "a"), _as_matrix(b, "b")
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(f"a and b were scored on different numbers of windows ({ma.shape[1]} vs {mb.shape[1]}); "
                         "a paired comparison needs the same windows")
    return _bootstrap(ma, mb, lambda m: _perplexities(m, seqlen), [ma.shape[1]], level=level,
                      replicates=replicates, rng_seed=rng_seed, lower_is_better=True)


def paired_accuracy_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *,
                               task_sizes: Sequence[int], level: float = 0.95, replicates: int = REPLICATES,
                               rng_seed: int = 0) -> PairedInterval:
    """``acc(A) - acc(B)`` (average over tasks of each task's accuracy, seed means) with its paired
    bootstrap interval, documents drawn within each task (module docstring).

    ``a``, ``b``: per seed, every document's 0/1 score, the tasks one after another in the order of
    ``task_sizes`` (their document counts), as :func:`seed_documents` returns them."""
    ma, mb = _as_matrix(a, "a"), _as_matrix(b, "b")
    sizes = [int(n) for n in task_sizes]
    if not sizes or min(sizes) < 2 or sum(sizes) != ma.shape[1] or ma.shape[1] != mb.shape[1]:
        raise ValueError(f"a ({ma.shape[1]} documents) and b ({mb.shape[1]}) must both hold the documents of every "
                         f"task, at least two per task, task_sizes {sizes} summing to their count: a paired "
                         "comparison needs the same documents")
    bounds = np.cumsum([0, *sizes])

    def average_accuracy(m: np.ndarray) -> np.ndarray:
        return np.mean([m[:, lo:hi].mean(axis=1) for lo, hi in zip(bounds[:-1], bounds[1:])], axis=0)

    return _bootstrap(ma, mb, average_accuracy, sizes, level=level, replicates=replicates, rng_seed=rng_seed,
                      lower_is_better=False)


def _bootstrap(ma: np.ndarray, mb: np.ndarray, figure, strata: Sequence[int], *, level: float, replicates: int,
               rng_seed: int, lower_is_better: bool) -> PairedInterval:
    """The two-level paired bootstrap of ``figure(A) - figure(B)``: columns drawn with replacement
    within each of the consecutive ``strata`` (the same columns for both), seeds of each method
    drawn with replacement; ``figure`` maps a seeds x columns matrix to one figure per seed."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(rng_seed)
    starts = np.cumsum([0, *strata])[:-1]
    columns = np.hstack([rng.integers(lo, lo + n, size=(replicates, n)) for lo, n in zip(starts, strata)])
    seeds_a = rng.integers(0, ma.shape[0], size=(replicates, ma.shape[0]))
    seeds_b = rng.integers(0, mb.shape[0], size=(replicates, mb.shape[0]))
    diffs = np.empty(replicates)
    for r in range(replicates):
        diffs[r] = figure(ma[np.ix_(seeds_a[r], columns[r])]).mean() - figure(mb[np.ix_(seeds_b[r], columns[r])]).mean()
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    per_a, per_b = figure(ma), figure(mb)
    return PairedInterval(difference=float(per_a.mean() - per_b.mean()), low=float(low), high=float(high),
                          level=level, n_paired=ma.shape[1], per_seed_a=tuple(map(float, per_a)),
                          per_seed_b=tuple(map(float, per_b)), lower_is_better=lower_is_better)


def verdict(interval: PairedInterval, name_a: str = "dMX", name_b: str = "KL") -> str:
    """``"<A> better"`` only when the interval lies on A's better side of zero (below it for
    perplexity, above it for accuracy) and every seed of A is better than B's mean; ``"<B> better"``
    likewise; else ``"no difference shown"``."""
    sign = 1.0 if interval.lower_is_better else -1.0  # below zero is better after this flip
    a = [sign * p for p in interval.per_seed_a]
    b = [sign * p for p in interval.per_seed_b]
    low, high = sorted((sign * interval.low, sign * interval.high))
    if high < 0 and all(p < sum(b) / len(b) for p in a):
        return f"{name_a} better"
    if low > 0 and all(p < sum(a) / len(a) for p in b):
        return f"{name_b} better"
    return "no difference shown"


def seed_nlls(points: Sequence[Mapping[str, Any]], method: str, target: float | None = None,
              fmt: str | None = None) -> list[list[float]]:
    """The ``window_nlls`` of every seed of ``method`` at ``target`` (or uniform ``fmt``) among sweep
    ``points``, ordered by seed. ``ValueError`` naming the point when one lacks them (it was
    measured before per-window NLLs were stored: rerun the sweep to a new ``--out``)."""
    chosen = [p for p in points if p["method"] == method
              and (target is None or (p.get("target") is not None and math.isclose(p["target"], target)))
              and (fmt is None or p.get("format") == fmt)]
    missing = [p["key"] for p in chosen if not p.get("window_nlls")]
    if missing:
        raise ValueError(f"points {missing} store no per-window NLLs (measured before they were stored); "
                         "a paired comparison needs a sweep run with this version")
    return [list(p["window_nlls"]) for p in sorted(chosen, key=lambda p: (p.get("seed") is None, p.get("seed") or 0))]


def seed_documents(points: Sequence[Mapping[str, Any]], method: str, target: float) -> tuple[list[list[int]], list[str], list[int]]:
    """Per seed of ``method`` at ``target`` among sweep ``points`` (ordered by seed), every document's
    0/1 zero-shot score, the tasks one after another in name order; with the task names and their
    document counts. ``ValueError`` when a point stores none or the seeds answered different questions."""
    chosen = sorted((p for p in points if p["method"] == method and p.get("target") is not None
                     and math.isclose(p["target"], target)), key=lambda p: p.get("seed") or 0)
    missing = [p["key"] for p in chosen if not p.get("accuracy_documents")]
    if missing or not chosen:
        raise ValueError(f"points {missing or [method, target]} store no per-document zero-shot scores; add them by "
                         "rerunning their sweep with zero-shot tasks (SweepConfig.evaluation.tasks) into the same folder")
    tasks = sorted(chosen[0]["accuracy_documents"])
    sizes = [len(chosen[0]["accuracy_documents"][t]) for t in tasks]
    for p in chosen:
        if (sorted(p["accuracy_documents"]) != tasks or [len(p["accuracy_documents"][t]) for t in tasks] != sizes
                or p.get("accuracy_settings") != chosen[0].get("accuracy_settings")):
            raise ValueError(f"{p['key']} answered other zero-shot questions than {chosen[0]['key']} "
                             "(tasks, limit or source differ): a paired comparison needs the same documents")
    return [[int(v) for t in tasks for v in p["accuracy_documents"][t]] for p in chosen], tasks, sizes
