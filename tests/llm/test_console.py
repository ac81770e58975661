"""What a ``dmx`` command prints (issue #16, points 3, 4 and 8): help that states each default once
and truly, a console free of dependency noise, no progress bars with --no-progress, and a thread
count that does not oversubscribe a busy machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmx.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[2]


def _subparser(name):
    return build_parser()._subparsers._group_actions[0].choices[name]


def _helps(name):
    """``{flag: help text as printed}`` of one subcommand."""
    sub = _subparser(name)
    formatter = sub._get_formatter()
    return {action.option_strings[0]: formatter._expand_help(action)
            for action in sub._actions if action.option_strings and action.help}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_states_each_default_at_most_once(command):
    repeated = {flag: text for flag, text in _helps(command).items() if text.lower().count("default") > 1}
    assert not repeated, f"dmx {command}: defaults stated twice: {repeated}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_never_states_a_default_of_none(command):
    assert not [flag for flag, text in _helps(command).items() if "(default: None)" in text]


@pytest.mark.parametrize("command,flag,value", [("calibrate", "--seqlen", "256"), ("eval", "--seqlen", "2048"),
                                                ("kl", "--seqlen", "512")])
def test_the_stated_default_is_the_real_one(command, flag, value):
    text = _helps(command)[flag]
    assert f"(default: {value})" in text and text.count("default") == 1
    assert _subparser(command).get_default(flag.lstrip("-").replace("-", "_")) == int(value)


@pytest.mark.slow
def test_quiet_console_with_no_progress(tiny_dir, tmp_path):
    """A whole `dmx calibrate` (model loading included) prints nothing on stderr with --no-progress:
    no torchao library warnings, no torch deprecation warnings, no loading bars."""
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"Row {i} holds {i * 7 % 13}." for i in range(200)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", "import sys; from dmx.cli import main; sys.exit(main())",
                           "calibrate", "--rotation", "none", "--model", str(tiny_dir), "--text-file", str(text), "--seqlen", "32",
                           "--n-windows", "2", "--steps", "1", "--out", str(tmp_path / "a.json"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "average element bits" in done.stdout


def test_progress_bars_hidden_covers_every_tqdm_bar():
    from tqdm.auto import tqdm

    from dmx.cli import progress_bars_hidden

    with progress_bars_hidden():
        assert tqdm(range(3), desc="a dependency's bar").disable
    assert not tqdm(range(3), disable=False).disable  # restored


@pytest.mark.parametrize("cpus,load,expected", [(2, 0.1, 2), (2, 1.2, 1), (2, 7.0, 1), (16, 3.6, 12)])
def test_default_threads_leave_busy_cpus_alone(monkeypatch, cpus, load, expected):
    from dmx.llm.pipeline import idle_cpus

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert idle_cpus() == expected


def test_threads_default_is_applied(monkeypatch):
    import torch

    from dmx.cli import build_parser
    from dmx.commands import model_spec_from_args
    from dmx.llm.pipeline import thread_count

    monkeypatch.setattr("dmx.llm.pipeline.idle_cpus", lambda: 1)
    assert thread_count(None) == 1 and thread_count(3) == 3
    with pytest.raises(ValueError, match="threads must be >= 1, got threads=0"):
        thread_count(0)
    assert model_spec_from_args(build_parser().parse_args(["eval"])).threads == 1
    monkeypatch.setattr("dmx.llm.pipeline.load_model", lambda *a, **k: (torch.nn.Linear(1, 1), None))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        from dmx.llm.pipeline import ModelSpec, load_rotated_model

        load_rotated_model(ModelSpec(threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_install_metadata_uses_the_spdx_license_string():
    """setuptools warns three times per install about the deprecated ``license = {text = ...}`` table."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)
    assert any(req.startswith("setuptools>=") and int(req.split(">=")[1]) >= 77
               for req in project["build-system"]["requires"])
