"""Build-time check that every figure a tutorial renders can be read without its source code.

``figure_problems(fig)`` lists what a reader would miss on one matplotlib figure:

* an axes (with its axis lines shown) without an x label or a y label — unless it shares that
  axis with a neighbouring axes that carries the label (``sharey=True`` panels in a row);
* an axes that draws two or more data lines (more than two points each, so reference lines drawn
  with ``axhline``/``axvline`` do not count) or two or more labelled artists, without a legend:
  the reader could not tell the lines apart.

``install()`` wraps ``FigureCanvasBase.print_figure``, the one call through which every figure is
rendered (IPython's inline display and ``savefig`` alike), so that rendering a figure with a
problem raises ``FigureCheckError``. ``tutorials/build.py`` runs ``install()`` in the notebook
kernel when the kernel starts (outside any cell, so the notebooks' cells stay those of their
sources) and fails the build on any error output, so a notebook with an unlabelled plot cannot be
built or pass ``tests/test_tutorials.py``.
"""

from __future__ import annotations

__all__ = ["FigureCheckError", "figure_problems", "install"]


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
