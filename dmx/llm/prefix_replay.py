"""Replaying the decoder blocks before a layer, so one-at-a-time scoring skips what it cannot change.

The KL baseline scores each layer with every other layer at the high format. For a layer in
decoder block ``b``, blocks ``0 .. b-1`` then see exactly the formats of the all-high model, so
their outputs are the same tensors for every layer of block ``b`` and later: recorded once per
calibration batch (:meth:`PrefixReplay.record`), they are handed back instead of recomputed
(:meth:`PrefixReplay.skipping`) and only blocks ``b ..`` run. The scores are bit-identical to
full forwards (same inputs, same operations; ``tests/llm/test_kl_baseline.py`` checks it) and a
scoring pass costs on average about half the blocks.

Which blocks: the ``nn.ModuleList`` of the model whose entries hold the scored layers (the
decoder layers of a Hugging Face causal LM), found by module identity, so any architecture whose
blocks run one after another works; a model without one is scored with full forwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

#: Recorded block outputs beyond this many bytes are not kept (the scoring falls back to full
#: forwards): 8 x 512 tokens of SmolLM2-135M's 30 blocks take ~0.3 GB, of a 1.7 B model ~0.8 GB.
MAX_RECORDED_BYTES = 4 << 30


def find_blocks(model: nn.Module, layers: Mapping[str, nn.Module]) -> tuple[nn.ModuleList | None, dict[str, int]]:
    """The model's sequence of blocks holding ``layers`` and each layer's block index
    (``None, {}`` when no ``nn.ModuleList`` holds them one block after another)."""
    wanted = {id(layer): name for name, layer in layers.items()}
    best: tuple[nn.ModuleList | None, dict[str, int]] = (None, {})
    for module in model.modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        index = {wanted[id(m)]: i for i, block in enumerate(module) for m in block.modules() if id(m) in wanted}
        if len(index) > len(best[1]):
            best = (module, index)
    return best


def _copy(value: Any) -> Any:
    """A copy of a block's output (a tensor or a tuple of them), so a later in-place operation
    of the model cannot change what is replayed."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        items = [_copy(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)  # a named tuple keeps its type
    return value


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


class PrefixReplay:
    """Outputs of ``blocks[:upto]`` per calibration batch, recorded from the current model."""

    def __init__(self, blocks: nn.ModuleList, upto: int):
        self.blocks, self.upto = blocks, upto
        self.outputs: list[list[Any]] = []  # [batch][block]
        self.batch = 0

    @torch.no_grad()
    def record(self, run_batches: Iterator[None]) -> bool:
        """Run ``run_batches`` (one model forward per item) and keep each block's output; False
        (nothing kept) when they would exceed :data:`MAX_RECORDED_BYTES`, or when the blocks do
        not run once each in list order (then a block before a layer could depend on it)."""
        calls: list[tuple[int, Any]] = []

        def keep(i: int):
            return lambda _module, _args, out: calls.append((i, _copy(out)))

        handles = [block.register_forward_hook(keep(i)) for i, block in enumerate(self.blocks[: self.upto])]
        total = 0
        try:
            for _ in run_batches:
                order = [i for i, _ in calls]
                total += sum(_nbytes(out) for _, out in calls)
                if order != list(range(self.upto)) or total > MAX_RECORDED_BYTES:
                    self.outputs.clear()
                    return False
                self.outputs.append([out for _, out in calls])
                calls.clear()
        finally:
            for h in handles:
                h.remove()
        return True

    @contextmanager
    def skipping(self, first: int) -> Iterator[None]:
        """Within: blocks ``0 .. first-1`` return their recorded output of batch :attr:`batch`
        without computing (set :attr:`batch` before each forward)."""
        first = min(first, self.upto)

        def replay(i: int):
            return lambda *args, **kwargs: _copy(self.outputs[self.batch][i])

        # an instance attribute shadows the class's forward; one already there (accelerate's
        # device hooks put theirs there) is put back afterwards
        before = [vars(self.blocks[i]).get("forward") for i in range(first)]
        for i in range(first):
            self.blocks[i].forward = replay(i)
        try:
            yield
        finally:
            for i, forward in enumerate(before):
                if forward is None:
                    del self.blocks[i].forward
                else:
                    self.blocks[i].forward = forward
