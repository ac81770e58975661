"""KL-divergence layer-selection baseline for mixed-precision MX assignment.

The variant implemented here (one-at-a-time sensitivity, score-ordered greedy demotion):

1. Reference: the full-precision model's next-token logits on the calibration windows, for
   every position ``t`` of every window (``p_ref(. | x_<t)`` = their softmax).
2. Sensitivity of layer ``l``: every quantised layer at the *high* format except ``l``, which is
   at the *low* format; the score is the mean over all calibration tokens of
   ``KL(p_ref || p) = sum_v p_ref(v) * (log p_ref(v) - log p(v))`` (natural log, nats/token).
   All layers are scored against the same reference, one forward pass over the calibration
   windows per layer.
3. Selection: layers are sorted by ascending score (ties broken by layer order in the model) and
   demoted to the low format one by one, least sensitive first, until the average element bits
   (same weighting as the dMX regulariser: ``"mean"`` = every layer counts once, ``"elements"``
   = weighted by weight-element count) is at or below the target. The achieved average is thus
   the largest average ``<= target`` reachable along that order, so the baseline never uses
   more bits than dMX is allowed (the greedy is :func:`dmx.assignment.select_by_sensitivity`,
   shared with dMX's budget rounding and the random control).

Scores are cached in one JSON file per (model, calibration data hash, low/high format, block
size, layer list, weighting-independent settings) key; the file is rewritten atomically after
every scored layer (keeping the version before as ``<name>.prev``, used when the latest is
corrupt), so an interrupted scoring run (Ctrl-C, SIGTERM, a crash) keeps what it has measured and
a rerun only scores the missing layers. A sweep over several budgets therefore scores once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dmx.assignment import Assignment, check_target, select_by_sensitivity
from dmx.files import atomic_write_text, exists_or_previous, read_json_or_previous
from dmx.llm.prefix_replay import PrefixReplay, find_blocks
from dmx.provenance import token_hash
from dmx.wrap import input_device

CACHE_SCHEMA = "dmx.kl_scores/1"


# ----------------------------------------------------------------------------- KL measurement


def mean_token_kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ``KL(p_ref || p)`` between the next-token distributions of two logit
    tensors of shape ``[..., vocab]`` (every leading index is one token position).

    Both are normalised with ``log_softmax`` in float64 (the KL of a single quantised layer can
    be ~1e-5 nats, below float32 resolution of log-probabilities of ~-10). Returns a 0-d
    float64 tensor ``mean_t sum_v p_ref(v) (log p_ref(v) - log p(v))``.
    """
    if ref_logits.shape != logits.shape:
        raise ValueError(
            f"reference and candidate logits differ in shape: "
            f"{tuple(ref_logits.shape)} vs {tuple(logits.shape)}; both must come from the "
            "same calibration windows and the same vocabulary"
        )
    r = F.log_softmax(ref_logits.reshape(-1, ref_logits.shape[-1]).to(torch.float64), dim=-1)
    q = F.log_softmax(logits.reshape(-1, logits.shape[-1]).to(torch.float64), dim=-1)
    # kl_div(input=log q, target=log p_ref, log_target=True) = p_ref * (log p_ref - log q).
    per_token = F.kl_div(q, r, reduction="none", log_target=True).sum(dim=-1)
    return per_token.mean()


def _window_batches(windows: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    for start in range(0, windows.shape[0], batch_size):
        yield windows[start : start + batch_size]


@torch.no_grad()
def reference_logits(model: nn.Module, windows: torch.Tensor, *, batch_size: int = 1) -> torch.Tensor:
    """Float32 next-token logits ``[n, seqlen, vocab]`` of ``model`` on ``windows`` (on the CPU).

    Call it on the unquantised model: it is the full-precision reference of the KL scores.
    ``windows`` is a LongTensor ``[n, seqlen]`` (e.g. from ``dmx.llm.data.calibration_windows``).
    """
    if windows.dim() != 2 or windows.dtype != torch.long:
        raise ValueError(
            f"windows must be a LongTensor [n_windows, seqlen], got {windows.dtype} "
            f"{tuple(windows.shape)}; build it with dmx.llm.data.calibration_windows"
        )
    model.eval()
    device = input_device(model)
    out = []
    for batch in _window_batches(windows, batch_size):
        out.append(model(input_ids=batch.to(device), use_cache=False).logits.float().cpu())
    return torch.cat(out, dim=0)


@torch.no_grad()
def kl_to_reference(
    model: nn.Module, windows: torch.Tensor, ref_logits: torch.Tensor, *, batch_size: int = 1,
    replay: PrefixReplay | None = None, first_block: int = 0,
) -> float:
    """Mean token ``KL(p_ref || p_model)`` over ``windows`` (nats/token), batch by batch; with
    ``replay``, blocks before ``first_block`` hand back their recorded outputs."""
    model.eval()
    device = input_device(model)
    total, count = 0.0, 0
    for i, batch in enumerate(_window_batches(windows, batch_size)):
        if replay is not None:
            replay.batch = i
        with replay.skipping(first_block) if replay is not None else nullcontext():
            logits = model(input_ids=batch.to(device), use_cache=False).logits.cpu()
        r = ref_logits[i * batch_size : i * batch_size + batch.shape[0]]
        n_tok = logits.numel() // logits.shape[-1]
        total += float(mean_token_kl(r, logits)) * n_tok
        count += n_tok
    return total / count


# ----------------------------------------------------------------------------- score cache


@dataclass
class ScoreCache:
    """Per-layer KL scores for one key, persisted as JSON at ``path``.

    File schema: ``{"schema": "dmx.kl_scores/1", "key": {...}, "key_hash": str,
    "scores": {layer: kl_nats_per_token}}``. ``save`` writes atomically (temp file + rename)."""

    path: Path
    key: dict[str, Any]
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def key_hash(self) -> str:
        return _key_hash(self.key)

    def save(self) -> None:
        doc = {"schema": CACHE_SCHEMA, "key": self.key, "key_hash": self.key_hash, "scores": self.scores}
        atomic_write_text(self.path, json.dumps(doc, indent=1, sort_keys=True), keep_previous=True)


def _key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: str | os.PathLike, key: Mapping[str, Any]) -> Path:
    """``<cache_dir>/kl_scores-<slug>-<hash12>.json`` for a cache key."""
    slug = "".join(c if c.isalnum() else "-" for c in str(key.get("model", "model")))[-40:]
    return Path(cache_dir) / f"kl_scores-{slug}-{_key_hash(key)[:12]}.json"


def open_cache(cache_dir: str | os.PathLike, key: Mapping[str, Any]) -> ScoreCache:
    """Load the cache for ``key`` (empty if absent). A file whose key differs or that is not
    valid JSON raises ValueError naming the file, so a stale cache is never used silently."""
    key = json.loads(json.dumps(dict(key), sort_keys=True))  # normalise (tuples -> lists)
    path = cache_path(cache_dir, key)
    if not exists_or_previous(path):
        return ScoreCache(path=path, key=key)
    # a corrupt cache falls back to its version before the last scored layer
    doc = read_json_or_previous(path, what="KL score cache", fix="delete it to rescore")
    if not isinstance(doc, dict) or doc.get("schema") != CACHE_SCHEMA:
        raise ValueError(f"{path} is not a KL score cache (no schema {CACHE_SCHEMA!r}); delete it or use another cache_dir")
    if doc.get("key") != key:
        raise ValueError(
            f"KL score cache {path} belongs to a different key ({doc.get('key')!r}); "
            "delete it or use another cache_dir"
        )
    return ScoreCache(path=path, key=key, scores={k: float(v) for k, v in doc["scores"].items()})


# ----------------------------------------------------------------------------- scoring


def score_layers(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    windows: torch.Tensor,
    *,
    low_format: str,
    high_format: str,
    reference: torch.Tensor | Callable[[], torch.Tensor] | None,
    cache: ScoreCache | None = None,
    batch_size: int = 1,
    progress: bool = True,
    replay: bool = True,
) -> dict[str, float]:
    """Per-layer sensitivity ``{layer: mean token KL(p_ref || p)}`` (see module docstring).

    ``layers`` maps names to DMXLinear modules of ``model`` (``reconfigure(fixed_format=...)`` is used);
    ``reference`` is the full-precision logits from ``reference_logits`` or a
    zero-argument callable producing them (only called if some layer still needs scoring).
    With ``cache``, already-scored layers are skipped and each new score is saved at once.
    With ``replay`` (the default), the decoder blocks before a layer's block are run once, all
    high, and replayed (:mod:`dmx.llm.prefix_replay`: the same scores, about half the compute).
    On return every layer is left at ``high_format``.
    """
    scores: dict[str, float] = dict(cache.scores) if cache is not None else {}
    todo = [n for n in layers if n not in scores]
    for layer in layers.values():
        layer.reconfigure(fixed_format=high_format)
    if todo:
        if reference is None:
            raise ValueError(
                f"{len(todo)} layer(s) have no cached KL score (first: {todo[0]!r}) and no full-precision "
                "reference was given; pass reference_logits of the unquantised model"
            )
        ref = reference() if callable(reference) else reference
        if len(todo) < len(layers):
            print(f"resuming the KL scoring: {len(layers) - len(todo)} of {len(layers)} layers already scored "
                  f"({cache.path})", file=sys.stderr)
        prefix, block_of = _record_prefix(model, {n: layers[n] for n in todo}, windows, batch_size) if replay else (None, {})
        bar = tqdm(todo, desc=f"KL scores {low_format}->{high_format}", disable=not progress, unit="layer")
        for name in bar:
            layers[name].reconfigure(fixed_format=low_format)
            try:
                kl = kl_to_reference(model, windows, ref, batch_size=batch_size, replay=prefix,
                                     first_block=block_of.get(name, 0))
            finally:
                layers[name].reconfigure(fixed_format=high_format)
            scores[name] = kl
            if cache is not None:
                cache.scores[name] = kl
                cache.save()
            bar.set_postfix(layer=name[-24:], kl=f"{kl:.3g}")
    return {n: scores[n] for n in layers}


def _record_prefix(model: nn.Module, todo: Mapping[str, nn.Module], windows: torch.Tensor,
                   batch_size: int) -> tuple[PrefixReplay | None, dict[str, int]]:
    """The all-high outputs of the blocks before the last block holding a layer to score, per
    batch (None when the layers are in the first block only, or the model has no block list)."""
    blocks, block_of = find_blocks(model, todo)
    upto = max(block_of.values(), default=0)
    if blocks is None or upto == 0:
        return None, {}
    prefix = PrefixReplay(blocks, upto)
    device = input_device(model)

    def forwards() -> Iterator[None]:
        for batch in _window_batches(windows, batch_size):
            model(input_ids=batch.to(device), use_cache=False)
            yield

    model.eval()
    return (prefix, block_of) if prefix.record(forwards()) else (None, {})


# ----------------------------------------------------------------------------- end to end


def cache_key(
    *, model_id: str, windows: torch.Tensor, low_format: str, high_format: str, layer_names: Sequence[str],
    block_size: int,
) -> dict[str, Any]:
    """What a set of KL scores depends on: model, calibration windows (sha256 of the token ids
    and their shape), the two formats, the MX block size and the quantised layer list."""
    return {
        "model": str(model_id),
        "data_sha256": token_hash(windows),
        "windows": [int(s) for s in windows.shape],
        "low_format": low_format,
        "high_format": high_format,
        "block_size": int(block_size),
        "layers": list(layer_names),
    }


def reference_if_needed(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    model_id: str,
    low_format: str,
    high_format: str,
    layer_names: Sequence[str],
    block_size: int,
    cache_dir: str | os.PathLike | None,
) -> torch.Tensor | None:
    """``reference_logits(model, windows)`` unless the cache already holds every layer's score.

    Call it on the *unquantised* model, before ``quantize_model``; pass the result as
    ``reference`` to :func:`kl_assignments` with the same settings."""
    if cache_dir is not None:
        key = cache_key(model_id=model_id, windows=windows, low_format=low_format, high_format=high_format,
                        layer_names=layer_names, block_size=block_size)
        scores = open_cache(cache_dir, key).scores
        if all(n in scores for n in layer_names):
            return None
    return reference_logits(model, windows)


def _block_size(layers: Mapping[str, nn.Module]) -> int:
    sizes = {int(layer.block_size) for layer in layers.values()}
    if len(sizes) != 1:
        raise ValueError(f"the quantised layers use different MX block sizes {sorted(sizes)}; use one block size")
    return sizes.pop()


def kl_assignments(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    windows: torch.Tensor,
    *,
    targets: Sequence[float],
    low_format: str,
    high_format: str,
    reference: torch.Tensor | Callable[[], torch.Tensor] | None,
    model_id: str,
    cache_dir: str | os.PathLike | None = None,
    weighting: str = "mean",
    batch_size: int = 1,
    progress: bool = True,
) -> dict[float, Assignment]:
    """KL-heuristic assignments for every target (layers scored once; see module docstring).

    ``reference``: full-precision logits on ``windows`` (``reference_logits`` of
    the unquantised model) or a callable producing them, only called when some score is
    missing from the cache in ``cache_dir``. Targets are validated before any scoring. Returns
    ``{target: Assignment}`` with provenance (method, variant, model, data hash, cache file,
    scores); the layers are left at ``high_format``."""
    for t in targets:  # fail fast, before minutes of scoring
        check_target(float(t), low_format=low_format, high_format=high_format)
    block_size = _block_size(layers)
    key = cache_key(model_id=model_id, windows=windows, low_format=low_format, high_format=high_format,
                    layer_names=list(layers), block_size=block_size)
    cache = open_cache(cache_dir, key) if cache_dir is not None else None
    scores = score_layers(
        model, layers, windows, low_format=low_format, high_format=high_format, reference=reference,
        cache=cache, batch_size=batch_size, progress=progress,
    )
    sizes = {n: int(layer.linear.weight.numel()) for n, layer in layers.items()}
    out: dict[float, Assignment] = {}
    for t in targets:
        formats = select_by_sensitivity(
            scores, list(layers), low_format=low_format, high_format=high_format, target_bits=float(t),
            sizes=sizes, weighting=weighting,
        )
        out[float(t)] = Assignment.from_formats(
            formats, block_size=block_size, weighting=weighting, layer_sizes=sizes,
            provenance={
                "method": "kl",
                "variant": "one-at-a-time low-format KL(p_ref||p) vs full precision, rest at high; "
                "greedy demotion by ascending score until average bits <= target",
                "target_bits": float(t),
                "model": str(model_id),
                "calibration_windows": {"count": key["windows"][0], "seqlen": key["windows"][1],
                                        "sha256": key["data_sha256"]},
                "cache_file": None if cache is None else str(cache.path),
                "kl_scores": scores,
            },
        )
    return out
