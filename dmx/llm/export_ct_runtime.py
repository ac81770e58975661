"""What a compressed-tensors runtime computes for a dMX export: its MX activation rule, checked
against the golden vectors, and the perplexity it gives next to the project's.

compressed-tensors 0.20 quantises input activations dynamically (``forward_quantize`` ->
``compute_dynamic_scales_and_zp`` -> ``calculate_qparams`` -> ``generate_mx_scales``): per block
of 32 it takes amax, rounds it to the element's mantissa width by adding half an ulp of that width
to the float bit pattern and masking the mantissa (``round_to_power_2``), then X = floor(log2) -
floor(log2 max_normal). The width is 1 bit for E2M1, 3 bits for E2M3 and 1 bit for E4M3 (the FP4
width: ``mantissa = FP6_E2M3_DATA.mantissa if num_bits == 6 else FP4_E2M1_DATA.mantissa``). So
X = floor + 1 when amax's significand is >= 1.75 (E2M1, E4M3) or >= 1.9375 (E2M3): the golden
``even`` mode (torchao EVEN) for E2M1 and E2M3; for E4M3 ``even`` would use 3 bits (>= 1.9375),
so amax significands in [1.75, 1.9375) get one scale step more than ``even`` (and than OCP's
``floor``, which never rounds up). Elements: RNE, saturating (float8 cast after a clamp for E4M3).

:func:`ct_quantize` is that quantiser in ``mx_spec.conformance.verify``'s shape; ``python -m
dmx.llm.export_ct_runtime --out results/export_ct/results.json`` writes the conformance table (every
scale mode claimed in turn) and the perplexities of exports of the demo assignments under the
runtime's rule next to the project's ``dmx eval`` (2 windows of 2048 tokens of WikiText-2 test).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import torch

from dmx.assignment import Assignment, apply_assignment
from dmx.llm.data import test_token_ids
from dmx.llm.export import dequantize_weight, quantize_weight
from dmx.llm.export_ct import CT_FORMATS, export_compressed_tensors, load_compressed_tensors, mx_args
from dmx.files import atomic_write_text, sha256_file
from dmx.llm.perplexity import perplexity
from dmx.llm.pipeline import ModelSpec, load_rotated_model, quantize
from dmx.provenance import software_versions
from dmx.llm.rotation import RotationSpec
from mx_spec.scale import SCALE_MODES
from mx_spec.conformance.verify import verify_quantizer

#: numpy element types whose codes are the OCP element codes (ml_dtypes), for CT's values.
CODE_TYPES = {"mxfp4_e2m1": ml_dtypes.float4_e2m1fn, "mxfp6_e2m3": ml_dtypes.float6_e2m3fn,
              "mxfp8_e4m3": ml_dtypes.float8_e4m3fn}
TORCH_INPUTS = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16}


def _as_torch(x: np.ndarray) -> torch.Tensor:
    if x.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(x).view(np.int16)).view(torch.bfloat16)
    if x.dtype not in TORCH_INPUTS:
        raise NotImplementedError(f"runtime activations are float32/bfloat16/float16, not {x.dtype}")
    return torch.from_numpy(np.ascontiguousarray(x))


def ct_scales_and_values(x: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """compressed-tensors' dynamic MX quantisation of ``x`` (blocks of 32 along the last axis):
    ``(float scales [..., n/32], element values [..., n])``, exactly as its forward computes them."""
    from compressed_tensors.quantization.lifecycle.forward import quantize
    from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp

    args = mx_args(fmt, dynamic=True)
    scale, zero_point = compute_dynamic_scales_and_zp(value=x, args=args, module=torch.nn.Identity())
    values = quantize(x=x, scale=scale, zero_point=zero_point, args=args)
    return scale, values


def ct_quantize(x: np.ndarray, fmt: str, *, block_size: int, axis: int, scale_mode: str, rounding: str):
    """compressed-tensors' activation quantiser as an ``mx_spec.conformance.verify`` quantizer: ``(scales,
    elements)`` uint8 codes. It has ONE scale rule whatever ``scale_mode`` the case asks for,
    so verifying it under each mode shows which mode it is; unsupported inputs raise
    NotImplementedError (skipped)."""
    if fmt not in CT_FORMATS or block_size != 32 or rounding != "rne":
        raise NotImplementedError("compressed-tensors has MXFP4/MXFP6 E2M3/MXFP8 E4M3, blocks of 32, RNE")
    if x.ndim == 0 or x.shape[axis] % block_size:
        raise NotImplementedError("no ragged blocks")
    moved = np.moveaxis(x, axis, -1)
    scale, values = ct_scales_and_values(_as_torch(moved), fmt)
    exps = torch.log2(scale.double())
    if not torch.all(torch.isfinite(exps) & (exps == exps.round())):
        raise ValueError("compressed-tensors produced a scale that is not a finite power of two")
    scales = (exps + 127).to(torch.int64).numpy().astype(np.uint8)
    codes = values.double().numpy().astype(CODE_TYPES[fmt]).view(np.uint8)
    return np.moveaxis(scales, -1, axis), np.moveaxis(codes, -1, axis)


#: Element code of -0.0 per element width: compressed-tensors writes +0.0 (code 0) instead.
NEGATIVE_ZERO = {4: 0x8, 6: 0x20, 8: 0x80}


def _cause(mismatches, bits: int) -> str:
    """Why one case failed: ``signed_zero`` (only -0.0 written as +0.0, same value); ``range`` (a
    NaN/Inf block, which gets no finite power-of-two scale, or a float16 block whose scale is
    below float16's range, computed in float16 and replaced by 1.0, code 0x7f, its elements then
    flushed to zero); else ``rule``."""
    if any(m.field == "exception" for m in mismatches):
        return "range"
    signed_zero = [m.field == "elements" and m.expected_code == NEGATIVE_ZERO[bits] and m.actual_code == 0
                   for m in mismatches]
    if all(signed_zero):
        return "signed_zero"
    fallback = [m.field == "scales" and m.actual_code == 127 and m.group in ("all_zero", "float16") for m in mismatches]
    # the elements of a block scaled by 1.0 instead of 2^X flush to zero
    if any(fallback) and all(f or (m.field == "elements" and m.actual_code in (0, NEGATIVE_ZERO[bits])) for f, m in zip(fallback, mismatches)):
        return "range"
    return "rule"


def conformance() -> dict[str, Any]:
    """``mx-spec verify`` of :func:`ct_quantize` claiming each scale mode in turn (RNE): per format
    and mode, passed/failed/skipped cases and the failed ones by cause (:func:`_cause`)."""
    rows = []
    for mode in SCALE_MODES:
        report = verify_quantizer(ct_quantize, formats=list(CT_FORMATS), modes=[(mode, "rne")])
        by_case: dict[str, list] = {}
        for m in report.mismatches:
            by_case.setdefault(m.case_id, []).append(m)
        for (fmt, _, _), tally in sorted(report.tallies.items()):
            causes = Counter(_cause(ms, CT_FORMATS[fmt]) for cid, ms in by_case.items() if cid.startswith(f"{fmt}/"))
            rule_groups = sorted({cid.split("/")[3] for cid, ms in by_case.items()
                                  if cid.startswith(f"{fmt}/") and _cause(ms, CT_FORMATS[fmt]) == "rule"})
            rows.append({"format": fmt, "scale_mode": mode, "passed": tally.passed, "failed": tally.failed,
                         "skipped": tally.skipped, "failed_by_cause": dict(sorted(causes.items())),
                         "rule_failure_groups": rule_groups})
    return {"quantizer": "compressed_tensors forward_quantize (dynamic MX input activations)", "rows": rows}


def _perplexity(model, ids, windows: int) -> float:
    return perplexity(model, ids, seqlen=2048, max_windows=windows, progress=False)


def _use_decoded_weights(layers) -> None:
    """Replace each layer's weight by its MX-decoded weight (the exported bits), so a later scale
    mode changes the activations only (re-quantising MX-decoded blocks reproduces them)."""
    with torch.no_grad():
        for layer in layers.values():
            fmt, w = layer.format_name(), layer.linear.weight
            packed, scales = quantize_weight(w, fmt, layer.block_size, scale_mode=layer.scale_mode)
            w.copy_(torch.from_numpy(dequantize_weight(packed, scales, fmt, tuple(w.shape), layer.block_size)))
            layer.invalidate_caches()


def measure(assignment_path: str, *, windows: int, data_dir: str | None, workdir: Path) -> dict[str, Any]:
    """Perplexities of one assignment: the project's model (``dmx eval``: floor rule; weights only;
    decoded weights with the ``even`` rule) and its compressed-tensors export loaded on CPU
    (the runtime's rule; weights only)."""
    assignment = Assignment.from_json(assignment_path)
    rotation = RotationSpec.from_description(assignment.provenance.get("rotation"), source=assignment_path)
    spec = ModelSpec(model="smollm2-135m", threads=torch.get_num_threads(), rotation=rotation)
    model, tokenizer = load_rotated_model(spec)
    ids = test_token_ids(tokenizer, data_dir)
    layers = quantize(model, spec)
    for layer in layers.values():
        layer.eval()
    apply_assignment(layers, assignment)
    row: dict[str, Any] = {"assignment": assignment_path, "assignment_sha256": sha256_file(assignment_path),
                           "element_bits": assignment.element_bits, "rotation": rotation.flags()}
    timings = {}
    start = time.perf_counter()
    row["project_floor"] = _perplexity(model, ids, windows)
    for layer in layers.values():
        layer.reconfigure(quantize_input=False)
    row["project_weights_only"] = _perplexity(model, ids, windows)
    for mode, key in ((False, "runtime_weights_only"), (True, "runtime")):
        for layer in layers.values():
            layer.reconfigure(quantize_input=True)
        out = export_compressed_tensors(model, layers, workdir / key, assignment=assignment,
                                        assignment_sha256=row["assignment_sha256"], quantize_input=mode)
        row[key] = _perplexity(load_compressed_tensors(out), ids, windows)
    _use_decoded_weights(layers)
    for layer in layers.values():
        layer.reconfigure(scale_mode="even")
    row["project_even"] = _perplexity(model, ids, windows)
    timings["seconds"] = round(time.perf_counter() - start, 1)
    row.update(timings)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmx.llm.export_ct_runtime", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="results JSON to write")
    parser.add_argument("--assignments", nargs="+", default=["results/demo_unrotated/seed-0/assignment.json",
                                                             "results/headline_5bit_hadamard/assignments/dmx_at_5.json"])
    parser.add_argument("--windows", type=int, default=2, help="2048-token WikiText-2 test windows")
    parser.add_argument("--data-dir", default=None, help="WikiText-2 folder (default $DMX_DATA_DIR)")
    parser.add_argument("--conformance-only", action="store_true",
                        help="recompute only the conformance table; keep the perplexity rows of the existing --out file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {"conformance": conformance(), "perplexity": [], "windows": args.windows, "seqlen": 2048,
              "command": "python -m dmx.llm.export_ct_runtime --out " + args.out, "versions": software_versions()}
    result["versions"]["compressed_tensors"] = version("compressed-tensors")
    if args.conformance_only:
        result["perplexity"] = json.loads(Path(args.out).read_text())["perplexity"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for path in args.assignments:
                result["perplexity"].append(measure(path, windows=args.windows, data_dir=args.data_dir,
                                                    workdir=Path(tmp) / Path(path).parent.name))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["perplexity"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
