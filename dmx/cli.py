"""``dmx`` command-line entry point: ``dmx calibrate | eval | kl | sweep | export``.

Each subcommand lives in ``dmx/commands/<name>.py`` and exposes ``register(subparsers)``
(:data:`COMMANDS`, in the order of ``dmx --help``). Every subcommand accepts ``--config file.yaml``: a
mapping whose keys are that subcommand's flag names (kebab-case, e.g. ``target-bits: 5``, or
snake_case) and whose values become the defaults; flags given on the command line override them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import tqdm.std
import yaml

from dmx.checkpoint import CheckpointError
from dmx.commands import HelpFormatter, flag_message
from dmx.commands import calibrate as calibrate_command
from dmx.commands import eval as eval_command
from dmx.commands import export as export_command
from dmx.commands import kl as kl_command
from dmx.commands import sweep as sweep_command

__all__ = ["COMMANDS", "Terminated", "build_parser", "config_defaults", "main", "sigterm_as_interrupt",
           "progress_bars_hidden", "silence_dependency_noise"]

#: Exit status of a command stopped by SIGTERM (128 + signal number, the shell convention).
EXIT_TERMINATED = 128 + signal.SIGTERM

#: Loggers of dependencies whose import-time warnings look like errors but concern code dMX never
#: runs: transformers imports torchao (its quantizer registry) when it is installed, and torchao
#: then reports its optional CUDA kernels missing and torch's deprecated enum registration.
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a cluster scheduler) raised as an interrupt, so it takes the same
    save-a-checkpoint-and-stop paths as Ctrl-C."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn the first SIGTERM into :class:`Terminated` in the main thread; later ones are ignored
    so that the checkpoint being written on the way out is finished. Restored on exit."""

    def raise_terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def progress_bars_hidden(hidden: bool = True) -> Iterator[None]:
    """While active, every tqdm bar is created disabled: dMX's own and those of transformers (GGUF
    conversion, weight loading) and lm-eval, which take no flag of ours (``--no-progress``)."""
    if not hidden:
        yield
        return
    original = tqdm.std.tqdm.__init__

    def disabled_init(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    tqdm.std.tqdm.__init__ = disabled_init
    try:
        yield
    finally:
        tqdm.std.tqdm.__init__ = original


def silence_dependency_noise() -> None:
    """Quiet the import-time warnings of :data:`_NOISY_LOGGERS` (errors still show)."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)

#: The subcommands, by name, each module with its ``register(subparsers)``.
COMMANDS: dict[str, ModuleType] = {"calibrate": calibrate_command, "eval": eval_command, "kl": kl_command,
                                   "sweep": sweep_command, "export": export_command}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="dmx",
        description="Differentiable per-layer MX mixed-precision assignment (dMX) for causal LMs.",
        formatter_class=HelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMANDS.values():
        module.register(subparsers)
    for sub in subparsers.choices.values():
        sub.add_argument("--config", default=None, metavar="FILE.yaml",
                         help="YAML file whose keys are this command's flag names; command-line flags override it")
    return parser


def config_defaults(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a YAML config into ``{dest: value}`` for ``parser``; unknown keys -> error listing valid ones."""
    target = Path(path)
    if not target.is_file():
        raise SystemExit(f"dmx: config file {str(target)!r} does not exist")
    try:
        data = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise SystemExit(f"dmx: config file {target} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise SystemExit(f"dmx: config file {target} must be a mapping of flag names to values")
    dests = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    valid = sorted(d.replace("_", "-") for d in dests)
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in dests:
            raise SystemExit(f"dmx: unknown key {key!r} in {target}; valid keys for this command: {', '.join(valid)}")
        action = dests[dest]
        if action.type is not None and value is not None and not isinstance(value, list):
            value = action.type(value)
        if action.choices is not None and value not in action.choices:
            raise SystemExit(f"dmx: {key}={value!r} in {target}; choose one of {list(action.choices)}")
        defaults[dest] = value
    return defaults


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), apply ``--config``, run the subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        sub = parser._subparsers._group_actions[0].choices[args.command]
        sub.set_defaults(**config_defaults(args.config, sub))
        args = parser.parse_args(argv)
    silence_dependency_noise()
    try:
        with sigterm_as_interrupt(), progress_bars_hidden(getattr(args, "no_progress", False)):
            result = args.func(args)
    except Terminated:
        print("dmx: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("dmx: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"dmx {args.command}: error: {flag_message(str(err))}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
