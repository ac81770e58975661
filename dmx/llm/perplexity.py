"""WikiText-2 perplexity with the GPTQ protocol.

Protocol (identical to GPTQ / SparseGPT / AWQ / OmniQuant evaluation scripts, so numbers compare
with papers): the test rows are joined with ``"\\n\\n"`` and tokenised once (see
:func:`dmx.llm.data.test_token_ids`); the id stream is cut into ``N // seqlen`` non-overlapping
windows of ``seqlen`` tokens (the tail is dropped); each window is scored independently (no
context carried over); a window's NLL is the mean next-token cross-entropy over its
``seqlen - 1`` predicted positions, multiplied by ``seqlen``; and

    ppl = exp( sum_w NLL_w / (n_windows * seqlen) )

i.e. the exponential of the mean per-window token NLL. ``max_windows`` keeps only the first
windows for quick runs (such numbers are not comparable with full-test-set results);
``first_window`` skips that many windows first, so a result can be reported on windows that
were never used to choose anything (held-out windows, e.g. 32-63 after studies on 0-31).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dmx.llm.models import context_length
from dmx.wrap import input_device

__all__ = ["window_count", "window_nlls", "perplexity", "perplexity_of"]


def window_count(n_tokens: int, seqlen: int, max_windows: int | None = None, first_window: int = 0) -> int:
    """Number of non-overlapping ``seqlen`` windows scored: ``N // seqlen`` less the ``first_window``
    skipped ones, capped by ``max_windows``."""
    total = n_tokens // seqlen
    if not (isinstance(first_window, int) and 0 <= first_window < max(total, 1)):
        raise ValueError(f"first_window must be a whole number from 0 to {max(total - 1, 0)} (the text has {total} "
                         f"windows of {seqlen} tokens), got {first_window!r}")
    count = total - first_window
    if max_windows is not None:
        if max_windows < 1:
            raise ValueError(f"max_windows must be >= 1 (or None for all windows), got {max_windows}")
        count = min(count, max_windows)
    return count


def _check_seqlen(model: nn.Module, seqlen: int, n_tokens: int) -> None:
    if seqlen < 2:
        raise ValueError(f"seqlen must be >= 2, got {seqlen}")
    limit = context_length(model)
    if limit is not None and seqlen > limit:
        raise ValueError(
            f"seqlen={seqlen} exceeds the model's context length {limit} (config.max_position_embeddings); "
            f"use seqlen={limit} or less"
        )
    if n_tokens < seqlen:
        raise ValueError(f"only {n_tokens} tokens, fewer than one window of seqlen={seqlen}; lower seqlen")


@torch.inference_mode()
def window_nlls(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    seqlen: int = 2048,
    max_windows: int | None = None,
    first_window: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """Per-window GPTQ NLL (``mean CE over seqlen-1 positions * seqlen``) as float64 ``Tensor[n_windows]``,
    for the windows ``first_window, first_window + 1, ...``."""
    flat = input_ids.reshape(1, -1)
    _check_seqlen(model, seqlen, flat.shape[1])
    count = window_count(flat.shape[1], seqlen, max_windows, first_window)
    device = input_device(model)
    nlls = torch.empty(count, dtype=torch.float64)
    for index in tqdm(range(count), desc=f"perplexity (seqlen {seqlen})", disable=not progress, leave=False):
        start = (first_window + index) * seqlen
        window = flat[:, start : start + seqlen].to(device)
        logits = model(input_ids=window, use_cache=False).logits
        loss = F.cross_entropy(logits[0, :-1].float(), window[0, 1:].to(logits.device))
        nlls[index] = float(loss) * seqlen
    return nlls


def perplexity(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    seqlen: int = 2048,
    max_windows: int | None = None,
    first_window: int = 0,
    progress: bool = True,
) -> float:
    """GPTQ-protocol perplexity of ``model`` on ``input_ids`` (``LongTensor[1, N]``); see module doc.

    Raises ``ValueError`` if ``seqlen`` exceeds the model's context or the text is shorter than
    one window.
    """
    nlls = window_nlls(model, input_ids, seqlen=seqlen, max_windows=max_windows, first_window=first_window,
                       progress=progress)
    return perplexity_of(nlls, seqlen)


def perplexity_of(nlls, seqlen: int) -> float:
    """The GPTQ perplexity of per-window NLLs (:func:`window_nlls`, a tensor or a stored list):
    ``exp(sum NLL_w / (n_windows * seqlen))``."""
    nlls = torch.as_tensor(nlls, dtype=torch.float64)
    return math.exp(float(nlls.sum()) / (nlls.numel() * seqlen))
