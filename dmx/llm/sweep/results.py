"""The sweep's result store: ``results.json`` (schema ``dmx.sweep/1``), ``results.csv``,
``summary.csv`` and where the assignments go, apart from running the sweep (:mod:`dmx.llm.sweep.run`)."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
from contextlib import contextmanager
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dmx.files import atomic_write_text, exists_or_previous, read_json, read_json_or_previous

__all__ = ["RESULTS_SCHEMA", "CSV_COLUMNS", "SUMMARY_COLUMNS", "ResultStore", "points_to_csv", "summarize_points",
           "summary_to_csv", "assignment_file", "file_stem", "copy_points", "ACCURACY_FIELDS"]

RESULTS_SCHEMA = "dmx.sweep/1"
CSV_COLUMNS = (
    "method",
    "label",
    "target",
    "seed",
    "format",
    "avg_bits",
    "storage_bits",
    "perplexity",
    "avg_accuracy",
    "seconds",
)


def points_to_csv(points: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of sweep points: ``CSV_COLUMNS`` then ``acc_<task>`` columns (sorted)."""
    tasks = sorted({t for p in points for t in (p.get("accuracy") or {})})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*CSV_COLUMNS, *(f"acc_{t}" for t in tasks)])
    for p in points:
        acc = p.get("accuracy") or {}
        w.writerow(
            [_csv_cell(p.get(c)) for c in CSV_COLUMNS] + [_csv_cell(acc.get(t)) for t in tasks]
        )
    return buf.getvalue()


SUMMARY_COLUMNS = ("method", "target", "format", "n", "seeds", "avg_bits", "perplexity_mean", "perplexity_std",
                   "perplexity_min", "perplexity_max")


def summarize_points(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, target, format): the points' seeds reduced to mean/std/min/max of perplexity.

    ``std`` is the sample standard deviation (``n - 1``; 0 for one point); ``avg_bits`` is the
    mean of the points' bits. Rows keep the order in which their first point appears.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for p in points:
        if p.get("perplexity") is None:
            continue
        groups.setdefault((p["method"], p.get("target"), p.get("format")), []).append(p)
    rows = []
    for (method, target, fmt), pts in groups.items():
        ppl = np.array([float(p["perplexity"]) for p in pts])
        bits = [p["avg_bits"] for p in pts if p.get("avg_bits") is not None]
        rows.append({
            "method": method, "target": target, "format": fmt, "n": len(pts),
            "seeds": [p.get("seed") for p in pts],
            "avg_bits": float(np.mean(bits)) if bits else None,
            "perplexity_mean": float(ppl.mean()),
            "perplexity_std": float(ppl.std(ddof=1)) if len(pts) > 1 else 0.0,
            "perplexity_min": float(ppl.min()), "perplexity_max": float(ppl.max()),
        })
    return rows


def summary_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of :func:`summarize_points` rows (seeds joined by spaces)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for r in rows:
        w.writerow([" ".join(str(s) for s in r["seeds"]) if c == "seeds" else _csv_cell(r[c]) for c in SUMMARY_COLUMNS])
    return buf.getvalue()


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


@dataclass
class ResultStore:
    """The sweep's ``results.json`` / ``results.csv`` pair in ``out_dir``.

    ``config`` identifies what the points were measured on (model, data, evaluation settings);
    reopening a directory whose stored config differs raises ValueError, so points measured
    under other settings are never mixed into one table."""

    out_dir: Path
    config: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, out_dir: str | os.PathLike, config: Mapping[str, Any]) -> "ResultStore":
        out = Path(out_dir)
        config = json.loads(json.dumps(dict(config), sort_keys=True))
        path = out / "results.json"
        if not exists_or_previous(path):
            return cls(out_dir=out, config=config)
        # a corrupt results.json falls back to the version before the last point (results.json.prev)
        doc = read_json_or_previous(path, what="sweep result file", fix="move it away to start the sweep afresh")
        if doc.get("schema") != RESULTS_SCHEMA:
            raise ValueError(f"{path} is not a dmx sweep result (schema {doc.get('schema')!r})")
        # Before accuracy became per point, the zero-shot tasks/limit were part of the identity.
        stored = {k: v for k, v in doc.get("config", {}).items() if k not in ("tasks", "limit")}
        if stored != config:
            diff = sorted(k for k in set(config) | set(stored) if config.get(k) != stored.get(k))
            raise ValueError(
                f"{path} was measured with other settings (differs in: {', '.join(diff)}); "
                "use another out=DIR or the same settings to resume"
            )
        return cls(out_dir=out, config=config, points=list(doc.get("points", [])))

    def get(self, key: str) -> dict[str, Any] | None:
        return next((p for p in self.points if p["key"] == key), None)

    def add(self, point: Mapping[str, Any]) -> None:
        """Add the point (a point with the same ``point["key"]`` is replaced in place, so the
        table keeps its order) and rewrite both files atomically.

        The points on disk are re-read under a lock first, so two sweeps of the same
        configuration writing into one folder (one scoring KL while the other calibrates dMX, say)
        keep each other's points instead of overwriting them."""
        with self._locked():
            self._merge_from_disk()
            keys = [p["key"] for p in self.points]
            if point["key"] in keys:
                self.points[keys.index(point["key"])] = dict(point)
            else:
                self.points.append(dict(point))
            self.save()

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        doc = {"schema": RESULTS_SCHEMA, "config": self.config, "points": self.points}
        atomic_write_text(self.out_dir / "results.json", json.dumps(doc, indent=1, allow_nan=True), keep_previous=True)
        atomic_write_text(self.out_dir / "results.csv", points_to_csv(self.points))
        atomic_write_text(self.out_dir / "summary.csv", summary_to_csv(summarize_points(self.points)))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive advisory lock on ``<out_dir>/results.json.lock`` (held while rewriting)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "results.json.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _merge_from_disk(self) -> None:
        """Take in the points another process stored or updated since this store was opened (the
        file's points first, in their order, as the file holds them; points only this store holds
        keep their place after them). The file wins: every point this store wrote is in it, and a
        point another process updated (zero-shot accuracy added to a finished point, say) is newer
        there than the copy this store loaded when it opened."""
        path = self.out_dir / "results.json"
        if not exists_or_previous(path):
            return
        doc = read_json_or_previous(path, what="sweep result file", fix="move it away to start the sweep afresh")
        theirs = list(doc.get("points", []))
        on_disk = {p["key"] for p in theirs}
        self.points = theirs + [p for p in self.points if p["key"] not in on_disk]


#: What a point holds about its zero-shot accuracy (dropped when it is copied to answer other questions).
ACCURACY_FIELDS = ("accuracy_settings", "accuracy_documents", "accuracy_seconds")


def copy_points(points_from: str | os.PathLike, dest: str | os.PathLike, keys: Sequence[str],
                config: Mapping[str, Any]) -> list[str]:
    """Copy the points ``keys`` that the sweep folder ``points_from`` has finished into the sweep folder
    ``dest`` (both of sweep identity ``config``), with their assignments and the rotation files
    beside them, but without their zero-shot accuracy: a sweep into ``dest`` with other zero-shot
    settings (every question instead of the first 200, say) answers them without recomputing
    their perplexity, calibration or KL scores, and ``points_from`` keeps its own accuracy. Points
    ``dest`` already holds are left as they are (a rerun keeps what was measured there). Returns
    the keys copied; ValueError before copying anything when either folder has other settings."""
    src, dst = Path(points_from), Path(dest)
    if not exists_or_previous(src / "results.json"):
        raise ValueError(f"points_from={src} holds no sweep results (results.json); run that sweep first")
    try:
        there = ResultStore.open(src, config)
    except ValueError as err:
        raise ValueError(f"points_from={src}: its points were measured with other settings than this sweep's; "
                         f"pass the settings it ran with ({err})") from err
    here = ResultStore.open(dst, config)
    copied = []
    for key in keys:
        point = there.get(key)
        if point is None or here.get(key) is not None:
            continue
        assignment = assignment_file(src, key)
        # copyfile, not copy2: the copies take the user's umask; the point is stored after its files,
        # so an interrupted copy is redone on rerun
        if assignment.exists():
            (dst / "assignments").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(assignment, assignment_file(dst, key))
            rotation = read_json(assignment, what="assignment", fix="rerun that sweep's point").get(
                "provenance", {}).get("rotation_file")
            if rotation and (assignment.parent / rotation).exists():  # else the sweep names the missing file
                shutil.copyfile(assignment.parent / rotation, dst / "assignments" / rotation)
        here.add({**{k: v for k, v in point.items() if k not in ACCURACY_FIELDS}, "accuracy": {},
                  "avg_accuracy": None})
        copied.append(key)
    return copied


def file_stem(label: str) -> str:
    """A point's label as a file name: ``dmx@5:s1`` -> ``dmx_at_5_s1``."""
    return label.replace("@", "_at_").replace(":", "_")


def assignment_file(out: Path, label: str) -> Path:
    """Where the sweep in ``out`` writes the assignment of its point ``label``."""
    return out / "assignments" / f"{file_stem(label)}.json"
