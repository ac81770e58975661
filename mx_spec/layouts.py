"""Declared packed layouts: byte layouts of the element stream that implementations use besides
``mx_spec.pack``'s (golden/README.md, "Packed layout").

=========== ================ ==============================================================
layout      choices          bytes (the element stream: block axis last, C order)
=========== ================ ==============================================================
``fp4``     ``low-first``    two codes per byte, the even-index element in the low nibble
            ``high-first``   two codes per byte, the even-index element in the high nibble
``fp6``     ``stream``       one LSB-first bit stream, 4 elements in 3 bytes
            ``pad32``        32-bit little-endian words of 5 elements (element k of the word
                             in bits 6k..6k+5, bits 30-31 zero); the last word zero-padded
=========== ================ ==============================================================

The golden files hold the default bytes; the verifier derives the bytes of a declared layout
from the expected element codes (a pure re-packing, so no extra data is shipped).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mx_spec.formats import ElementFormat, get_element
from mx_spec.packing import pack_elements

#: layout name -> its choices, the default (``mx_spec.pack``'s) first.
LAYOUT_CHOICES: dict[str, tuple[str, ...]] = {"fp4": ("low-first", "high-first"), "fp6": ("stream", "pad32")}


def parse_layouts(text: str | Iterable[str] | None) -> frozenset[str]:
    """The non-default layouts of ``"fp4=high-first,fp6=pad32"``; unknown ones -> ValueError."""
    if text is None:
        return frozenset()
    items = text.split(",") if isinstance(text, str) else list(text)
    valid = ", ".join(f"{k}={'|'.join(c)}" for k, c in LAYOUT_CHOICES.items())
    out = set()
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key not in LAYOUT_CHOICES or value not in LAYOUT_CHOICES[key]:
            raise ValueError(f"unknown layout {item!r}; valid: {valid}")
        if value != LAYOUT_CHOICES[key][0]:
            out.add(f"{key}={value}")
    return frozenset(out)


def pack_fp6_pad32(codes: np.ndarray) -> np.ndarray:
    """``fp6=pad32``: 5 six-bit codes per little-endian 32-bit word, top 2 bits zero."""
    c = np.asarray(codes, dtype=np.uint32).ravel()
    c = np.concatenate([c, np.zeros(-c.size % 5, np.uint32)]).reshape(-1, 5)
    words = (c << (6 * np.arange(5, dtype=np.uint32))).sum(axis=1, dtype=np.uint32)
    return words.astype("<u4").view(np.uint8)


def element_bit_offsets(count: int, elem: str | ElementFormat, layouts: frozenset[str]) -> np.ndarray:
    """First bit (byte * 8 + bit, LSB = 0) of each stream element in the packed bytes of a layout."""
    e = get_element(elem)
    k = np.arange(count, dtype=np.int64)
    if e.bits == 4 and "fp4=high-first" in layouts:
        return 8 * (k // 2) + 4 * (1 - k % 2)
    if e.bits == 6 and "fp6=pad32" in layouts:
        return 32 * (k // 5) + 6 * (k % 5)
    return e.bits * k


def pack_stream(codes: np.ndarray, elem: str | ElementFormat, layouts: frozenset[str]) -> np.ndarray:
    """Packed bytes of an element stream (C order of ``codes``) under the declared layouts."""
    e = get_element(elem)
    if e.bits == 4 and "fp4=high-first" in layouts:
        low_first = pack_elements(codes, e)
        return ((low_first << 4) | (low_first >> 4)).astype(np.uint8)
    if e.bits == 6 and "fp6=pad32" in layouts:
        return pack_fp6_pad32(codes)
    return pack_elements(codes, e)
