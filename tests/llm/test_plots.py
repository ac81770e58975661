"""Sweep figures drawn from synthetic result records (no model needed)."""

import importlib.util
import os
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest

from dmx.llm.plots import assignment_grid, assignment_heatmap, pareto_figure

BITS = {"mxfp4_e2m1": 4.0, "mxfp8_e4m3": 8.0}


def _points(with_acc: bool) -> list[dict]:
    pts = [
        {"method": "fp", "perplexity": 20.0},
        {"method": "uniform", "format": "mxfp4_e2m1", "avg_bits": 4.0, "perplexity": 40.0},
        {"method": "uniform", "format": "mxfp8_e4m3", "avg_bits": 8.0, "perplexity": 21.0},
        {"method": "kl", "avg_bits": 5.0, "perplexity": 30.0},
        {"method": "dmx", "avg_bits": 5.1, "perplexity": 27.0},
        {"method": "dmx", "avg_bits": float("nan"), "perplexity": 27.0},  # skipped, not drawn
    ]
    if with_acc:
        pts[4]["avg_accuracy"] = 0.41
    return pts


def test_pareto_png_one_and_two_panels(tmp_path):
    one = mpimg.imread(pareto_figure(_points(False), tmp_path / "a" / "p1.png"))
    two = mpimg.imread(pareto_figure(_points(True), tmp_path / "p2.png", title="x"))
    # A second (accuracy) panel makes the figure wider at the same height.
    assert one.shape[0] == two.shape[0]
    assert two.shape[1] > 1.5 * one.shape[1]
    # Not a blank canvas: markers/lines put non-white pixels in the image.
    assert (one[..., :3] < 0.5).any()


def test_pareto_rejects_results_without_perplexity(tmp_path):
    with pytest.raises(ValueError, match="no result has a finite perplexity"):
        pareto_figure([{"method": "kl", "avg_bits": 5.0, "perplexity": None}], tmp_path / "p.png")


def test_assignment_grid_values_and_missing_layers():
    order = ["l0", "l1", "l2"]
    grid = assignment_grid(
        {"kl@5": {"l0": "mxfp8_e4m3", "l1": "mxfp4_e2m1", "l2": "mxfp4_e2m1"}, "dmx@5": {"l1": "mxfp8_e4m3"}},
        order,
        BITS,
    )
    assert grid.dtype == np.float64
    np.testing.assert_array_equal(grid[0], [8.0, 4.0, 4.0])
    assert np.isnan(grid[1, 0]) and grid[1, 1] == 8.0 and np.isnan(grid[1, 2])


def test_assignment_grid_unknown_format_is_an_error():
    with pytest.raises(ValueError, match="mxfp6_e2m3"):
        assignment_grid({"a": {"l0": "mxfp6_e2m3"}}, ["l0"], BITS)


def test_heatmap_png_colours_follow_bits(tmp_path):
    names = [f"model.layers.{i}.mlp.{p}" for i in range(4) for p in ("gate_proj", "up_proj")]
    high_first = {n: ("mxfp8_e4m3" if k < 4 else "mxfp4_e2m1") for k, n in enumerate(names)}
    path = assignment_heatmap({"kl@6": high_first}, tmp_path / "h.png", format_bits=BITS)
    img = mpimg.imread(path)[..., :3]
    # Sample the middle row of the image: the left (high) and right (low) halves of the one
    # heat-map row must have different colours.
    row = img[img.shape[0] // 2]
    dark = row[(row.sum(axis=1) < 2.9)]  # drop white margins
    assert len(np.unique(np.round(dark, 2), axis=0)) >= 2


def test_heatmap_needs_assignments(tmp_path):
    with pytest.raises(ValueError, match="no assignments"):
        assignment_heatmap({}, tmp_path / "h.png", format_bits=BITS)


def test_import_and_drawing_leave_the_backend_alone(tmp_path):
    """A notebook's inline backend survives importing dmx.llm.plots and drawing (fresh interpreter:
    this process may have chosen its backend already)."""
    inline = importlib.util.find_spec("matplotlib_inline") is not None
    backend = "module://matplotlib_inline.backend_inline" if inline else "svg"
    script = (
        "import sys, matplotlib\n"
        "before = matplotlib.get_backend()\n"
        "import dmx.llm.plots\n"
        f"dmx.llm.plots.pareto_figure([{{'method': 'fp', 'perplexity': 20.0}}], {str(tmp_path / 'p.png')!r})\n"
        "print(before, '|', matplotlib.get_backend(), '|', 'matplotlib.pyplot' in sys.modules)\n"
    )
    env = {**os.environ, "MPLBACKEND": backend}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    before, after, pyplot_loaded = (part.strip() for part in out.stdout.split("|"))
    assert before == after == backend
    assert pyplot_loaded == "False"
    assert (tmp_path / "p.png").stat().st_size > 0


def _study_points() -> list[dict]:
    """A Pareto study's points: every method the study draws, seeds as groups, both metrics."""
    pts = [{"method": "fp", "perplexity": 19.85, "avg_accuracy": 0.4713}]
    for target in (4.5, 5.0, 6.0, 7.0):
        pts += [{"method": m, "target": target, "avg_bits": target, "perplexity": 20 + k + seed + 10 / target,
                 "avg_accuracy": 0.40 + 0.01 * k + 0.002 * seed}
                for k, m in enumerate(("dmx", "kl", "random", "kl_learned_rotation")) for seed in range(3)]
    pts += [{"method": "uniform", "format": f, "avg_bits": b, "perplexity": p, "avg_accuracy": 0.45}
            for f, b, p in (("mxfp4_e2m1", 4.0, 150.0), ("mxfp6_e2m3", 6.0, 21.8), ("mxfp8_e4m3", 8.0, 21.9))]
    return pts


@pytest.mark.parametrize("with_acc", [False, True])
def test_the_legends_fit_in_the_saved_figure_and_do_not_overlap(tmp_path, with_acc):
    """Every legend entry is readable in the PNG: each legend lies inside the figure (not cut at its
    edges) and the two panels' legends do not cover each other."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from dmx.llm.plots import draw_pareto

    points = _study_points() if with_acc else [{k: v for k, v in p.items() if k != "avg_accuracy"}
                                               for p in _study_points()]
    fig = draw_pareto(points, title="smollm2-135m: WikiText-2 test, windows 32-63 of 2048 tokens")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == (2 if with_acc else 1)
    boxes = [legend.get_window_extent(renderer) for legend in legends]
    for box in boxes:
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0, (box, fig.bbox)
    if with_acc:
        assert not boxes[0].overlaps(boxes[1]), boxes
    labels = [text.get_text() for text in legends[0].get_texts()]
    for label in ("dMX (mean, min-max over seeds)", "KL heuristic (mean, min-max over calibration draws)",
                  "random control (mean, min-max over draws)"):  # each method's repeats by the study's name
        assert label in labels, labels


def test_the_accuracy_axis_names_how_many_questions_each_point_answered():
    """A figure of the first 200 questions of each task must not read as every question."""
    from dmx.llm.plots import accuracy_label

    def points(*limits):
        return [{"avg_accuracy": 0.4, "accuracy_settings": {"tasks": ["piqa"], "limit": n}} for n in limits]

    assert accuracy_label(points(200, 200)).endswith("(first 200 questions of each task)")
    assert accuracy_label(points(None)).endswith("(every question of each task)")
    assert "differ" in accuracy_label(points(200, None))
    assert accuracy_label([{"avg_accuracy": 0.4}]) == "average zero-shot accuracy"  # settings not recorded
    unanswered = {"avg_accuracy": None, "accuracy_settings": {"limit": 5}}  # no accuracy: not counted
    assert accuracy_label(points(200) + [unanswered]).endswith("(first 200 questions of each task)")

