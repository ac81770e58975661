"""dmx.llm.zeroshot: lm-eval wiring, averages, bad input, checkpoint/resume.

The end-to-end check recomputes every task's acc / acc_norm / stderr with an independent scorer
(a plain forward pass over each (context, continuation) pair, written here from the documented
prompt rules) and compares it with what lm-eval, driven through evaluate_zeroshot, reports.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import torch

from dmx.llm.tasks import DEFAULT_TASKS_OFFLINE, offline_task_config, resolve_task_names
from dmx.llm.zeroshot import average_accuracy, build_tasks, evaluate_zeroshot, results_table

FIXTURES = Path(__file__).parents[1] / "fixtures" / "zeroshot"
sys.path.insert(0, str(FIXTURES))
from tiny_byte_lm import tiny_byte_lm  # noqa: E402

# Row counts and sha256 as published in the data directory's README.md.
README_ROWS = {"arc_easy": 2376, "arc_challenge": 1172, "piqa": 1838, "winogrande": 1267}
README_SHA256 = {
    "arc_easy": "d2d12e59543acf9a5ef6079634a72b30215e36c2fd4236fff3bc855d287b87f5",
    "arc_challenge": "1ae3aeedf1951d881cbd5c2e3a31e78a1993d251479afbe4cb413b6707244636",
    "piqa": "d2870e73aec5154df3faf259b7700876e11608eebdf69e9d6667435673dbe4e0",
    "winogrande": "ea1592526f3bfdd0948ed3acb1b4dfa3f83d23698917118688ee1df7f8d4b8d7",
}
LIMIT = 6


@pytest.fixture(scope="module")
def tiny():
    return tiny_byte_lm(seed=0)


@pytest.fixture(scope="module")
def default_run(tiny, data_dir):
    model, tokenizer = tiny
    return evaluate_zeroshot(model, tokenizer, tasks=None, limit=LIMIT, batch_size=4,
                             data_dir=data_dir, return_documents=True)


class Untouchable:
    """A 'model' that fails the test if anything touches it (input checks must come first)."""

    def __getattr__(self, name):
        raise AssertionError(f"model.{name} used before the input was validated")


# ----------------------------------------------------------------------------- independent scorer


def continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """log P(continuation | context), context and continuation tokenised separately (exact for the
    byte tokenizer; the BPE split lm-eval uses for the embedded model's prompts)."""
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    # the token at position p is predicted by the logits at p - 1
    return float(sum(logprobs[len(ctx) + j - 1, tok] for j, tok in enumerate(cont)))


def requests_from_local_row(name: str, row: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """(context, continuation) pairs and the strings whose length acc_norm divides by."""
    if name == "winogrande":
        pairs = [(prefix, " " + row["continuation"]) for prefix in row["context_options"]]
        return pairs, row["context_options"]
    prompt = row["query"] + ("Answer:" if name == "piqa" else "\nAnswer:")
    return [(prompt, " " + choice) for choice in row["choices"]], row["choices"]


def independent_scores(model, tokenizer, data_dir: Path, name: str, n: int) -> list[dict]:
    """Per document: the requests, their log-likelihoods and 0/1 acc / acc_norm."""
    lines = (data_dir / "zeroshot" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines[:n]:
        row = json.loads(line)
        pairs, lengths_of = requests_from_local_row(name, row)
        lls = [continuation_logprob(model, tokenizer, c, x) for c, x in pairs]
        normed = [ll / len(s) for ll, s in zip(lls, lengths_of)]
        out.append({
            "requests": [list(p) for p in pairs],
            "loglikelihoods": lls,
            "acc": float(max(range(len(lls)), key=lls.__getitem__) == row["gold"]),
            "acc_norm": float(max(range(len(normed)), key=normed.__getitem__) == row["gold"]),
        })
    return out


# ----------------------------------------------------------------------------- task names


def test_default_task_sets_follow_the_issue():
    assert resolve_task_names(None, online=True) == [
        "arc_easy", "arc_challenge", "winogrande", "hellaswag"]
    assert resolve_task_names("default", online=False) == [
        "arc_easy", "arc_challenge", "winogrande", "piqa"]
    assert resolve_task_names(["default"], online=False) == resolve_task_names("default", online=False)  # --tasks default
    assert resolve_task_names("piqa, arc_easy", online=False) == ["piqa", "arc_easy"]
    assert resolve_task_names(["hellaswag", "piqa"], online=True) == ["hellaswag", "piqa"]


def test_unknown_task_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown zero-shot task 'boolq'") as err:
        resolve_task_names(["arc_easy", "boolq"], online=False)
    for name in ("arc_easy", "arc_challenge", "piqa", "winogrande"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="hellaswag.*only available online"):
        resolve_task_names(["hellaswag"], online=False)
    with pytest.raises(ValueError, match="more than once"):
        resolve_task_names(["piqa", "piqa"], online=False)
    with pytest.raises(ValueError, match="non-empty"):
        resolve_task_names([], online=True)


def test_unknown_task_rejected_before_model_work(data_dir):
    with pytest.raises(ValueError, match="Available offline"):
        evaluate_zeroshot(Untouchable(), None, tasks=["arc-easy"], data_dir=data_dir)


# ----------------------------------------------------------------------------- data files


def test_offline_tasks_read_the_full_local_splits(data_dir):
    tasks = build_tasks(list(README_ROWS), online=False, data_dir=data_dir)
    assert {name: len(task.eval_docs) for name, task in tasks.items()} == README_ROWS


def test_missing_data_file_names_the_path(tmp_path):
    (tmp_path / "zeroshot").mkdir()
    expected = str(tmp_path.resolve() / "zeroshot" / "piqa.jsonl")
    with pytest.raises(FileNotFoundError, match="not found") as err:
        offline_task_config("piqa", tmp_path)
    assert expected in str(err.value)


def test_missing_data_dir_names_flag_and_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("DMX_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match=r"zeroshot.*data_dir=.*DMX_DATA_DIR"):
        offline_task_config("arc_easy")
    monkeypatch.setenv("DMX_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        offline_task_config("arc_easy")


def test_limit_larger_than_the_split_is_refused(tmp_path):
    (tmp_path / "zeroshot").mkdir()
    row = {"query": "Question: 1 + 1?", "choices": ["2", "3"], "gold": 0}
    (tmp_path / "zeroshot" / "arc_easy.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"limit=3 .*arc_easy has 2 documents.*limit <= 2"):
        evaluate_zeroshot(Untouchable(), None, tasks=["arc_easy"], limit=3, data_dir=tmp_path)


@pytest.mark.parametrize("limit", [0, -5, 2.5, True, "10"])
def test_bad_limit_is_refused(limit, data_dir):
    with pytest.raises(ValueError, match="limit must be a positive whole number"):
        evaluate_zeroshot(Untouchable(), None, tasks=["piqa"], limit=limit, data_dir=data_dir)


@pytest.mark.parametrize("batch_size", [0, -1, "big", 1.5])
def test_bad_batch_size_is_refused(batch_size, data_dir):
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_zeroshot(Untouchable(), None, tasks=["piqa"], batch_size=batch_size,
                          data_dir=data_dir)


# ----------------------------------------------------------------------------- end to end


def test_lm_eval_scores_match_an_independent_scorer(default_run, tiny, data_dir):
    model, tokenizer = tiny
    assert list(default_run["tasks"]) == list(DEFAULT_TASKS_OFFLINE)
    for name, row in default_run["tasks"].items():
        ref = independent_scores(model, tokenizer, data_dir, name, LIMIT)
        got = row["documents"]
        assert row["n_docs"] == len(got) == LIMIT
        assert row["source"] == "offline"
        assert row["data_sha256"] == README_SHA256[name]
        for doc, expected in zip(got, ref):
            where = f"{name} doc {doc['doc_id']}"
            assert doc["requests"] == expected["requests"], where
            assert doc["loglikelihoods"] == pytest.approx(expected["loglikelihoods"], rel=1e-4), where
            assert doc["acc"] == expected["acc"], where
            if name != "winogrande":
                assert doc["acc_norm"] == expected["acc_norm"], where
        accs = [d["acc"] for d in ref]
        assert row["acc"] == pytest.approx(statistics.mean(accs), abs=1e-12), name
        assert row["acc_stderr"] == pytest.approx(statistics.stdev(accs) / math.sqrt(LIMIT),
                                                  abs=1e-12), name
        if name == "winogrande":  # the stock task defines acc only
            assert row["acc_norm"] is None and row["acc_norm_stderr"] is None
        else:
            assert row["acc_norm"] == pytest.approx(
                statistics.mean(d["acc_norm"] for d in ref), abs=1e-12), name


def test_average_names_its_tasks(default_run):
    avg = default_run["average"]
    rows = default_run["tasks"]
    assert avg["tasks"] == ["arc_easy", "arc_challenge", "winogrande", "piqa"]
    assert avg["acc"] == pytest.approx(sum(rows[n]["acc"] for n in avg["tasks"]) / 4)
    assert avg["acc_norm_uses_acc_for"] == ["winogrande"]
    assert avg["acc_norm"] == pytest.approx(
        (rows["arc_easy"]["acc_norm"] + rows["arc_challenge"]["acc_norm"]
         + rows["winogrande"]["acc"] + rows["piqa"]["acc_norm"]) / 4)
    table = results_table(default_run)
    assert "Average over 4 tasks: arc_easy, arc_challenge, winogrande, piqa" in table
    assert "acc_norm average uses acc for winogrande" in table
    assert default_run["config"]["limit"] == LIMIT and default_run["config"]["num_fewshot"] == 0


def test_average_of_nothing_is_refused():
    with pytest.raises(ValueError, match="zero tasks"):
        average_accuracy({})


def test_checkpoint_resumes_and_restores_train_mode(tiny, data_dir, tmp_path):
    model, tokenizer = tiny
    path = tmp_path / "zs.json"
    model.train()
    try:
        first = evaluate_zeroshot(model, tokenizer, tasks=["piqa", "winogrande"], limit=2,
                                  data_dir=data_dir, checkpoint=path)
        assert model.training, "evaluate_zeroshot must restore the caller's train/eval mode"
    finally:
        model.eval()
    saved = json.loads(path.read_text())
    assert saved["tasks"] == first["tasks"]

    class Broken(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise AssertionError("resumed run must not call the model")

    resumed = evaluate_zeroshot(Broken(), tokenizer, tasks=["piqa", "winogrande"], limit=2,
                                data_dir=data_dir, checkpoint=path)
    assert resumed["tasks"] == first["tasks"]
    with pytest.raises(ValueError, match="different settings"):
        evaluate_zeroshot(Broken(), tokenizer, tasks=["piqa"], limit=3, data_dir=data_dir,
                          checkpoint=path)


@pytest.mark.parametrize("content", ["{\"format\": \"dmx-zeroshot-checkpoint/1\", \"tasks\"", "[1, 2]", None],
                         ids=["truncated", "not-a-checkpoint", "other-settings"])
def test_an_unusable_checkpoint_stops_the_run_or_is_replaced_when_asked(tiny, data_dir, tmp_path, capsys, content):
    """A corrupt checkpoint, another kind of JSON or one of other settings stops the run with the
    fix, before any question; with ``restart_unusable_checkpoint`` (a sweep's private file) it is
    reported, every task is answered afresh and the checkpoint is rewritten for this run."""
    model, tokenizer = tiny
    path = tmp_path / "zs.json"
    if content is None:
        evaluate_zeroshot(model, tokenizer, tasks=["piqa"], limit=3, data_dir=data_dir, checkpoint=path)
    else:
        path.write_text(content)

    class Untouched(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise AssertionError("an unusable checkpoint must stop the run before any question")

    with pytest.raises(ValueError, match="delete the file|delete it"):
        evaluate_zeroshot(Untouched(), tokenizer, tasks=["piqa"], limit=2, data_dir=data_dir, checkpoint=path)
    fresh = evaluate_zeroshot(model, tokenizer, tasks=["piqa"], limit=2, data_dir=data_dir)
    got = evaluate_zeroshot(model, tokenizer, tasks=["piqa"], limit=2, data_dir=data_dir, checkpoint=path,
                            restart_unusable_checkpoint=True)
    assert "ignoring an unusable checkpoint" in capsys.readouterr().err
    assert [got["tasks"]["piqa"][k] for k in ("acc", "n_docs")] == [fresh["tasks"]["piqa"][k] for k in ("acc", "n_docs")]
    assert json.loads(path.read_text())["settings"]["limit"] == 2  # rewritten for this run


# ----------------------------------------------------------------------------- quantised / real models


def test_fake_quantised_model_is_evaluated_as_quantised(tiny, data_dir):
    """DMXLinear-wrapped layers (uniform MXFP4) keep the HF forward API: lm-eval scores the
    quantised forward (independent scorer agrees) and the scores move away from full precision."""
    import copy

    from dmx.llm.pipeline import quantize_model
    from dmx.wrap import set_fixed_format

    model, tokenizer = tiny
    quantised = copy.deepcopy(model)
    quantize_model(quantised)
    set_fixed_format(quantised, "mxfp4_e2m1")
    full = evaluate_zeroshot(model, tokenizer, tasks=["piqa"], limit=3, data_dir=data_dir,
                             return_documents=True)["tasks"]["piqa"]["documents"]
    got = evaluate_zeroshot(quantised, tokenizer, tasks=["piqa"], limit=3, data_dir=data_dir,
                            return_documents=True)["tasks"]["piqa"]["documents"]
    ref = independent_scores(quantised, tokenizer, data_dir, "piqa", 3)
    for doc, expected, fp in zip(got, ref, full):
        assert doc["loglikelihoods"] == pytest.approx(expected["loglikelihoods"], rel=1e-4)
        # MXFP4 moves a tiny random model's nearly flat scores only slightly (~0.06-0.2 nats of a
        # few hundred): lm-eval's scores must sit far closer to the quantised forward (float32
        # summation noise, ~1e-5) than to the full-precision one.
        off_quantised = max(abs(q - r) for q, r in zip(doc["loglikelihoods"], expected["loglikelihoods"]))
        shift = max(abs(q - f) for q, f in zip(doc["loglikelihoods"], fp["loglikelihoods"]))
        assert shift > 1e-3 and shift > 20 * off_quantised, (shift, off_quantised)


@pytest.mark.slow
def test_embedded_model_short_run(embedded_model, data_dir):
    """One short run on the embedded SmolLM2-135M: lm-eval's log-likelihoods through HFLM equal
    a plain forward pass with the model's own BPE tokenizer (context and continuation encoded
    separately, which is where BPE splits these prompts)."""
    model, tokenizer = embedded_model
    result = evaluate_zeroshot(model, tokenizer, tasks=["arc_easy"], limit=1, data_dir=data_dir,
                               return_documents=True)
    row = result["tasks"]["arc_easy"]
    ref = independent_scores(model, tokenizer, data_dir, "arc_easy", 1)
    for doc, expected in zip(row["documents"], ref):
        assert doc["requests"] == expected["requests"]
        assert doc["loglikelihoods"] == pytest.approx(expected["loglikelihoods"], rel=1e-3)
        assert doc["acc"] == expected["acc"]
    assert row["acc"] == pytest.approx(statistics.mean(d["acc"] for d in ref))


def test_online_without_network_points_to_offline(monkeypatch):
    """A hub failure while loading the stock tasks says how to run offline instead."""
    import lm_eval.tasks

    class NoNetworkTaskManager:
        def load(self, names):
            raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub")

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", NoNetworkTaskManager)
    with pytest.raises(ConnectionError, match=r"evaluate offline instead.*DMX_DATA_DIR") as err:
        build_tasks(["arc_easy", "hellaswag"], online=True)
    assert "allenai/ai2_arc" in str(err.value)


def test_evaluation_leaves_the_callers_random_state_alone(tiny, data_dir):
    model, tokenizer = tiny
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    evaluate_zeroshot(model, tokenizer, tasks=["piqa"], limit=1, data_dir=data_dir)
    assert torch.equal(torch.rand(3), expected)
