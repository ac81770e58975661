"""Evaluation and calibration text: WikiText-2 (local directory or HF hub) and local text files.

Data directory precedence: explicit argument (``data_dir``) > ``$DMX_DATA_DIR`` > error.
Local layout (read-only, see the data directory's README.md):

* ``wikitext-2-raw-v1/test.jsonl`` — WikiText-2 raw **test** rows ``{"text": row}``, exactly the
  rows of HF ``wikitext`` / ``wikitext-2-raw-v1`` / ``test``; used for perplexity.
* ``wikitext-2-tokenized/valid.txt`` — WikiText-2 **validation** split (tokenised variant, one row
  per line); used for calibration so calibration never sees evaluation text. The online
  equivalent is HF ``wikitext`` / ``wikitext-2-v1`` / ``validation``.

Both are joined with ``"\\n\\n"`` (the GPTQ convention) and tokenised once.

Other calibration text (the authors calibrate on FineWeb): ``text_file`` takes a plain UTF-8 file
or documents in FineWeb's layout, one ``{"text": ...}`` per row, as ``.jsonl`` / ``.jsonl.gz`` or
``.parquet`` (the hub's shards); the documents are joined with ``"\\n\\n"``. Online,
``calibration_source="fineweb"`` streams the first documents of HF ``HuggingFaceFW/fineweb``
(``sample-10BT``) until ``FINEWEB_ONLINE_CHARS`` characters are read.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch

__all__ = [
    "CALIBRATION_WINDOWS",
    "CALIBRATION_SEQLEN",
    "DATA_DIR_ENV",
    "WIKITEXT2_TEST",
    "WIKITEXT2_CALIB",
    "data_dir",
    "resolve_data_dir",
    "wikitext2_test_text",
    "wikitext2_calibration_text",
    "CALIBRATION_SOURCES",
    "read_text_file",
    "tokenize_text",
    "test_token_ids",
    "check_calibration_source",
    "fineweb_calibration_text",
    "calibration_token_ids",
    "calibration_windows",
    "sample_windows",
    "check_data_source",
]

DATA_DIR_ENV = "DMX_DATA_DIR"
WIKITEXT2_TEST = Path("wikitext-2-raw-v1") / "test.jsonl"
WIKITEXT2_CALIB = Path("wikitext-2-tokenized") / "valid.txt"
#: Where calibration text comes from when no text file is given.
CALIBRATION_SOURCES = ("wikitext2", "fineweb")
#: The demo's dMX calibration data, the default of `dmx calibrate` and `dmx sweep` alike: seeded
#: windows of this many tokens (shorter than evaluation windows: cost grows with tokens per step).
CALIBRATION_WINDOWS = 64
CALIBRATION_SEQLEN = 256
#: Characters streamed from FineWeb online (~5 M tokens with a Llama-style tokenizer, what 400
#: steps of 8 x 2048 tokens draw their windows from).
FINEWEB_ONLINE_CHARS = 25_000_000
_ONLINE_HINT = "or pass online=True to download it from the Hugging Face hub (dataset 'wikitext')"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Resolve the local data directory: ``path`` if given, else ``$DMX_DATA_DIR``, else error.

    Raises ``FileNotFoundError`` naming both ways to set it (and the online alternative) when
    neither is set or the directory does not exist.
    """
    chosen = path if path is not None else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        raise FileNotFoundError(
            f"no data directory: pass data_dir=DIR or set ${DATA_DIR_ENV} to a "
            f"directory containing {WIKITEXT2_TEST} and {WIKITEXT2_CALIB}, {_ONLINE_HINT}"
        )
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        source = "data_dir" if path is not None else f"${DATA_DIR_ENV}"
        raise FileNotFoundError(f"data directory {str(folder)!r} (from {source}) does not exist")
    return folder


# Module-level alias: functions below take a ``data_dir`` argument that shadows ``data_dir()``.
resolve_data_dir = data_dir


def _require_file(folder: Path, relative: Path) -> Path:
    target = folder / relative
    if not target.is_file():
        raise FileNotFoundError(f"expected {target} (data directory {folder}) but it is missing; point data_dir "
                                f"or ${DATA_DIR_ENV} at the data folder (see its README.md), {_ONLINE_HINT}")
    return target


def check_data_source(data_dir: str | os.PathLike | None = None, *, split: str, online: bool = False,
                      text_file: str | os.PathLike | None = None) -> None:
    """Fail now, before any model is loaded, if the text of ``split`` cannot be read later.

    ``split``: ``"test"`` (perplexity) or ``"calibration"`` (WikiText-2 validation). A
    ``text_file`` must exist and hold text; otherwise, unless ``online``, the data directory
    (``data_dir`` / ``$DMX_DATA_DIR``) must hold the split's file (``FileNotFoundError``
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
    """Read calibration or evaluation text: plain UTF-8, or FineWeb-style ``.jsonl[.gz]``/``.parquet``.

    Rows of the document formats need a ``"text"`` field; they are joined with ``"\\n\\n"``.
    Clear errors for a missing or empty file and for rows without ``"text"``.
    """
    target = Path(path).expanduser()
    if not target.is_file():
        raise FileNotFoundError(f"text file {str(target)!r} does not exist; pass an existing UTF-8 text file, "
                                "or FineWeb-style .jsonl / .jsonl.gz / .parquet documents with a 'text' field")
    name = target.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        text = "\n\n".join(_jsonl_texts(target))
    elif name.endswith(".parquet"):
        text = "\n\n".join(_parquet_texts(target))
    else:
        text = target.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"text file {str(target)!r} is empty")
    return text


def _jsonl_texts(target: Path) -> list[str]:
    opener = gzip.open if target.name.lower().endswith(".gz") else open
    texts = []
    with opener(target, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{target}: line {number} is not valid JSON ({err.msg}); each line must be one "
                                 "document {\"text\": ...}") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f"{target}: line {number} has no string field 'text'; each line must be one "
                                 "document {\"text\": ...} (the FineWeb layout)")
            texts.append(row["text"])
    return texts


def _parquet_texts(target: Path) -> list[str]:
    import pyarrow.parquet as pq  # comes with the datasets library; only needed for .parquet

    schema = pq.read_schema(target)
    if "text" not in schema.names:
        raise ValueError(f"{target}: parquet file has no 'text' column (columns: {schema.names}); "
                         "FineWeb shards keep each document in 'text'")
    return [t for t in pq.read_table(target, columns=["text"]).column("text").to_pylist() if t]


def fineweb_calibration_text(max_chars: int = FINEWEB_ONLINE_CHARS) -> str:
    """The first documents of HF ``HuggingFaceFW/fineweb`` (``sample-10BT``), streamed, up to ``max_chars``."""
    from datasets import load_dataset  # optional, only for the online path

    texts, total = [], 0
    for row in load_dataset("HuggingFaceFW/fineweb", name="sample-10BT", split="train", streaming=True):
        texts.append(row["text"])
        total += len(row["text"])
        if total >= max_chars:
            break
    return "\n\n".join(texts)


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


def check_calibration_source(source: str, *, online: bool, text_file: str | os.PathLike | None) -> None:
    """``ValueError`` for an unknown source, or FineWeb without ``online`` (before any slow work)."""
    if source not in CALIBRATION_SOURCES:
        raise ValueError(f"unknown calibration source {source!r}; choose one of {list(CALIBRATION_SOURCES)}")
    if source == "fineweb" and text_file is None and not online:
        raise ValueError("calibration source 'fineweb' streams HuggingFaceFW/fineweb from the hub: pass online=True, "
                         "or local FineWeb shards as text_file=FILE.parquet|.jsonl[.gz]")


def calibration_token_ids(
    tokenizer,
    data_dir: str | os.PathLike | None = None,
    *,
    online: bool = False,
    text_file: str | os.PathLike | None = None,
    source: str = "wikitext2",
) -> torch.Tensor:
    """Calibration token ids ``LongTensor[1, N]``: ``text_file`` if given, else ``source``
    (WikiText-2 validation, or FineWeb streamed online)."""
    check_calibration_source(source, online=online, text_file=text_file)
    if text_file is not None:
        text = read_text_file(text_file)
    elif source == "fineweb":
        text = fineweb_calibration_text()
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
        raise ValueError(f"text has only {total} tokens, fewer than seqlen={seqlen}; lower seqlen or use more text")
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
    source: str = "wikitext2",
) -> torch.Tensor:
    """``n`` seeded calibration windows ``LongTensor[n, seqlen]`` from the calibration text (see above)."""
    ids = calibration_token_ids(tokenizer, data_dir, online=online, text_file=text_file, source=source)
    return sample_windows(ids, n, seqlen, seed)

