"""``mx-spec`` console script: ``demo``, ``golden`` and ``verify`` subcommands.

Exit status of ``verify`` (``mx_spec.conformance.report.EXIT_CODES``): 0 PASS (every asked case compared on
every asked field, none failed), 1 FAIL (a mismatch or an unmet ``--require``/``--strict``),
2 bad usage or unreadable input, 3 PARTIAL (nothing failed, but some asked case or field was not
compared), 4 NO CASES COMPARED.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

import numpy as np

from mx_spec.elements import ROUNDINGS
from mx_spec.formats import MX_FORMATS
from mx_spec.conformance.golden import ALL_MODES
from mx_spec.conformance.golden_export import export_flat
from mx_spec.conformance.golden_gen import write_golden
from mx_spec.layouts import LAYOUT_CHOICES
from mx_spec.packing import pack
from mx_spec.policies import POLICY_CHOICES, choices_text
from mx_spec.quantize import dequantize, quantize
from mx_spec.scale import E8M0_BIAS, SCALE_MODES
from mx_spec.conformance.verify import verify_quantizer, verify_results


#: What the library's messages call a setting (a parameter of :func:`mx_spec.conformance.verify.verify_results` or
#: :func:`mx_spec.conformance.golden.load_golden`) -> the ``mx-spec`` flag that sets it (:func:`parameters_as_flags`).
FLAGS = {"golden_dir": "--golden", "policies": "--policy", "layouts": "--layout", "require": "--require",
         "strict": "--strict"}


def parameters_as_flags(message: str, flags: dict[str, str]) -> str:
    """A library message as a command-line user reads it: the library names Python parameters,
    the command layer translates them to its flags (``flags``: parameter -> flag).

    ``name=True`` becomes ``--flag``, ``name=value`` (a quoted string or one word) ``--flag value``,
    and a bare ``name`` ``--flag`` when it has an underscore (an identifier, never prose) or
    opens the message as its subject (``"require: unknown token"``); a bare plain word elsewhere
    ("online", "strict", "device 'cuda' requested") may be prose and stays. A key with ``=`` is a
    whole phrase (``"block=None": "--rotation-block 0"``: a value the flag spells differently).
    """
    names = "|".join(re.escape(n) for n in sorted(flags, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.\-/$])(?P<name>{names})(?:=(?P<value>'[^']*'|\"[^\"]*\"|[\w.\-/:]*\w))?(?!\w)")

    def replace(match: re.Match) -> str:
        name, value = match.group("name"), match.group("value")
        if "=" in name or value == "True":
            return flags[name]
        if value is not None:
            return flags[name] + " " + value.strip("'\"")
        subject = match.start() == 0 and match.string.startswith(":", match.end())
        return flags[name] if "_" in name or subject else name

    return pattern.sub(replace, message)


def _parse_modes(scale_modes: Sequence[str] | None, roundings: Sequence[str] | None) -> list[tuple[str, str]]:
    s = list(scale_modes) if scale_modes else list(SCALE_MODES)
    r = list(roundings) if roundings else list(ROUNDINGS)
    return [m for m in ALL_MODES if m[0] in s and m[1] in r]


def _hex_grid(codes: np.ndarray, per_line: int = 32) -> str:
    flat = codes.reshape(-1)
    return "\n".join("    " + " ".join(f"{int(c):02x}" for c in flat[i:i + per_line])
                     for i in range(0, flat.size, per_line))


def cmd_demo(args: argparse.Namespace) -> int:
    """Quantize a small tensor, print its codes, then verify mx_spec against the golden vectors."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 32)) * np.array([[1.0], [40.0]])).astype(np.float32)
    x[0, 0] = 1.8125  # at row 0's scale 2^-7 this is 232, an E4M3 tie (224|240): RNE gives 224
    print("input x: float32, shape", x.shape, "(row 1 is 40x row 0)")
    for fmt in args.formats:
        mx = quantize(x, fmt)
        back = dequantize(mx)
        packed = bytes(pack(mx))
        err = float(np.max(np.abs(back - x) / np.max(np.abs(x), axis=-1, keepdims=True)))
        print(f"\n== {fmt}: block_size {mx.block_size}, axis {mx.axis}, scale_mode floor, rounding rne")
        print("  scales (E8M0 codes):", " ".join(f"0x{int(s):02x}" for s in mx.scales.reshape(-1)),
              "= 2^" + str([int(s) - E8M0_BIAS for s in mx.scales.reshape(-1)]))
        print("  element codes (hex):\n" + _hex_grid(mx.elements))
        print(f"  packed: {len(packed)} bytes: {packed[:24].hex(' ')}{' ...' if len(packed) > 24 else ''}")
        print("  dequantized row 0[:8]:", np.array2string(back[0, :8], precision=4))
        print(f"  max |error| / block amax: {err:.4f}")

    print("\n== verifying mx_spec.quantize against the golden vectors"
          f" ({args.golden or 'default golden/ directory'})")
    report = verify_quantizer(quantize, golden_dir=args.golden, progress=not args.quiet)
    print(report.summary(per_format=True))
    print(f"(all {len(ALL_MODES)} modes per format: scale {'/'.join(SCALE_MODES)} x rounding {'/'.join(ROUNDINGS)}; "
          "`mx-spec verify RESULTS` checks another implementation)")
    return report.exit_code


def cmd_golden(args: argparse.Namespace) -> int:
    modes = _parse_modes(args.scale_modes, args.roundings)
    paths = write_golden(args.out, formats=args.formats, modes=modes, progress=not args.quiet, compress=args.gzip)
    for p in paths:
        print(f"wrote {p} ({p.stat().st_size:,} bytes)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    report = verify_results(args.results, golden_dir=args.golden, policies=args.policy, require=args.require,
                            strict=args.strict, layouts=args.layout)
    print(report.summary(max_mismatches=args.max_mismatches))
    return report.exit_code


def cmd_export_flat(args: argparse.Namespace) -> int:
    paths = export_flat(args.out, formats=args.formats, golden_dir=args.golden, readmemh=args.readmemh)
    print(f"wrote {len(paths)} files under {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mx-spec", description="Bit-exact OCP MX v1.0 reference: demo, golden vectors, verifier.")
    sub = parser.add_subparsers(dest="command", required=True)
    fmts = list(MX_FORMATS)

    demo = sub.add_parser("demo", help="quantize a tensor, print codes/scales/packed bytes, verify against golden")
    demo.add_argument("--formats", nargs="+", default=["mxfp4_e2m1", "mxfp8_e4m3"], choices=fmts)
    demo.add_argument("--golden", default=None, help="golden directory (default: golden/ of this checkout)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    gold = sub.add_parser("golden", help="regenerate the golden JSON files (deterministic, byte-identical)")
    gold.add_argument("--out", required=True, help="output directory, e.g. golden")
    gold.add_argument("--formats", nargs="+", default=None, choices=fmts)
    gold.add_argument("--scale-modes", nargs="+", default=None, choices=list(SCALE_MODES))
    gold.add_argument("--roundings", nargs="+", default=None, choices=list(ROUNDINGS))
    gold.add_argument("--gzip", action="store_true", help="write <format>.json.gz (deterministic gzip) instead")
    gold.add_argument("--quiet", action="store_true")
    gold.set_defaults(func=cmd_golden)

    flat = sub.add_parser("export-flat", help="flat line-oriented copy of the golden files (C readers; "
                          "--readmemh adds one-item-per-line memories for RTL benches)")
    flat.add_argument("--out", required=True, help="output directory")
    flat.add_argument("--formats", nargs="+", default=None, choices=fmts)
    flat.add_argument("--golden", default=None, help="golden directory (default: golden/ of this checkout)")
    flat.add_argument("--readmemh", action="store_true", help="also write <format>/<mode>.{input,scales,elements}.memh")
    flat.set_defaults(func=cmd_export_flat)

    ver = sub.add_parser("verify", help="check another implementation's outputs (.json golden schema or .npz)",
                         description="Exit status: 0 PASS (every asked case compared, none failed), 1 FAIL, "
                                     "2 bad usage or input, 3 PARTIAL (some asked case or field not compared), "
                                     "4 NO CASES COMPARED. Asked by default: every case of the golden set.")
    ver.add_argument("results", help="results file (.json or .npz) or a directory of them")
    ver.add_argument("--golden", default=None, help="golden directory (default: golden/ of this checkout)")
    ver.add_argument("--max-mismatches", type=int, default=50, help="how many mismatching items to print")
    ver.add_argument("--policy", default=None, metavar="NAME=CHOICE,...",
                     help="declared policies where implementations legitimately differ: "
                          f"{choices_text(POLICY_CHOICES)} (golden/README.md)")
    ver.add_argument("--layout", default=None, metavar="NAME=CHOICE,...",
                     help=f"declared packed layouts: {choices_text(LAYOUT_CHOICES)} (golden/README.md)")
    ver.add_argument("--require", default=None, metavar="TOKENS",
                     help="what must be covered, over the whole golden set, else FAIL (replaces the default ask "
                          "of every case): comma-separated MX formats, scale modes, roundings, scale/rounding "
                          "pairs and field names, e.g. floor/rne,packed")
    ver.add_argument("--strict", action="store_true",
                     help=f"require every case of all {len(MX_FORMATS)} formats and {len(ALL_MODES)} modes with scales "
                          "and elements checked")
    ver.set_defaults(func=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"mx-spec {args.command}: error: {parameters_as_flags(str(exc), FLAGS)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mx-spec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
