"""Evaluation and calibration text: WikiText-2 (local directory or HF hub) and local text files.

Data directory precedence: explicit argument (``--data-dir``) > ``$DMX_DATA_DIR`` > error.
Local layout (read-only, see the data directory's README.md):

* ``wikitext-2-raw-v1/test.jsonl`` — WikiText-2 raw **test** rows ``{"text": row}``, exactly the
  rows of HF ``wikitext`` / ``wikitext-2-raw-v1`` / ``test``; used for perplexity.
* ``wikitext-2-tokenized/valid.txt`` — WikiText-2 **validation** split (tokenised variant, one row
  per line); used for calibration so calibration never sees evaluation text. The online
  equivalent is HF ``wikitext`` / ``wikitext-2-v1`` / ``validation``.

Both are joined with ``"\\n\\n"`` (the GPTQ convention) and tokenised once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

__all__ = [
    "DATA_DIR_ENV",
    "WIKITEXT2_TEST",
    "WIKITEXT2_CALIB",
    "data_dir",
    "resolve_data_dir",
    "wikitext2_test_text",
    "wikitext2_calibration_text",
    "read_text_file",
    "tokenize_text",
    "test_token_ids",
    "calibration_token_ids",
    "calibration_windows",
    "sample_windows",
    "token_hash",
    "check_data_source",
]

DATA_DIR_ENV = "DMX_DATA_DIR"
WIKITEXT2_TEST = Path("wikitext-2-raw-v1") / "test.jsonl"
WIKITEXT2_CALIB = Path("wikitext-2-tokenized") / "valid.txt"
_ONLINE_HINT = "or pass online=True / --online to download it from the Hugging Face hub (dataset 'wikitext')"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Resolve the local data directory: ``path`` if given, else ``$DMX_DATA_DIR``, else error.

    Raises ``FileNotFoundError`` naming both ways to set it (and the online alternative) when
    neither is set or the directory does not exist.
    """
    chosen = path if path is not None else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        raise FileNotFoundError(
            f"no data directory: pass --data-dir DIR (data_dir=...) or set ${DATA_DIR_ENV} to a "
            f"directory containing {WIKITEXT2_TEST} and {WIKITEXT2_CALIB}, {_ONLINE_HINT}"
        )
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        source = "--data-dir" if path is not None else f"${DATA_DIR_ENV}"
        raise FileNotFoundError(f"data directory {str(folder)!r} (from {source}) does not exist")
    return folder


# Module-level alias: functions below take a ``data_dir`` argument that shadows ``data_dir()``.
resolve_data_dir = data_dir


def _require_file(folder: Path, relative: Path) -> Path:
    target = folder / relative
    if not target.is_file():
        raise FileNotFoundError(f"expected {target} (data directory {folder}) but it is missing; point --data-dir "
                                f"or ${DATA_DIR_ENV} at the data folder (see its README.md), {_ONLINE_HINT}")
    return target


def check_data_source(data_dir: str | os.PathLike | None = None, *, split: str, online: bool = False,
                      text_file: str | os.PathLike | None = None) -> None:
    """Fail now, before any model is loaded, if the text of ``split`` cannot be read later.

    ``split``: ``"test"`` (perplexity) or ``"calibration"`` (WikiText-2 validation). A
    ``text_file`` must exist and hold text; otherwise, unless ``online``, the data directory
    (``--data-dir`` / ``$DMX_DATA_DIR``) must hold the split's file (``FileNotFoundError``
    saying which file is missing and how to point at the data).
    """
    files = {"test": WIKITEXT2_TEST, "calibration": WIKITEXT2_CALIB}
    if split not in files:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(files)}")
    if text_file is not None:
        target = Path(text_file).expanduser()
        if not target.is_file():
            raise FileNotFoundError(f"text file {str(target)!r} does not exist; pass an existing UTF-8 text file")
        if target.stat().st_size == 0:
            raise ValueError(f"text file {str(target)!r} is empty")
        return
    if not online:
        _require_file(resolve_data_dir(data_dir), files[split])


def _hub_rows(config: str, split: str) -> list[str]:
    from datasets import load_dataset  # optional, only for the online path

    return list(load_dataset("wikitext", config, split=split)["text"])


def wikitext2_test_text(data_dir: str | os.PathLike | None = None, *, online: bool = False) -> str:
    """WikiText-2 raw test split as one string: rows joined with ``"\\n\\n"`` (GPTQ protocol)."""
    if online:
        return "\n\n".join(_hub_rows("wikitext-2-raw-v1", "test"))
    target = _require_file(resolve_data_dir(data_dir), WIKITEXT2_TEST)
    with target.open(encoding="utf-8") as handle:
        rows = [json.loads(line)["text"] for line in handle if line.strip()]
    return "\n\n".join(rows)


def wikitext2_calibration_text(data_dir: str | os.PathLike | None = None, *, online: bool = False) -> str:
    """WikiText-2 validation split (never the test split) as one string, rows joined with ``"\\n\\n"``."""
    if online:
        return "\n\n".join(_hub_rows("wikitext-2-v1", "validation"))
    target = _require_file(resolve_data_dir(data_dir), WIKITEXT2_CALIB)
    return "\n\n".join(target.read_text(encoding="utf-8").splitlines())


def read_text_file(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file for calibration or evaluation; clear error if it does not exist."""
    target = Path(path).expanduser()
    if not target.is_file():
        raise FileNotFoundError(f"text file {str(target)!r} does not exist; pass an existing UTF-8 text file")
    text = target.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"text file {str(target)!r} is empty")
    return text


def tokenize_text(tokenizer, text: str) -> torch.Tensor:
    """Tokenise ``text`` once, as a whole, with the tokenizer's defaults -> ``LongTensor[1, N]``."""
    # The whole corpus is longer than the model's context on purpose (it is cut into windows
    # later); verbose=False silences the tokenizer's length warning about that.
    ids = tokenizer(text, return_tensors="pt", verbose=False).input_ids
    return ids.to(torch.long)


def test_token_ids(
    tokenizer,
    data_dir: str | os.PathLike | None = None,
    *,
    online: bool = False,
    text_file: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Evaluation token ids ``LongTensor[1, N]``: WikiText-2 test (or ``text_file`` if given)."""
    text = read_text_file(text_file) if text_file is not None else wikitext2_test_text(data_dir, online=online)
    return tokenize_text(tokenizer, text)


def calibration_token_ids(
    tokenizer,
    data_dir: str | os.PathLike | None = None,
    *,
    online: bool = False,
    text_file: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Calibration token ids ``LongTensor[1, N]``: WikiText-2 validation (or ``text_file``)."""
    if text_file is not None:
        text = read_text_file(text_file)
    else:
        text = wikitext2_calibration_text(data_dir, online=online)
    return tokenize_text(tokenizer, text)


def sample_windows(token_ids: torch.Tensor, n: int, seqlen: int, seed: int) -> torch.Tensor:
    """Draw ``n`` windows of ``seqlen`` consecutive tokens at seeded uniform random offsets.

    Offsets are drawn i.i.d. from ``[0, N - seqlen]`` with a ``torch.Generator`` seeded by
    ``seed`` (GPTQ-style random crops), so the same ``(ids, n, seqlen, seed)`` gives the same
    windows on every machine. Returns ``LongTensor[n, seqlen]``.
    """
    if n < 1 or seqlen < 2:
        raise ValueError(f"need n >= 1 windows of seqlen >= 2 tokens, got n={n}, seqlen={seqlen}")
    flat = token_ids.reshape(-1)
    total = int(flat.numel())
    if total < seqlen:
        raise ValueError(f"text has only {total} tokens, fewer than seqlen={seqlen}; lower --seqlen or use more text")
    generator = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, total - seqlen + 1, (n,), generator=generator)
    return torch.stack([flat[s : s + seqlen] for s in starts.tolist()])


def calibration_windows(
    tokenizer,
    n: int,
    seqlen: int,
    seed: int,
    *,
    data_dir: str | os.PathLike | None = None,
    online: bool = False,
    text_file: str | os.PathLike | None = None,
) -> torch.Tensor:
    """``n`` seeded calibration windows ``LongTensor[n, seqlen]`` from the validation split (or a text file)."""
    ids = calibration_token_ids(tokenizer, data_dir, online=online, text_file=text_file)
    return sample_windows(ids, n, seqlen, seed)


def token_hash(token_ids: torch.Tensor) -> str:
    """sha256 (hex) of the int64 token ids: identifies calibration/evaluation data in provenance."""
    array = token_ids.detach().to("cpu", torch.int64).contiguous().numpy()
    return hashlib.sha256(array.tobytes()).hexdigest()
