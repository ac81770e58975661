"""A tiny random Llama saved as a local checkpoint with a 256-token byte-level tokenizer.

Shared by the tests that drive the commands / the sweep through a model *path* (as users do),
without the network or the 135M model. (The zero-shot tests need a tokenizer with an EOS token
and use ``fixtures/zeroshot/tiny_byte_lm.py`` instead.)
"""

from __future__ import annotations

from pathlib import Path


def save_tiny_byte_llama(path: Path, seed: int = 2) -> Path:
    """Save ``dmx.llm.models.tiny_model("llama", seed)`` and a byte-level BPE tokenizer (no merges) to ``path``."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    from dmx.llm.models import tiny_model

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tiny_model("llama", seed=seed).save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(path)
    return path
