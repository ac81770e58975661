"""Draw the budget study: dMX perplexity at 5 bits against its calibration tokens, KL and random beside.

Reads the headline sweep (KL, the random control, dMX at the headline budget) and every sweep
folder under ``--study`` (dMX at other budgets, the same test windows), writes ``--out`` (PNG)
and ``<out stem>.json`` (one row per budget: steps, windows per step, tokens, perplexity mean,
min, max, seeds). Run by ``benchmarks/budget_study.sh``; needs no model.

    python benchmarks/budget_study.py --headline results/headline_5bit --study results/budget_study
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure

from dmx.files import atomic_write_text, read_json
from dmx.llm.sweep.results import summarize_points

TARGET = 5.0
#: The calibration defaults the sweeps under results/ were run with (CalibrationConfig before
#: issue #14 moved them to 40 steps of 2 windows): a point that does not store one of these
#: settings was calibrated with this value. Points written since store steps and batch size
#: (dmx.llm.sweep.config.RECORDED_DEFAULTS), so this never applies to them.
DEFAULTS_OF_STORED_POINTS = {"steps": 60, "batch_size": 1, "grad_accum": 1}


def budget_rows(folders: list[Path]) -> list[dict]:
    """One row per dMX budget found in ``folders`` (points at ``TARGET`` only)."""
    rows = []
    for folder in folders:
        doc = read_json(folder / "results.json", what="sweep result file", fix="rerun the sweep that writes it")
        dmx = [p for p in doc["points"] if p["method"] == "dmx" and p.get("target") == TARGET]
        if not dmx:
            continue
        s = dmx[0]["settings"]
        # a setting left at its default was not stored with the point (DEFAULTS_OF_STORED_POINTS)
        calibration = {**DEFAULTS_OF_STORED_POINTS, **s["calibration"]}
        steps = calibration["steps"]
        per_step = calibration["batch_size"] * calibration["grad_accum"]
        (summary,) = summarize_points(dmx)
        rows.append({"folder": str(folder), "steps": steps, "windows_per_step": per_step,
                     "tokens": steps * per_step * s["calib_seqlen"], "avg_bits": summary["avg_bits"],
                     "perplexity_mean": summary["perplexity_mean"], "perplexity_min": summary["perplexity_min"],
                     "perplexity_max": summary["perplexity_max"], "seeds": summary["seeds"],
                     "test_windows": doc["config"]["max_windows"]})
    return sorted(rows, key=lambda r: r["tokens"])


def reference_rows(headline: Path) -> dict[str, dict]:
    """KL and random at ``TARGET`` from the headline sweep, as summary rows."""
    doc = read_json(headline / "results.json", what="sweep result file", fix="run benchmarks/headline.sh")
    return {r["method"]: r for r in summarize_points(doc["points"])
            if r["method"] in ("kl", "random") and r["target"] == TARGET}


def draw(rows: list[dict], refs: dict[str, dict], path: Path) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    x = [r["tokens"] for r in rows]
    y = [r["perplexity_mean"] for r in rows]
    lo = [r["perplexity_mean"] - r["perplexity_min"] for r in rows]
    hi = [r["perplexity_max"] - r["perplexity_mean"] for r in rows]
    ax.errorbar(x, y, yerr=[lo, hi], marker="o", color="tab:blue", capsize=3, label="dMX (mean, min-max over seeds)")
    for r in rows:
        ax.annotate(f"{r['steps']}x{r['windows_per_step']}", (r["tokens"], r["perplexity_mean"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=7)
    styles = {"kl": ("tab:orange", "KL heuristic"), "random": ("tab:red", "random control (mean)")}
    for method, row in refs.items():
        color, label = styles[method]
        ax.axhline(row["perplexity_mean"], color=color, linestyle="--", label=f"{label}: {row['perplexity_mean']:.2f}")
        if row["n"] > 1:
            ax.axhspan(row["perplexity_min"], row["perplexity_max"], color=color, alpha=0.1)
    ax.set_xscale("log")
    ax.set_xlabel("calibration tokens (steps x windows per step x 256)")
    ax.set_ylabel(f"WikiText-2 perplexity ({rows[0]['test_windows'] if rows else '?'} x 2048 windows)")
    ax.set_title("dMX at 5 bits (budget rounding) vs calibration budget")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--headline", type=Path, required=True, help="the headline sweep folder")
    parser.add_argument("--study", type=Path, required=True, help="folder holding one sweep folder per budget")
    parser.add_argument("--out", type=Path, default=None, help="figure path (default: <study>/budget.png)")
    args = parser.parse_args()
    out = args.out or args.study / "budget.png"
    folders = [args.headline] + sorted(p for p in args.study.iterdir() if (p / "results.json").is_file())
    rows, refs = budget_rows(folders), reference_rows(args.headline)
    draw(rows, refs, out)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"target_bits": TARGET, "budgets": rows,
                                                            "references": refs}, indent=1))
    for r in rows:
        print(f"{r['steps']:>4} steps x {r['windows_per_step']} windows ({r['tokens']:>8} tokens): "
              f"dMX {r['perplexity_mean']:.2f} [{r['perplexity_min']:.2f}, {r['perplexity_max']:.2f}] at {r['avg_bits']:.2f} bits")
    for m, r in refs.items():
        print(f"{m}: {r['perplexity_mean']:.2f} (n={r['n']})")
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
