"""Figures of a sweep: the Pareto plot and the per-layer assignment heat map.

Both functions take plain result records (mappings, as stored in a sweep's ``results.json``)
so they can redraw figures from saved results without any model. They write PNG files.

Figures are built as ``matplotlib.figure.Figure`` objects, not through ``pyplot``: such a figure
renders with its own Agg canvas on ``savefig`` and never touches pyplot's global state, so
importing this module leaves the session's backend alone (the inline backend of a notebook
keeps working) and no figure window ever opens.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from mx_spec import get_format

# One marker (and colour) per method; methods not listed get the fallback style. ``repeats``: what
# a method's several points at one target are, as the study names them (dMX has calibration seeds,
# KL calibration draws, the random control random draws; KL on a learned rotation pairs draw i with
# seed i's rotation).
METHOD_STYLE: dict[str, dict[str, Any]] = {
    "uniform": {"marker": "s", "color": "tab:gray", "label": "uniform MX"},
    "kl": {"marker": "^", "color": "tab:orange", "label": "KL heuristic", "repeats": "calibration draws"},
    "dmx": {"marker": "o", "color": "tab:blue", "label": "dMX"},
    "random": {"marker": "x", "color": "tab:red", "label": "random control", "repeats": "draws"},
    "kl_learned_rotation": {"marker": "v", "color": "tab:brown", "label": "KL on dMX's learned rotation"},
}
_FALLBACK_STYLE = {"marker": "D", "color": "tab:purple"}


def _style(method: str) -> dict[str, Any]:
    return METHOD_STYLE.get(method, {**_FALLBACK_STYLE, "label": method})


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _seed_groups(points: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Points of one method grouped by target (the seeds of one budget), else one group each; by bits."""
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for i, p in enumerate(points):
        key = ("target", p["target"]) if p.get("target") is not None else ("point", i)
        groups.setdefault(key, []).append(p)
    return sorted(groups.values(), key=lambda g: float(np.mean([p["avg_bits"] for p in g])))


def _panel(ax: Axes, points: Sequence[Mapping[str, Any]], metric: str, ylabel: str) -> None:
    full = [p for p in points if p.get("method") == "fp" and _finite(p.get(metric))]
    quant = [p for p in points if p.get("method") != "fp" and _finite(p.get(metric)) and _finite(p.get("avg_bits"))]
    for method in dict.fromkeys(p["method"] for p in quant):
        pts = [p for p in quant if p["method"] == method]
        st = _style(method)
        groups = _seed_groups(pts)
        x = [float(np.mean([p["avg_bits"] for p in g])) for g in groups]
        y = [float(np.mean([p[metric] for p in g])) for g in groups]
        several = any(len(g) > 1 for g in groups)
        label = st["label"] + (f" (mean, min-max over {st.get('repeats', 'seeds')})" if several else "")
        if several:
            for g in groups:  # each seed faintly, the mean with its range on top
                ax.scatter([p["avg_bits"] for p in g], [p[metric] for p in g], marker=st["marker"], color=st["color"],
                           alpha=0.3, s=14)
            lo = [yi - min(p[metric] for p in g) for yi, g in zip(y, groups)]
            hi = [max(p[metric] for p in g) - yi for yi, g in zip(y, groups)]
            ax.errorbar(x, y, yerr=[lo, hi], linestyle="-", marker=st["marker"], color=st["color"], label=label,
                        markersize=7, capsize=3)
        else:
            ax.plot(x, y, linestyle="-" if method != "uniform" else "none", marker=st["marker"], color=st["color"],
                    label=label, markersize=7)
        if method == "uniform":
            for p in pts:
                ax.annotate(
                    str(p.get("format", p.get("label", ""))).replace("mxfp", "fp"),
                    (p["avg_bits"], p[metric]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                    color=st["color"],
                )
    # Full precision sits at 16/32 bits; a reference line keeps the MX range readable.
    for p in full:
        ax.axhline(p[metric], color="black", linestyle="--", linewidth=1, label=f"full precision ({p[metric]:.4g})")
    ax.set_xlabel("average element bits")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    # below the axes: inside, it covers the points of a sparse panel (one target with accuracy); one
    # column: a study's labels ("KL on dMX's learned rotation (mean, min-max over seeds)") are wider
    # than half a panel, so two columns ran off the figure and under the next panel's legend
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)


def pareto_figure(
    points: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    log_perplexity: bool = True,
) -> Path:
    """Draw perplexity vs average element bits, one marker style per method, to ``path`` (PNG).

    Each record needs ``method`` ('fp', 'uniform', 'kl', 'dmx', ...), ``avg_bits`` and
    ``perplexity``; uniform points are annotated with their ``format``; the 'fp' record is a
    dashed horizontal line. If any record has ``avg_accuracy``, a second panel shows average
    zero-shot accuracy vs average bits. Returns the written path.
    """
    return _save(draw_pareto(points, title=title, log_perplexity=log_perplexity), path)


def draw_pareto(points: Sequence[Mapping[str, Any]], *, title: str | None = None,
                log_perplexity: bool = True) -> Figure:
    """The figure :func:`pareto_figure` writes, laid out, for drawing elsewhere or inspecting."""
    if not any(_finite(p.get("perplexity")) for p in points):
        raise ValueError("no result has a finite perplexity; nothing to plot (run the sweep first)")
    with_acc = any(_finite(p.get("avg_accuracy")) for p in points)
    fig = Figure(figsize=(11 if with_acc else 6, 6.5))
    axes = fig.subplots(1, 2 if with_acc else 1, squeeze=False)
    _panel(axes[0, 0], points, "perplexity", "WikiText-2 perplexity")
    if log_perplexity:
        axes[0, 0].set_yscale("log")
        # Plain numbers, not 4x10^1: perplexities are read off the axis.
        axes[0, 0].yaxis.set_major_formatter(ScalarFormatter())
        axes[0, 0].yaxis.set_minor_formatter(ScalarFormatter())
    if with_acc:
        _panel(axes[0, 1], points, "avg_accuracy", accuracy_label(points))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def accuracy_label(points: Sequence[Mapping[str, Any]]) -> str:
    """The accuracy axis's label, naming how many questions of each task the points answered (their
    ``accuracy_settings``' ``limit``): a figure of the first 200 questions must not read as every question."""
    label = "average zero-shot accuracy"
    settings = [p.get("accuracy_settings") for p in points if _finite(p.get("avg_accuracy"))]
    if not all(settings):  # records made before the settings were stored
        return label
    limits = {s.get("limit") for s in settings}
    if len(limits) > 1:
        return f"{label}\n(question counts differ between points)"
    limit = limits.pop()
    return f"{label}\n({f'first {limit} questions' if limit else 'every question'} of each task)"


def _block_ticks(layer_names: Sequence[str]) -> tuple[list[int], list[str]]:
    """Tick at the first linear of each decoder block (``...layers.<i>.``), labelled ``i``."""
    ticks, labels, seen = [], [], set()
    for i, name in enumerate(layer_names):
        m = re.search(r"layers\.(\d+)\.", name)
        if m and m.group(1) not in seen:
            seen.add(m.group(1))
            ticks.append(i)
            labels.append(m.group(1))
    if not ticks:
        return list(range(len(layer_names))), [n.rsplit(".", 1)[-1] for n in layer_names]
    step = max(1, len(ticks) // 16)
    return ticks[::step], labels[::step]


def assignment_grid(
    assignments: Mapping[str, Mapping[str, str]],
    layer_order: Sequence[str],
    format_bits: Mapping[str, float],
) -> np.ndarray:
    """float64 ``[n_assignments, n_layers]`` of element bits; NaN where a layer is unassigned.
    An assignment naming a format missing from ``format_bits`` raises ValueError."""
    grid = np.full((len(assignments), len(layer_order)), np.nan, dtype=np.float64)
    for r, a in enumerate(assignments.values()):
        for c, name in enumerate(layer_order):
            fmt = a.get(name)
            if fmt is None:
                continue
            if fmt not in format_bits:
                raise ValueError(f"format {fmt!r} of layer {name!r} has no bit width; known: {sorted(format_bits)}")
            grid[r, c] = float(format_bits[fmt])
    return grid


def assignment_heatmap(
    assignments: Mapping[str, Mapping[str, str]],
    path: str | os.PathLike,
    *,
    layer_order: Sequence[str] | None = None,
    format_bits: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """Heat map of per-layer formats: one row per assignment (e.g. ``"dmx@5.0"``), one column
    per quantised layer in ``layer_order`` (default: order of the first assignment), colour =
    the format's element bits (from ``format_bits`` or ``mx_spec.get_format``). Writes a PNG."""
    if not assignments:
        raise ValueError("no assignments to draw; the sweep has no KL or dMX points yet")
    order = list(layer_order) if layer_order is not None else list(next(iter(assignments.values())))
    formats = sorted({f for a in assignments.values() for f in a.values()})
    if format_bits is None:
        format_bits = {f: float(get_format(f).element.bits) for f in formats}
    rows = list(assignments)
    grid = assignment_grid(assignments, order, format_bits)
    levels = sorted({float(format_bits[f]) for f in formats})
    cmap = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.1, 0.9, len(levels))))
    edges = [levels[0] - 0.5] + [(a + b) / 2 for a, b in zip(levels, levels[1:])] + [levels[-1] + 0.5]
    norm = BoundaryNorm(edges, cmap.N)
    fig = Figure(figsize=(max(6.0, min(18.0, 0.06 * len(order) + 3)), 0.45 * len(rows) + 1.6))
    ax = fig.subplots()
    im = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ticks, labels = _block_ticks(order)
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_xlabel("quantised linear layer (ticks: decoder block index)")
    cbar = fig.colorbar(im, ax=ax, ticks=levels, fraction=0.03)
    cbar.set_label("element bits")
    ax.set_title(title or "per-layer MX format (bright = high precision)")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write the laid-out ``fig`` as PNG, creating parent folders (a pyplot-free figure needs no closing)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    return out
