"""Flat exports of the golden files for readers without a JSON parser: C programs and RTL benches.

``flat`` (``<format>.flat.txt``, read by ``golden/c_example/mx_quant.c``): line oriented, one
header line, then per case a ``case`` line and an ``input`` line::

    mx-spec-flat 1 <format> kind <fp|int> bits <w> ebits <e> mbits <m> bias <b> emax <X> emin <n> max_normal <v>
    case <id> <scale_mode> <rounding> <block_size> <axis, 0..ndim-1> <input_dtype> <ndim> <dim>... <n items>
    input <hex of the input bits, as in the JSON>

``readmemh`` (``<format>/<scale_mode>_<rounding>.{input,scales,elements,care}.memh`` plus
``.cases.txt``): one item per line in hex, the form Verilog's ``$readmemh`` reads; the cases
file gives, per case, its id, dtype, block size, the block axis and shape, the offsets and
counts of its items in the memories, and ``policies`` with the non-default policies its
outputs depend on (``-`` for none: the expected outputs hold for an implementation that
follows mx_spec's defaults, otherwise see golden/README.md, Policies).  ``care.memh`` runs
parallel to ``elements.memh``: ``1`` where the element code must match, ``0`` where it is
don't-care (its block's scale is the NaN code 0xFF).  Both exports are derived from the loaded
golden files, so they hold exactly the JSON's cases.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mx_spec.formats import get_format
from mx_spec.atomic import atomic_write_text
from mx_spec.conformance.compare import scale_per_element
from mx_spec.conformance.golden import INPUT_DTYPES, GoldenFile, array_to_hex, load_golden
from mx_spec.scale import E8M0_NAN

FLAT_VERSION = 1


def flat_header(fmt_name: str) -> str:
    """The first line of a flat export: the format's parameters from the one format table."""
    e = get_format(fmt_name).element
    return (f"mx-spec-flat {FLAT_VERSION} {fmt_name} kind {e.kind} bits {e.bits} ebits {e.ebits} mbits {e.mbits} "
            f"bias {e.bias} emax {e.emax} emin {e.emin} max_normal {e.max_normal!r}")


def render_flat(gfile: GoldenFile) -> str:
    """The flat text of one golden file (every case, every mode)."""
    lines = [flat_header(gfile.fmt)]
    for c in gfile.cases:
        dims = " ".join(str(d) for d in c.x.shape)
        lines.append(f"case {c.id} {c.scale_mode} {c.rounding} {c.block_size} {c.axis % c.x.ndim} "
                     f"{c.input_dtype} {c.x.ndim} {dims} {c.x.size}")
        lines.append("input " + array_to_hex(c.x, c.input_dtype))
    return "\n".join(lines) + "\n"


def _memh(hex_text: str, digits: int) -> list[str]:
    return [hex_text[i:i + digits] for i in range(0, len(hex_text), digits)]


def render_readmemh(gfile: GoldenFile, mode: tuple[str, str]) -> dict[str, str]:
    """{suffix: text} of the ``$readmemh`` memories of one format and mode (inputs as 64-bit words
    holding the input's bit pattern right-aligned, so every dtype fits one memory width)."""
    inputs, scales, elements, care, index = [], [], [], [], []
    for c in gfile.cases:
        if (c.scale_mode, c.rounding) != mode:
            continue
        digits = 2 * INPUT_DTYPES[c.input_dtype][1].itemsize
        words = [w.rjust(16, "0") for w in _memh(array_to_hex(c.x, c.input_dtype), digits)]
        index.append(f"{c.id} {c.input_dtype} {c.block_size} {c.axis % c.x.ndim} {'x'.join(map(str, c.x.shape))} "
                     f"input {len(inputs)} {len(words)} scales {len(scales)} {c.scales.size} "
                     f"elements {len(elements)} {c.elements.size} policies {','.join(c.policies) or '-'}")
        inputs += words
        scales += _memh(array_to_hex(c.scales), 2)
        elements += _memh(array_to_hex(c.elements), 2)
        if c.x.size:
            care += ["1" if m else "0" for m in (scale_per_element(c) != E8M0_NAN).reshape(-1)]
    header = ["// id dtype block_size axis shape input <offset> <count> scales <offset> <count> "
              "elements <offset> <count> policies <non-default policies the outputs depend on, or ->; "
              "care.memh: 1 = element must match, 0 = don't-care (NaN-scale block)"]
    return {"input.memh": "\n".join(inputs) + "\n", "scales.memh": "\n".join(scales) + "\n",
            "elements.memh": "\n".join(elements) + "\n", "care.memh": "\n".join(care) + "\n",
            "cases.txt": "\n".join(header + index) + "\n"}


def export_flat(out_dir: str | os.PathLike, formats: Iterable[str] | None = None,
                golden_dir: str | os.PathLike | None = None, readmemh: bool = False) -> list[Path]:
    """Write ``<out_dir>/<format>.flat.txt`` (and the ``$readmemh`` memories); returns the paths."""
    out = Path(out_dir)
    written = []
    for name, gfile in load_golden(golden_dir, formats).items():
        path = out / f"{name}.flat.txt"
        atomic_write_text(path, render_flat(gfile))
        written.append(path)
        if readmemh:
            for mode in sorted({(c.scale_mode, c.rounding) for c in gfile.cases}):
                for suffix, text in render_readmemh(gfile, mode).items():
                    p = out / name / f"{mode[0]}_{mode[1]}.{suffix}"
                    atomic_write_text(p, text)
                    written.append(p)
    return written
