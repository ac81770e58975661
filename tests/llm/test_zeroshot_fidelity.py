"""The offline tasks in dmx/tasks build the same lm-eval requests as the stock lm-eval tasks.

The stock side is the *installed* lm-eval YAML of each task (its doc_to_text / doc_to_choice /
doc_to_target, WinoGrande's preprocess_winogrande.py functions), untouched except that its data
source is swapped for a JSON file holding hand-written documents in the Hugging Face schema
(tests/fixtures/zeroshot/stock_docs.json). The offline side reads the same documents from the
local data directory. Requests and gold indices must be identical, except for the documented
PIQA whitespace difference, which is pinned down exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval.tasks
import pytest
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks._yaml_loader import load_yaml  # what lm-eval's TaskManager uses

from dmx.llm.tasks import OFFLINE_TASKS, offline_task_config

FIXTURES = Path(__file__).parents[1] / "fixtures" / "zeroshot"
STOCK_DOCS = json.loads((FIXTURES / "stock_docs.json").read_text(encoding="utf-8"))
STOCK_YAML = {
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "piqa": "piqa/piqa.yaml",
    "winogrande": "winogrande/default.yaml",
}


def stock_task(name: str, docs: list[dict], tmp_path: Path) -> ConfigurableTask:
    """The installed stock task `name`, reading `docs` (HF schema) instead of the hub dataset."""
    config = load_yaml(Path(lm_eval.tasks.__file__).parent / STOCK_YAML[name], resolve_func=True)
    eval_split = config.get("test_split") or config["validation_split"]
    data_file = tmp_path / f"{name}_hf.jsonl"
    data_file.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {eval_split: str(data_file)}},
        training_split=None,
        validation_split=eval_split if eval_split == "validation" else None,
        test_split=eval_split if eval_split == "test" else None,
    )
    config.pop("tag", None)
    return ConfigurableTask(config=config)


def requests_by_doc(task: ConfigurableTask, n_docs: int) -> list[list[tuple[str, str]]]:
    """The (context, continuation) pairs lm-eval builds, grouped per document in order."""
    task.build_all_requests(limit=n_docs, rank=0, world_size=1)
    grouped: list[list[tuple[str, str]]] = [[] for _ in range(n_docs)]
    for inst in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
        grouped[inst.doc_id].append(inst.args)
    return grouped


def gold_index(task: ConfigurableTask, doc: dict) -> int:
    """Gold choice index as lm-eval's process_results determines it."""
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    return task.doc_to_choice(doc).index(gold) if isinstance(gold, str) else gold


def strip_continuations(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(ctx, " " + cont.strip()) for ctx, cont in pairs]


@pytest.fixture(scope="module")
def compared(data_dir, tmp_path_factory):
    """{task: [(fixture entry, stock pairs, offline pairs, stock gold, offline gold)]}."""
    tmp = tmp_path_factory.mktemp("stock")
    out = {}
    for name in OFFLINE_TASKS:
        entries = STOCK_DOCS[name]
        stock = stock_task(name, [e["doc"] for e in entries], tmp)
        stock_pairs = requests_by_doc(stock, len(entries))
        offline = ConfigurableTask(config=offline_task_config(name, data_dir))
        rows = [e["local_row"] for e in entries]
        offline_pairs = requests_by_doc(offline, max(rows) + 1)
        out[name] = [
            (
                entry,
                stock_pairs[i],
                offline_pairs[row],
                gold_index(stock, stock.eval_docs[i]),
                gold_index(offline, offline.eval_docs[row]),
            )
            for i, (entry, row) in enumerate(zip(entries, rows))
        ]
    return out


def test_fixture_covers_every_offline_task():
    assert set(STOCK_DOCS) == set(OFFLINE_TASKS)
    assert all(len(entries) >= 2 for entries in STOCK_DOCS.values())


@pytest.mark.parametrize("name", OFFLINE_TASKS)
def test_offline_requests_and_gold_match_stock(compared, name):
    for entry, stock_pairs, offline_pairs, stock_gold, offline_gold in compared[name]:
        where = f"{name} local row {entry['local_row']}"
        assert offline_gold == stock_gold, where
        if entry["expected_difference"] is None:
            assert offline_pairs == stock_pairs, where
        else:
            assert entry["expected_difference"] == "stripped_whitespace"
            # The difference is real (the stock continuation keeps the upstream trailing space)...
            assert offline_pairs != stock_pairs, f"{where}: documented difference has disappeared"
            # ...and it is the only one.
            assert offline_pairs == strip_continuations(stock_pairs), where


def test_winogrande_is_partial_scoring(compared):
    """Both sides score the shared continuation after each option-filled prefix."""
    for _, stock_pairs, offline_pairs, _, _ in compared["winogrande"]:
        assert len(offline_pairs) == 2
        assert offline_pairs[0][1] == offline_pairs[1][1]
        assert offline_pairs[0][0] != offline_pairs[1][0]


@pytest.mark.parametrize("name", OFFLINE_TASKS)
def test_offline_task_reports_the_stock_metrics(data_dir, name):
    stock = load_yaml(Path(lm_eval.tasks.__file__).parent / STOCK_YAML[name], resolve_func=False)
    offline = offline_task_config(name, data_dir)
    assert offline["output_type"] == stock["output_type"] == "multiple_choice"
    assert [m["metric"] for m in offline["metric_list"]] == [m["metric"] for m in stock["metric_list"]]
    assert offline.get("target_delimiter", " ") == stock.get("target_delimiter", " ")
    assert offline.get("num_fewshot") is None and stock.get("num_fewshot") is None


def test_same_model_scores_identical_requests_identically(compared):
    """On one model the loglikelihoods agree wherever the requests agree, and not at the PIQA
    whitespace difference (so that difference does move the scores)."""
    import sys

    from lm_eval.models.huggingface import HFLM
    from lm_eval.api.instance import Instance

    sys.path.insert(0, str(FIXTURES))
    from tiny_byte_lm import tiny_byte_lm

    model, tokenizer = tiny_byte_lm(seed=1)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)

    def loglikelihoods(pairs):
        reqs = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
        return [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]

    same, different = [], []
    for name, rows in compared.items():
        for entry, stock_pairs, offline_pairs, _, _ in rows:
            (same if entry["expected_difference"] is None else different).append(
                (stock_pairs, offline_pairs))
    assert same and different
    for stock_pairs, offline_pairs in same:
        assert loglikelihoods(stock_pairs) == loglikelihoods(offline_pairs)
    for stock_pairs, offline_pairs in different:
        assert loglikelihoods(stock_pairs) != loglikelihoods(offline_pairs)
