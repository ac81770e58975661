"""Build-time check that every figure a tutorial renders can be read without its source code.

``figure_problems(fig)`` lists what a reader would miss on one matplotlib figure:

* an axes (with its axis lines shown) without an x label or a y label — unless it shares that
  axis with a neighbouring axes that carries the label (``sharey=True`` panels in a row);
* an axes that draws two or more data lines (more than two points each, so reference lines drawn
  with ``axhline``/``axvline`` do not count) or two or more labelled artists, without a legend:
  the reader could not tell the lines apart;
* a series hidden under another: two lines or marker series of an axes whose points coincide
  (at least ``HIDDEN_SHARE`` of them) where the one drawn later is opaque, solid and at least as
  wide (line width, or marker size), so the earlier one cannot be seen. Draw coinciding series
  with different line styles, a narrower line on top, or transparency.

``install()`` wraps ``FigureCanvasBase.print_figure``, the one call through which every figure is
rendered (IPython's inline display and ``savefig`` alike), so that rendering a figure with a
problem raises ``FigureCheckError``. ``tutorials/build.py`` runs ``install()`` in the notebook
kernel when the kernel starts (outside any cell, so the notebooks' cells stay those of their
sources) and fails the build on any error output, so a notebook with an unlabelled plot cannot be
built or pass ``tests/project/test_tutorials.py``.
"""

from __future__ import annotations

__all__ = ["FigureCheckError", "figure_problems", "install", "HIDDEN_SHARE"]

#: Share of coinciding points from which an earlier series counts as hidden under a later one.
HIDDEN_SHARE = 0.9


class FigureCheckError(AssertionError):
    """A figure about to be rendered lacks axis labels or a legend."""


def _has_label_via_shared(ax, axis: str) -> bool:
    """True if an axes sharing ``axis`` ('x' or 'y') with ``ax`` carries that axis' label."""
    group = ax.get_shared_x_axes() if axis == "x" else ax.get_shared_y_axes()
    siblings = [other for other in ax.figure.axes if other is not ax and group.joined(ax, other)]
    getter = "get_xlabel" if axis == "x" else "get_ylabel"
    return any(getattr(other, getter)().strip() for other in siblings)


def _labelled(artist) -> bool:
    label = artist.get_label()
    return bool(label) and not label.startswith("_")  # matplotlib names unlabelled artists '_child0', ...


def _series(ax) -> list[tuple[str, object, float, bool]]:
    """(name, points, width, covers) of each line or marker series of ``ax``, in drawing order:
    ``covers`` when it is opaque and solid (a dashed or see-through series lets one below show)."""
    import numpy as np
    from matplotlib.collections import PathCollection

    series = []
    for line in ax.get_lines():
        try:
            points = np.column_stack([np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)])
        except (TypeError, ValueError):
            continue
        markers_only = line.get_linestyle() in ("None", "", " ", "none")
        width = line.get_markersize() if markers_only else line.get_linewidth()
        solid = markers_only or line.get_linestyle() == "-"
        series.append((line.get_label(), points, width, solid and (line.get_alpha() is None or line.get_alpha() >= 1)))
    for collection in ax.collections:
        if isinstance(collection, PathCollection) and len(collection.get_offsets()):
            sizes = collection.get_sizes()
            alpha = collection.get_alpha()
            series.append((collection.get_label(), np.asarray(collection.get_offsets(), float),
                           float(np.sqrt(sizes.min())) if len(sizes) else 0.0, alpha is None or alpha >= 1))
    return series


def hidden_series(ax) -> list[str]:
    """Series of ``ax`` hidden under a later one (module docstring), as "'a' under 'b'"."""
    import numpy as np

    series = _series(ax)
    hidden = []
    for i, (name, points, width, _) in enumerate(series):
        for later, (other, other_points, other_width, covers) in enumerate(series[i + 1:], start=i + 1):
            if not covers or other_width < width or points.shape != other_points.shape or len(points) == 0:
                continue
            same = np.all(np.isclose(points, other_points, rtol=1e-6, atol=0) | (np.isnan(points) & np.isnan(other_points)), axis=1)
            if same.mean() >= HIDDEN_SHARE:
                hidden.append(f"{name!r} under {other!r}")
                break
    return hidden


def figure_problems(fig) -> list[str]:
    """Human-readable problems of ``fig`` (empty list: it passes)."""
    problems = []
    for index, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison:
            continue
        name = f"axes {index}" + (f" ({ax.get_title()!r})" if ax.get_title() else "")
        if not ax.get_xlabel().strip() and not _has_label_via_shared(ax, "x"):
            problems.append(f"{name}: no x-axis label")
        if not ax.get_ylabel().strip() and not _has_label_via_shared(ax, "y"):
            problems.append(f"{name}: no y-axis label")
        data_lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
        labelled = [a for a in [*ax.get_lines(), *ax.collections, *ax.patches] if _labelled(a)]
        if (len(data_lines) >= 2 or len(labelled) >= 2) and ax.get_legend() is None and not fig.legends:
            problems.append(f"{name}: {max(len(data_lines), len(labelled))} lines/series but no legend")
        problems += [f"{name}: series {pair} (points coincide; draw it differently)" for pair in hidden_series(ax)]
    return problems


def install() -> None:
    """Make every figure rendering raise ``FigureCheckError`` if ``figure_problems`` finds any."""
    from matplotlib.backend_bases import FigureCanvasBase

    if getattr(FigureCanvasBase.print_figure, "_tutorial_checked", False):
        return
    original = FigureCanvasBase.print_figure

    def print_figure(self, *args, **kwargs):
        problems = figure_problems(self.figure)
        if problems:
            raise FigureCheckError("figure fails the tutorial check: " + "; ".join(problems))
        return original(self, *args, **kwargs)

    print_figure._tutorial_checked = True
    FigureCanvasBase.print_figure = print_figure
