"""Which zero-shot tasks: their names online and offline, the default four-task set, and the
offline lm-eval task definitions that read the local zero-shot JSONL files (no network needed).

Names are checked here, before any model is loaded (:func:`resolve_task_names`,
:func:`check_zeroshot_data`); :mod:`dmx.llm.zeroshot` builds and evaluates the tasks through lm-eval.

Each YAML here is the offline twin of one stock lm-eval-harness task: same ``output_type``
(``multiple_choice``), same prompt, same continuations, same metrics, but ``dataset_path: json``
reading a file of the data directory instead of a Hugging Face hub dataset. The
``data_files`` entries in the YAMLs are paths *relative to the data directory*;
:func:`offline_task_config` turns them into absolute paths at run time, so no
data path is ever hard-coded. The comments in each YAML name the stock field they mirror;
``tests/llm/test_zeroshot_fidelity.py`` proves the prompt/continuation pairs equal the stock ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dmx.llm.data import DATA_DIR_ENV, resolve_data_dir

__all__ = ["TASK_DIR", "OFFLINE_TASK_YAMLS", "offline_task_yaml", "STOCK_TASKS", "OFFLINE_TASKS",
           "DEFAULT_TASKS_ONLINE", "DEFAULT_TASKS_OFFLINE", "available_tasks", "default_tasks",
           "resolve_task_names", "check_zeroshot_data", "zeroshot_data_dir", "offline_task_config"]

#: Folder holding the YAML files (shipped inside the ``dmx`` package).
TASK_DIR: Path = Path(__file__).resolve().parent

#: Canonical task name (the stock lm-eval name) -> YAML file of its offline twin.
OFFLINE_TASK_YAMLS: dict[str, str] = {
    "arc_easy": "arc_easy.yaml",
    "arc_challenge": "arc_challenge.yaml",
    "piqa": "piqa.yaml",
    "winogrande": "winogrande.yaml",
}


def offline_task_yaml(name: str) -> Path:
    """Path of the YAML defining the offline twin of stock task ``name``.

    Raises ``ValueError`` naming the tasks that have an offline definition.
    """
    if name not in OFFLINE_TASK_YAMLS:
        raise ValueError(
            f"no offline definition for task {name!r}; offline tasks: {sorted(OFFLINE_TASK_YAMLS)}"
        )
    return TASK_DIR / OFFLINE_TASK_YAMLS[name]


#: Stock lm-eval-harness task names supported online.
STOCK_TASKS: tuple[str, ...] = ("arc_easy", "arc_challenge", "hellaswag", "winogrande", "piqa")
#: Tasks with an offline twin in dmx/tasks (same names as the stock tasks they mirror).
OFFLINE_TASKS: tuple[str, ...] = tuple(OFFLINE_TASK_YAMLS)
#: The paper's four-task average.
DEFAULT_TASKS_ONLINE: tuple[str, ...] = ("arc_easy", "arc_challenge", "winogrande", "hellaswag")
#: Offline there is no HellaSwag; PIQA takes its place.
DEFAULT_TASKS_OFFLINE: tuple[str, ...] = ("arc_easy", "arc_challenge", "winogrande", "piqa")


def available_tasks(online: bool) -> tuple[str, ...]:
    """Task names accepted in the given mode (stock names online, offline twins otherwise)."""
    return STOCK_TASKS if online else OFFLINE_TASKS


def default_tasks(online: bool) -> tuple[str, ...]:
    """The default four-task set: HellaSwag online, PIQA in its place offline."""
    return DEFAULT_TASKS_ONLINE if online else DEFAULT_TASKS_OFFLINE


def resolve_task_names(tasks: str | Sequence[str] | None, *, online: bool) -> list[str]:
    """Normalise ``tasks`` to a validated list of task names.

    ``None``, ``"default"`` or ``["default"]`` (the CLI's ``--tasks default``) gives
    :func:`default_tasks`; a string is split on commas (the CLI form ``arc_easy,piqa``). Raises
    ``ValueError`` for an unknown or unavailable name (listing the valid ones for the mode), for
    duplicates, and for an empty list.
    """
    if tasks is None or tasks == "default" or (not isinstance(tasks, str) and list(tasks) == ["default"]):
        return list(default_tasks(online))
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise ValueError(
            f"tasks must be a non-empty list of task names (or 'default'); got {tasks!r}. "
            f"Available {'online' if online else 'offline'}: {list(available_tasks(online))}"
        )
    valid = available_tasks(online)
    for name in names:
        if name in valid:
            continue
        if not online and name in STOCK_TASKS:
            raise ValueError(
                f"task {name!r} has no local data, so it is only available online (online=True, "
                f"which downloads it from the Hugging Face hub). Offline tasks: {list(valid)}"
            )
        raise ValueError(
            f"unknown zero-shot task {name!r}. Available {'online' if online else 'offline'}: "
            f"{list(valid)} (or 'default' = {list(default_tasks(online))})"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"task(s) {duplicates} listed more than once in {names}")
    return names


def check_zeroshot_data(tasks: str | Sequence[str] | None, data_dir: str | os.PathLike | None = None, *,
                        online: bool = False) -> list[str]:
    """Validate the task names and, offline, that every task's JSONL file exists, before any model
    is loaded (``ValueError`` / ``FileNotFoundError`` as :func:`resolve_task_names` and
    :func:`offline_task_config` raise them). Returns the task names."""
    names = resolve_task_names(tasks, online=online)
    if not online:
        for name in names:
            offline_task_config(name, data_dir)
    return names


def zeroshot_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data directory through :func:`dmx.llm.data.data_dir` (argument > ``$DMX_DATA_DIR``), with
    the zero-shot context added to its error."""
    try:
        return resolve_data_dir(data_dir).resolve()
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"offline zero-shot tasks read zeroshot/*.jsonl from the data directory: {err}; or "
            f"evaluate the stock tasks online (online=True)"
        ) from err


def offline_task_config(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The lm-eval task config (a dict) of the offline twin of ``name``, bound to ``data_dir``.

    Reads ``dmx/llm/tasks/<name>.yaml`` and makes its ``data_files`` absolute under the data
    directory. Raises ``FileNotFoundError`` naming the missing JSONL path.
    """
    config = yaml.safe_load(offline_task_yaml(name).read_text(encoding="utf-8"))
    root = zeroshot_data_dir(data_dir)
    data_files = config["dataset_kwargs"]["data_files"]
    for split, relative in data_files.items():
        path = root / relative
        if not path.is_file():
            raise FileNotFoundError(
                f"data file for offline task {name!r} not found: {path}. Expected the JSONL file "
                f"{relative} under the data directory {root} (set data_dir / ${DATA_DIR_ENV}), or "
                f"evaluate the stock task online (online=True)"
            )
        data_files[split] = str(path)
    return config
