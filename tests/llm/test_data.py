"""Data directory resolution, WikiText-2 files, seeded calibration windows, text files."""

from __future__ import annotations

import hashlib

import json

import pytest
import torch

from dmx.llm import data as D
from dmx.provenance import token_hash

# Published in the data directory README (independent of our code).
TEST_JOINED_SHA256 = "696cca6b65a171b0a358a4be6732cdfdf2dd6164a32e20fd70e3c13fc4dfae83"


def test_data_dir_precedence(tmp_path, monkeypatch):
    flag, env = tmp_path / "flag", tmp_path / "env"
    flag.mkdir()
    env.mkdir()
    monkeypatch.setenv(D.DATA_DIR_ENV, str(env))
    assert D.data_dir(flag) == flag
    assert D.data_dir() == env
    monkeypatch.delenv(D.DATA_DIR_ENV)
    with pytest.raises(FileNotFoundError, match="pass data_dir=DIR.*DMX_DATA_DIR.*online=True"):
        D.data_dir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.data_dir(tmp_path / "missing")


def test_missing_file_names_expected_path_and_online_alternative(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        D.wikitext2_test_text(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "wikitext-2-raw-v1" / "test.jsonl") in message and "online" in message


def test_wikitext2_test_text_matches_published_hash(data_dir):
    text = D.wikitext2_test_text(data_dir)
    assert len(text) == 1_294_336
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == TEST_JOINED_SHA256


def test_calibration_text_is_validation_not_test(data_dir):
    calib = D.wikitext2_calibration_text(data_dir)
    test = D.wikitext2_test_text(data_dir)
    assert "Homarus gammarus" in calib[:200]  # first validation article
    assert calib[:2000] not in test


class _CharTokenizer:
    """Byte-level stand-in with the Hugging Face call convention."""

    def __call__(self, text, return_tensors=None, verbose=True):
        class _Out:
            input_ids = torch.tensor([list(text.encode("utf-8"))], dtype=torch.long)

        return _Out()


def test_sample_windows_are_seeded_contiguous_crops():
    ids = torch.arange(1000).reshape(1, -1)
    a = D.sample_windows(ids, 8, 50, seed=3)
    assert a.shape == (8, 50) and a.dtype == torch.long
    assert torch.equal(a, D.sample_windows(ids, 8, 50, seed=3))
    assert not torch.equal(a, D.sample_windows(ids, 8, 50, seed=4))
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(8, 49, dtype=torch.long))
    assert int(a.max()) <= 999 and int(a.min()) >= 0
    with pytest.raises(ValueError, match="fewer than seqlen"):
        D.sample_windows(ids, 1, 2000, seed=0)


def test_text_file_calibration_and_errors(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij" * 20, encoding="utf-8")
    windows = D.calibration_windows(_CharTokenizer(), 3, 16, 0, text_file=path)
    assert windows.shape == (3, 16)
    assert all(bytes(w.tolist()).decode() in "abcdefghij" * 20 for w in windows)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.read_text_file(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        D.read_text_file(tmp_path / "empty.txt")


def test_fineweb_style_documents_are_read_from_jsonl_gzip_and_parquet(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = ["First document.", "Second one,\nwith two lines.", "Third."]
    rows = "\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)) + "\n"
    (tmp_path / "a.jsonl").write_text(rows, encoding="utf-8")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(rows)
    pq.write_table(pa.table({"text": docs, "url": ["u"] * 3}), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.jsonl.gz", "a.parquet"):
        assert D.read_text_file(tmp_path / name) == "\n\n".join(docs), name
    (tmp_path / "bad.jsonl").write_text('{"content": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1 has no string field 'text'"):
        D.read_text_file(tmp_path / "bad.jsonl")
    pq.write_table(pa.table({"body": docs}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no 'text' column"):
        D.read_text_file(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="online=True"):
        D.calibration_token_ids(_CharTokenizer(), source="fineweb")
    with pytest.raises(ValueError, match="unknown calibration source"):
        D.calibration_token_ids(_CharTokenizer(), source="c4")


def test_token_hash_identifies_data():
    a = torch.arange(10).reshape(1, -1)
    assert token_hash(a) == hashlib.sha256(a.numpy().astype("<i8").tobytes()).hexdigest()
    assert token_hash(a) != token_hash(a + 1)
