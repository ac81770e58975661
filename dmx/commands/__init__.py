"""Subcommands of the ``dmx`` CLI and the flags they share.

Each ``dmx/commands/<name>.py`` exposes ``register(subparsers)`` that adds one subparser whose
``func`` default runs the command with the parsed ``argparse.Namespace``. The helpers here give
every command the same model / data flags and the same table output.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["add_model_args", "add_data_args", "add_quant_args", "load_model_from_args", "format_table", "print_table"]


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model --dtype --device --device-map --trust-remote-code --threads``."""
    from dmx.models import SHORT_NAMES

    group = parser.add_argument_group("model")
    group.add_argument("--model", default="smollm2-135m",
                       help="short name (%s), a local checkpoint directory, or a Hugging Face hub id "
                            "org/name (default: the embedded smollm2-135m, no network)" % ", ".join(sorted(SHORT_NAMES)))
    group.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="dtype the weights are loaded in (default float32)")
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (ignored with --device-map)")
    group.add_argument("--device-map", default=None,
                       help="accelerate device map, e.g. 'auto' to spread a large model over all GPUs")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow model code from the hub repository to run (off by default)")
    group.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice; 1 is fastest on an oversubscribed machine)")


def add_quant_args(parser: argparse.ArgumentParser) -> None:
    """``--family --include-lm-head --block-size``."""
    group = parser.add_argument_group("quantisation")
    group.add_argument("--family", default="fp8_fp4", help="dMX format family (fp8_fp4 or fp6_fp4; default fp8_fp4)")
    group.add_argument("--include-lm-head", action="store_true",
                       help="also quantise the output head (default: embeddings and lm_head stay full precision)")
    group.add_argument("--block-size", type=int, default=32, help="MX block size (OCP MX v1.0: 32)")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--data-dir --online --seqlen``."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", default=None,
                       help="local data directory with wikitext-2-raw-v1/ and wikitext-2-tokenized/ "
                            "(default: $DMX_DATA_DIR)")
    group.add_argument("--online", action="store_true",
                       help="download WikiText-2 from the Hugging Face hub instead of the data directory")
    group.add_argument("--seqlen", type=int, default=2048, help="tokens per window (default 2048)")


def load_model_from_args(args: argparse.Namespace):
    """``(model, tokenizer)`` from the flags of :func:`add_model_args`; sets HF offline mode for the embedded model."""
    from dmx.models import SHORT_NAMES, EmbeddedModel, load_model

    if getattr(args, "threads", None):
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if isinstance(SHORT_NAMES.get(args.model), EmbeddedModel):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return load_model(args.model, dtype=args.dtype, device=args.device, device_map=args.device_map,
                      trust_remote_code=args.trust_remote_code)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return "" if value is None else str(value)


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Plain-text table with aligned columns (floats to 4 significant digits)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([line, rule, *body])


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print :func:`format_table` to stdout."""
    print(format_table(rows, headers))
