"""The sweep's figures: ``pareto.png`` and ``assignment_heatmap.png`` (:mod:`dmx.llm.plots`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dmx.llm.plots import assignment_heatmap, pareto_figure

__all__ = ["draw_figures"]


def draw_figures(points: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, *, title: str | None = None) -> dict[str, Path]:
    """``pareto.png`` and (when KL/dMX points exist) ``assignment_heatmap.png`` in ``out_dir``."""
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    if any(p.get("perplexity") is not None for p in points):
        paths["pareto"] = pareto_figure(points, out / "pareto.png", title=title)
    mixed = {p["label"]: p["formats"] for p in sorted(points, key=lambda p: (p["method"], p.get("target") or 0))
             if p.get("formats")}
    if mixed:
        paths["heatmap"] = assignment_heatmap(mixed, out / "assignment_heatmap.png", title=title)
    return paths
