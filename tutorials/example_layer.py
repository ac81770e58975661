"""The running example of the tutorials: one real layer of the embedded SmolLM2-135M.

``model.layers.29.mlp.down_proj``, the MLP down-projection of the last decoder block (its input
is the SwiGLU product, where the activation outliers are largest). Notebooks 01 and 02 read its
weight straight from the GGUF file with the ``gguf`` package (seconds, without building the
model); notebook 04 loads the model, checks that the same weight is what the model holds, and
follows the layer to its assignment.
"""

from __future__ import annotations

import numpy as np

#: The layer's name in the Hugging Face model and in the GGUF file.
NAME = "model.layers.29.mlp.down_proj"
GGUF_NAME = "blk.29.ffn_down.weight"


def example_weight() -> np.ndarray:
    """The layer's weight ``[out, in]`` as float32, dequantised from the embedded GGUF file (Q4_1)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from dmx.llm.models import EMBEDDED_MODEL

    reader = GGUFReader(EMBEDDED_MODEL.directory() / EMBEDDED_MODEL.gguf_file)
    tensor = next(t for t in reader.tensors if t.name == GGUF_NAME)
    return np.ascontiguousarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
