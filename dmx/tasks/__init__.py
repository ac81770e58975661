"""lm-eval task definitions that read the local zero-shot JSONL files (no network needed).

Each YAML here is the offline twin of one stock lm-eval-harness task: same ``output_type``
(``multiple_choice``), same prompt, same continuations, same metrics, but ``dataset_path: json``
reading a file of the data directory instead of a Hugging Face hub dataset. The
``data_files`` entries in the YAMLs are paths *relative to the data directory*;
:func:`dmx.zeroshot.offline_task_config` turns them into absolute paths at run time, so no
data path is ever hard-coded. The comments in each YAML name the stock field they mirror;
``tests/test_zeroshot_fidelity.py`` proves the prompt/continuation pairs equal the stock ones.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TASK_DIR", "OFFLINE_TASK_YAMLS", "offline_task_yaml"]

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
