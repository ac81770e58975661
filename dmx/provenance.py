"""What a written file records about how it was made: software versions, the model it came from,
and for a benchmark's results the run itself (:func:`run_provenance`).

One home for the records that assignments (``dmx calibrate``, ``dmx kl``, the sweep), the
sweep's points, exported models and benchmark results carry, so every file names its model and
versions with the same keys. Files written before keep being read: these functions only ever add keys.

The dMX core (``dmx.calibrate``) records :func:`software_versions`, so this module imports
nothing of the LLM side (models, rotation, data); :class:`dmx.llm.pipeline.ModelSpec` knows its
model's note itself.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy
import torch

import mx_spec

if TYPE_CHECKING:
    from dmx.llm.pipeline import ModelSpec

__all__ = ["software_versions", "model_provenance", "token_hash", "run_provenance"]


def _installed_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def software_versions() -> dict[str, str]:
    """``{"dmx", "mx_spec", "torch", "transformers", "numpy", "python"}`` versions (the union of
    the keys assignments and export manifests recorded before; ``unknown`` when not installed).

    transformers is looked up in the package metadata, not imported: the dMX core records it
    without loading the library.
    """
    return {"dmx": _installed_version("dmx-reference"), "mx_spec": getattr(mx_spec, "__version__", "unversioned"),
            "torch": torch.__version__, "transformers": _installed_version("transformers"),
            "numpy": numpy.__version__, "python": platform.python_version()}


def model_provenance(spec: ModelSpec) -> dict[str, Any]:
    """``model``, ``model_note`` (what the embedded model is; None otherwise), ``dtype``,
    ``include_lm_head`` of ``spec``: the model an assignment or a sweep point was made on."""
    return {"model": spec.model, "model_note": spec.model_note, "dtype": spec.dtype,
            "include_lm_head": spec.include_lm_head}


def token_hash(token_ids: torch.Tensor) -> str:
    """sha256 (hex) of the int64 token ids: identifies calibration/evaluation data in provenance."""
    array = token_ids.detach().to("cpu", torch.int64).contiguous().numpy()
    return hashlib.sha256(array.tobytes()).hexdigest()


def _git_state(where: Path) -> dict[str, Any]:
    """``{"commit", "uncommitted"}`` of the git checkout at ``where``: its short commit and the
    tracked files that differ from it (``unknown`` outside a git checkout)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True,
                                text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                 capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown"}
    return {"commit": commit, "uncommitted": sorted(line[3:] for line in changed)}


def run_provenance(script: str, argv: Sequence[str]) -> dict[str, Any]:
    """How a benchmark's results file was made: the command, the commit of the ``dmx`` that ran
    and its uncommitted tracked files, the date, the machine and its load when the run started (a
    loaded machine inflates absolute times; ratios measured side by side in one run are what the
    documentation compares)."""
    return {"command": " ".join(["python", script, *argv]), **_git_state(Path(__file__).resolve().parent),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "load_average_1min_at_start": round(os.getloadavg()[0], 2), "software": software_versions()}
