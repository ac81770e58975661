"""Zero-shot multiple-choice reasoning accuracy through lm-eval-harness.

The engine is lm-eval-harness itself: the (possibly fake-quantised) Hugging Face model is wrapped
in ``lm_eval.models.huggingface.HFLM`` and every task is a stock lm-eval ``multiple_choice`` task
(0-shot; metrics ``acc`` and, where the stock task defines it, ``acc_norm``, each with lm-eval's
standard error ``sqrt(var / n)`` of the per-document 0/1 scores).

Two task sources
----------------
* ``online=True``: the stock tasks ``arc_easy``, ``arc_challenge``, ``hellaswag``, ``winogrande``
  and ``piqa``, loaded by name through lm-eval's ``TaskManager`` (they download their datasets from
  the Hugging Face hub).
* ``online=False`` (default): the project's offline twins in :mod:`dmx.llm.tasks` (``arc_easy``,
  ``arc_challenge``, ``piqa``, ``winogrande``) reading ``<data dir>/zeroshot/<task>.jsonl``; the data
  directory is the ``data_dir`` argument, else ``$DMX_DATA_DIR``. HellaSwag has no local copy.

Default four-task average (the paper's set): ARC-Easy, ARC-Challenge, WinoGrande and HellaSwag
online; PIQA replaces HellaSwag offline (task names and offline definitions: :mod:`dmx.llm.tasks`).
The result always lists the tasks that made up the average, and :func:`results_table` prints
them under the table.

Averages: ``acc`` is the mean of the tasks' ``acc``; ``acc_norm`` is the mean of the tasks'
``acc_norm`` where WinoGrande, which has no ``acc_norm`` (lm-eval would divide by the length of
its alternative *contexts*, which is meaningless; the stock task therefore reports ``acc`` only),
contributes its ``acc`` -- the result says so in ``average["acc_norm_uses_acc_for"]``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmx.llm.data import DATA_DIR_ENV
from dmx.files import atomic_write_text, read_json, settings_digest, sha256_file
from dmx.llm.tasks import OFFLINE_TASKS, offline_task_config, resolve_task_names, zeroshot_data_dir

__all__ = [
    "build_tasks",
    "checkpoint_file",
    "evaluate_zeroshot",
    "average_accuracy",
    "results_table",
]

CHECKPOINT_FORMAT = "dmx-zeroshot-checkpoint/1"
_METRICS = ("acc", "acc_norm")


# ----------------------------------------------------------------------------- task objects


def build_tasks(
    names: Sequence[str], *, online: bool, data_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """``{name: lm_eval Task}`` for validated ``names`` (see :func:`resolve_task_names`).

    Online the stock tasks come from lm-eval's ``TaskManager`` by name; offline each task is a
    ``ConfigurableTask`` built from :func:`offline_task_config`.
    """
    if online:
        from lm_eval.tasks import TaskManager

        try:
            loaded = TaskManager().load(list(names))["tasks"]
        except (ConnectionError, OSError) as err:  # datasets' hub errors derive from these
            raise ConnectionError(
                f"could not load the stock lm-eval task(s) {list(names)} from the Hugging Face hub "
                f"({err}); without network access evaluate offline instead (online=False, "
                f"data_dir/${DATA_DIR_ENV}; offline tasks: {list(OFFLINE_TASKS)})"
            ) from err
        return {name: loaded[name] for name in names}
    from lm_eval.api.task import ConfigurableTask

    configs = {name: offline_task_config(name, data_dir) for name in names}
    return {name: ConfigurableTask(config=cfg) for name, cfg in configs.items()}


def _check_limit(limit: int | None, sizes: dict[str, int]) -> None:
    """Reject a non-positive limit, or one larger than a task's evaluation split."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(
            f"limit must be a positive whole number of documents per task (or None for all); got "
            f"{limit!r}"
        )
    too_small = {name: n for name, n in sizes.items() if limit > n}
    if too_small:
        detail = ", ".join(f"{name} has {n}" for name, n in too_small.items())
        raise ValueError(
            f"limit={limit} is larger than the evaluation split ({detail} documents); use "
            f"limit <= {min(too_small.values())} or limit=None to evaluate every document"
        )


# ----------------------------------------------------------------------------- results


def _per_document(samples: list[dict]) -> list[dict]:
    """Per-document record from lm-eval's logged samples: the (context, continuation) requests,
    their log-likelihoods (sum over continuation tokens) and the 0/1 scores."""
    return [
        {
            "doc_id": int(s["doc_id"]),
            "requests": [list(args) for args in s["arguments"]],
            "loglikelihoods": [float(resp[0]) for resp in s["filtered_resps"]],
            **{metric: float(s[metric]) for metric in _METRICS if metric in s},
        }
        for s in sorted(samples, key=lambda s: s["doc_id"])
    ]


def _task_summary(name: str, task: Any, lm_eval_results: dict, *, online: bool) -> dict:
    """acc / acc_norm (+ stderr) of one task from lm-eval's result dict, with provenance
    (and the per-document records when lm-eval logged samples)."""
    task_name = task.config.task
    metrics = lm_eval_results["results"][task_name]
    summary: dict[str, Any] = {}
    for metric in _METRICS:
        value = metrics.get(f"{metric},none")
        stderr = metrics.get(f"{metric}_stderr,none")
        summary[metric] = None if value is None else float(value)
        summary[f"{metric}_stderr"] = None if stderr in (None, "N/A") else float(stderr)
    summary["n_docs"] = int(lm_eval_results["n-samples"][task_name]["effective"])
    summary["source"] = "online" if online else "offline"
    summary["lm_eval_task"] = task_name
    if online:
        summary["dataset"] = str(task.config.dataset_path)
    else:
        data_file = Path(task.config.dataset_kwargs["data_files"]["test"])
        summary["data_file"] = str(data_file)
        summary["data_sha256"] = sha256_file(data_file)
    if lm_eval_results.get("samples"):
        summary["documents"] = _per_document(lm_eval_results["samples"][task_name])
    return summary


def average_accuracy(per_task: dict[str, dict]) -> dict[str, Any]:
    """Average acc and acc_norm over the tasks in ``per_task`` and name those tasks.

    ``acc`` is the plain mean of the tasks' ``acc``. ``acc_norm`` is the mean of the tasks'
    ``acc_norm``, taking ``acc`` for a task that has none (WinoGrande); those tasks are listed in
    ``acc_norm_uses_acc_for``.
    """
    if not per_task:
        raise ValueError("cannot average over zero tasks")
    names = list(per_task)
    accs = [per_task[n]["acc"] for n in names]
    norms = [per_task[n]["acc_norm"] if per_task[n]["acc_norm"] is not None else per_task[n]["acc"]
             for n in names]
    return {
        "tasks": names,
        "acc": sum(accs) / len(accs),
        "acc_norm": sum(norms) / len(norms),
        "acc_norm_uses_acc_for": [n for n in names if per_task[n]["acc_norm"] is None],
    }


def _fmt(value: float | None, scale: float = 100.0) -> str:
    return "—" if value is None else f"{value * scale:.1f}"


def results_table(results: dict) -> str:
    """Markdown table of a :func:`evaluate_zeroshot` result (percent), naming the average's tasks."""
    lines = [
        "| task | source | docs | acc (%) | ± | acc_norm (%) | ± |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["tasks"].items():
        lines.append(
            f"| {name} | {row['source']} | {row['n_docs']} | {_fmt(row['acc'])} | "
            f"{_fmt(row['acc_stderr'])} | {_fmt(row['acc_norm'])} | {_fmt(row['acc_norm_stderr'])} |"
        )
    avg = results["average"]
    lines.append(f"| **average** | | | **{_fmt(avg['acc'])}** | | **{_fmt(avg['acc_norm'])}** | |")
    note = f"\nAverage over {len(avg['tasks'])} tasks: {', '.join(avg['tasks'])}"
    if avg["acc_norm_uses_acc_for"]:
        note += f" (acc_norm average uses acc for {', '.join(avg['acc_norm_uses_acc_for'])})"
    config = results["config"]
    note += (f"; 0-shot, limit={config['limit']}, "
             f"{'online stock tasks' if config['online'] else 'offline tasks (dmx/tasks)'}.")
    return "\n".join(lines) + "\n" + note + "\n"


# ----------------------------------------------------------------------------- checkpoint


def checkpoint_file(folder: str | os.PathLike, stem: str, identity: Any) -> Path:
    """Where in ``folder`` the zero-shot checkpoint of one model lives: ``<stem>-<hash>.json``, the
    hash of ``identity`` (JSON: whatever tells that model apart, e.g. its formats and rotation), so
    another model, or the same one under other settings, never resumes from it."""
    return Path(folder) / f"{stem}-{settings_digest(identity)}.json"


def _load_checkpoint(path: Path | None, settings: dict, *, restart_unusable: bool = False) -> dict[str, dict]:
    """Per-task summaries already computed under the same settings (empty if none). A checkpoint
    that cannot be used (corrupt, or other settings) raises naming the fix, or with
    ``restart_unusable`` is reported and ignored (the tasks run afresh and overwrite it)."""
    if path is None or not path.exists():
        return {}
    try:
        saved = read_json(path, what="zero-shot checkpoint",
                          fix="delete it (or pass another checkpoint path) to start afresh")
        if not (isinstance(saved, dict) and saved.get("format") == CHECKPOINT_FORMAT
                and isinstance(saved.get("tasks"), dict)):
            raise ValueError(f"{path} is not a zero-shot checkpoint ({CHECKPOINT_FORMAT}); pass another "
                             "checkpoint path or delete the file")
        if saved.get("settings") != settings:
            raise ValueError(
                f"checkpoint {path} was written with different settings ({saved.get('settings')}) than "
                f"this run ({settings}); pass another checkpoint path or delete the file"
            )
    except ValueError as err:
        if not restart_unusable:
            raise
        print(f"zero-shot: ignoring an unusable checkpoint, answering every task afresh ({err})", file=sys.stderr)
        return {}
    return saved["tasks"]


# ----------------------------------------------------------------------------- evaluation


def evaluate_zeroshot(
    model: Any,
    tokenizer: Any,
    *,
    tasks: str | Sequence[str] | None,
    limit: int | None = None,
    batch_size: int | str = 8,
    data_dir: str | os.PathLike | None = None,
    online: bool = False,
    checkpoint: str | os.PathLike | None = None,
    restart_unusable_checkpoint: bool = False,
    return_documents: bool = False,
) -> dict:
    """0-shot accuracy of ``model`` on ``tasks`` through lm-eval-harness.

    ``model`` is an instantiated Hugging Face causal LM (its ``nn.Linear`` layers may be replaced
    by DMXLinear wrappers; the forward API is all that is used); it is wrapped as
    ``HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)`` and evaluated in eval
    mode (its previous train/eval mode is restored afterwards). ``tasks``: names (see
    :func:`dmx.llm.tasks.available_tasks`), a comma-separated string, or ``None``/``"default"`` for the default
    four. ``limit``: the first ``limit`` documents of each task (must not exceed any task's
    split). ``data_dir``: offline data directory (else ``$DMX_DATA_DIR``). ``checkpoint``: optional
    JSON path written atomically after every task; rerunning with the same path and settings
    skips the tasks already there (the file belongs to one model: use one path per model); a
    checkpoint that cannot be used (corrupt, other settings) raises naming the fix, or with
    ``restart_unusable_checkpoint`` (a caller's own private file) is reported and replaced.
    ``return_documents``: also return, per task, ``documents`` = one record per document with
    its requests, their log-likelihoods and its 0/1 acc / acc_norm (for paired comparisons
    between models).

    Returns ``{"tasks": {name: {acc, acc_stderr, acc_norm, acc_norm_stderr, n_docs, source,
    lm_eval_task, data_file + data_sha256 | dataset, seconds[, documents]}}, "average": {tasks, acc, acc_norm,
    acc_norm_uses_acc_for}, "config": {...}}``; ``acc_norm`` (and its stderr) is ``None`` for
    WinoGrande, as in the stock task.
    """
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from tqdm.auto import tqdm

    names = resolve_task_names(tasks, online=online)
    if not (batch_size == "auto" or (isinstance(batch_size, int) and not isinstance(batch_size, bool)
                                     and batch_size >= 1)):
        raise ValueError(f"batch_size must be a positive integer or 'auto'; got {batch_size!r}")
    if limit is not None:
        _check_limit(limit, {})  # type/positivity before any loading work
    task_objects = build_tasks(names, online=online, data_dir=data_dir)
    _check_limit(limit, {name: len(task.eval_docs) for name, task in task_objects.items()})

    settings = {"tasks_source": "online" if online else "offline", "limit": limit, "num_fewshot": 0,
                "documents": return_documents}
    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    done = _load_checkpoint(checkpoint_path, settings, restart_unusable=restart_unusable_checkpoint)

    per_task: dict[str, dict] = {}
    was_training = model.training
    model.eval()
    try:
        lm = None
        for name in names:
            if name in done:
                per_task[name] = done[name]
                tqdm.write(f"zero-shot {name}: reusing the result in {checkpoint_path}")
                continue
            if lm is None:
                lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            tqdm.write(f"zero-shot {name}: {limit or len(task_objects[name].eval_docs)} documents")
            started = time.perf_counter()
            raw = simple_evaluate(
                model=lm,
                tasks=[task_objects[name]],
                num_fewshot=0,
                limit=limit,
                log_samples=return_documents,
                task_manager=TaskManager(include_defaults=False),
                # 0-shot multiple choice draws no random numbers; lm-eval's default would
                # reseed the caller's global random/numpy/torch generators (e.g. mid-sweep).
                random_seed=None,
                numpy_random_seed=None,
                torch_random_seed=None,
            )
            per_task[name] = _task_summary(name, task_objects[name], raw, online=online)
            per_task[name]["seconds"] = round(time.perf_counter() - started, 1)
            if checkpoint_path is not None:
                payload = {"format": CHECKPOINT_FORMAT, "settings": settings,
                           "tasks": {**done, **per_task}}
                atomic_write_text(checkpoint_path, json.dumps(payload, indent=2) + "\n")
    finally:
        model.train(was_training)

    return {
        "tasks": per_task,
        "average": average_accuracy(per_task),
        "config": {
            "online": online,
            "limit": limit,
            "num_fewshot": 0,
            "batch_size": batch_size,
            "lm_eval_version": lm_eval.__version__,
            "data_dir": None if online else str(zeroshot_data_dir(data_dir)),
        },
    }
