"""`mx-spec verify` on bad files: every error names the file and the fix (issue #16, point 6)."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from mx_spec.conformance.cli import main
from mx_spec.conformance.golden import load_golden_file, default_golden_dir
from mx_spec.conformance.results_files import load_results

CASE_ID = "mxint8/floor/rne/ties/0000"


@pytest.mark.parametrize("text", ["", '{"cases": [{"id": "mxint8/floor/rne/ties/0000", "scales": "7f'])
def test_empty_or_truncated_json_names_the_file(tmp_path, capsys, text):
    path = tmp_path / "res.json"
    path.write_text(text)
    with pytest.raises(ValueError) as exc:
        load_results(path)
    msg = str(exc.value)
    assert str(path) in msg and "not a readable results file" in msg and "golden/README.md" in msg
    assert ("(it is empty)" in msg) == (text == "")
    assert main(["verify", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_garbage_npz_gives_no_pickle_advice(tmp_path, capsys):
    path = tmp_path / "res.npz"
    path.write_bytes(b"\x80\x04garbage that is not a zip archive" * 4)
    with pytest.raises(ValueError) as exc:
        load_results(path)
    msg = str(exc.value)
    assert str(path) in msg and "not a readable .npz" in msg and "numpy.savez" in msg
    assert "pickle" not in msg
    assert main(["verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pickle" not in err and str(path) in err


def test_npz_with_wrong_keys_shows_the_key_form(tmp_path):
    path = tmp_path / "res.npz"
    np.savez(path, scales=np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"key 'scales' is not of the form '<case id>/<field>'"):
        load_results(path)
    np.savez(path, **{CASE_ID + "/scale": np.zeros(1, np.uint8)})
    with pytest.raises(ValueError, match=r"'<case id>/<field>', e\.g\. 'mxfp4_e2m1/floor/rne/ties/0000/scales'"):
        load_results(path)


def test_single_array_npy_named_npz_is_rejected(tmp_path):
    path = tmp_path / "res.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="holds a single array, not an .npz archive"):
        load_results(path)


def test_bad_hex_in_results_names_case_and_field(tmp_path):
    path = tmp_path / "res.json"
    path.write_text(json.dumps({"cases": [{"id": CASE_ID, "scales": "7"}]}))
    with pytest.raises(ValueError, match=f"{CASE_ID}' field 'scales' is not a hex string"):
        load_results(path)


def test_truncated_golden_file_names_the_file(tmp_path):
    src = (default_golden_dir() / "mxint8.json").read_text()
    bad = tmp_path / "mxint8.json"
    bad.write_text(src[: len(src) // 2])
    with pytest.raises(ValueError, match=f"{bad}: not a readable mx-spec-golden golden file .*mx-spec golden --out"):
        load_golden_file(bad)


def test_gzipped_results_are_read(tmp_path):
    path = tmp_path / "res.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump({"cases": [{"id": CASE_ID, "scales": "7f"}]}, fh)
    assert load_results(path)[CASE_ID]["scales"].tolist() == [0x7F]
