"""read_json: the one reader of the project's JSON files, with its error wording, and its callers."""

import json

import pytest

from dmx.assignment import Assignment
from dmx.files import atomic_write_text, read_json


def test_round_trip_with_the_atomic_writer(tmp_path):
    doc = {"schema": 1, "scores": {"a": 0.25}, "text": "µ ≤ 6"}
    path = atomic_write_text(tmp_path / "sub" / "doc.json", json.dumps(doc, ensure_ascii=False))
    assert read_json(path, what="test file", fix="unused") == doc


@pytest.mark.parametrize("content", [b"{not json", b'{"a": 1', b"\xff\xfe{}"], ids=["syntax", "truncated", "not-utf8"])
def test_corrupt_file_names_the_file_what_it_is_and_the_fix(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        read_json(path, what="KL score cache", fix="delete it to rescore")
    message = str(info.value)
    assert message.startswith(f"KL score cache {path} is corrupt, not valid JSON (")
    assert message.endswith("; delete it to rescore")


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json", what="x", fix="y")


def test_assignment_from_json_reports_corrupt_and_missing_files(tmp_path):
    path = tmp_path / "assignment.json"
    path.write_text('{"formats": {"l0": "mxfp4_e2m1"')  # cut off mid-write
    with pytest.raises(ValueError, match=r"assignment file .* is corrupt, not valid JSON .*dmx calibrate --out"):
        Assignment.from_json(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Assignment.from_json(tmp_path / "absent.json")


def test_sha256_file_reads_in_chunks_and_matches_hashlib(tmp_path):
    import hashlib

    from dmx.files import sha256_file

    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    (tmp_path / "f.bin").write_bytes(data)
    assert sha256_file(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()
