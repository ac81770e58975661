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
of the winner is below the other method's mean (:func:`verdict`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PairedInterval", "paired_difference", "verdict", "seed_nlls"]

#: Bootstrap replicates of :func:`paired_difference` (the interval's ends move by ~0.01 of its
#: width between RNG seeds at this count).
REPLICATES = 10_000


@dataclass(frozen=True)
class PairedInterval:
    """``ppl(A) - ppl(B)`` (seed means) on ``n_windows`` shared windows, with a ``level`` percentile
    bootstrap interval ``[low, high]``; ``per_seed_a``/``per_seed_b``: each seed's perplexity."""

    difference: float
    low: float
    high: float
    level: float
    n_windows: int
    per_seed_a: tuple[float, ...]
    per_seed_b: tuple[float, ...]

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
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(rng_seed)
    n = ma.shape[1]
    windows = rng.integers(0, n, size=(replicates, n))
    seeds_a = rng.integers(0, ma.shape[0], size=(replicates, ma.shape[0]))
    seeds_b = rng.integers(0, mb.shape[0], size=(replicates, mb.shape[0]))
    diffs = np.empty(replicates)
    for r in range(replicates):
        pa = _perplexities(ma[np.ix_(seeds_a[r], windows[r])], seqlen).mean()
        pb = _perplexities(mb[np.ix_(seeds_b[r], windows[r])], seqlen).mean()
        diffs[r] = pa - pb
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    per_a, per_b = _perplexities(ma, seqlen), _perplexities(mb, seqlen)
    return PairedInterval(difference=float(per_a.mean() - per_b.mean()), low=float(low), high=float(high),
                          level=level, n_windows=n, per_seed_a=tuple(map(float, per_a)),
                          per_seed_b=tuple(map(float, per_b)))


def verdict(interval: PairedInterval, name_a: str = "dMX", name_b: str = "KL") -> str:
    """``"<A> better"`` only when the interval lies below zero and every seed of A is below B's mean
    (lower perplexity is better); ``"<B> better"`` likewise; else ``"no difference shown"``."""
    mean_a = sum(interval.per_seed_a) / len(interval.per_seed_a)
    mean_b = sum(interval.per_seed_b) / len(interval.per_seed_b)
    if interval.high < 0 and all(p < mean_b for p in interval.per_seed_a):
        return f"{name_a} better"
    if interval.low > 0 and all(p < mean_a for p in interval.per_seed_b):
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
