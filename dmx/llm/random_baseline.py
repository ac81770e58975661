"""The random control: seeded random per-layer assignments that fill a bit budget exactly.

A mixed-precision method is only worth its cost if it beats choosing the high-precision layers
at random at the same budget. ``random_formats`` ranks the layers by seeded uniform random scores
and fills the budget with the same greedy as the KL heuristic and dMX's budget rounding
(:func:`dmx.assignment.select_by_sensitivity`), so the three differ only in the ranking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dmx.assignment import select_by_sensitivity

__all__ = ["random_formats"]


def random_formats(
    layer_order: Sequence[str],
    *,
    seed: int,
    low_format: str,
    high_format: str,
    target_bits: float,
    sizes: Mapping[str, int] | None = None,
    weighting: str = "mean",
) -> dict[str, str]:
    """``{layer: format}`` with a seeded random choice of high layers, average bits ``<= target_bits``.

    A pure function of ``(layer_order, seed, formats, target, sizes, weighting)``; the number of
    high layers is what the budget allows (the same as the KL and budget-rounded dMX points).
    """
    scores = np.random.default_rng(int(seed)).random(len(layer_order))
    return select_by_sensitivity(dict(zip(layer_order, scores.tolist())), layer_order, low_format=low_format,
                                 high_format=high_format, target_bits=target_bits, sizes=sizes, weighting=weighting)
