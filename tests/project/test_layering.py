"""The shape of the code, as rules a change can break (issue #14).

* ``mx_spec`` (the definition of the numbers) imports neither ``dmx`` nor torch;
* the dMX core (the method, usable on any ``nn.Module``) never imports the LLM side (Hugging Face
  models, rotations, data, evaluation, baselines, sweeps) and neither imports the commands;
* no import cycle between project modules;
* no module over ``MAX_LINES`` lines;
* flags stop at the door: ``argparse`` is imported only by the command layers (:data:`DOORS`), and
  the errors the library raises name Python parameters, not flags (the doors translate: a caller of
  ``calibrate(checkpoint_dir=...)`` never passed ``--checkpoint-dir``);
* no private imports across modules (``from x import _name`` with ``x`` another project module):
  what another module needs is public;
* the MX numbers never import the conformance kit (:data:`CONFORMANCE_KIT`);
* a module inside a package takes what its package's ``__init__`` re-exports from the module that
  defines it (``from dmx.llm.rotation.spec import RotationSpec`` inside ``dmx/llm/rotation/``, not ``from
  dmx.llm.rotation import RotationSpec``), and never ``import``s its own package to reach names
  through it: the ``__init__`` is the door for callers outside, and reading through it from inside
  hides where a name lives and invites cycles;
* a ``DMXLinear``'s settings are its frozen ``DMXLinearConfig``: nothing outside ``dmx/linear.py``
  (library, tests, tools, benchmarks, tutorial cells) assigns a setting attribute
  (``layer.temperature = ...``); it calls ``layer.reconfigure(temperature=...)`` (issue #27);
* the sweep's configuration is typed (issue #27): ``SweepConfig`` and its parts are frozen
  dataclasses holding no dict, and the sweep (:data:`TYPED_ROTATION`) asks a rotation what it
  does (``RotationSpec.rotates``, ``.learns``) instead of comparing its kind to a string.

Imports are read from the source (``ast``), including those inside functions: an upward import
hidden in a function body is still an upward import. Imports under ``if TYPE_CHECKING:`` (names
for annotations, never executed) do not count.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from mx_spec.conformance.cli import parameters_as_flags

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mx_spec", "dmx")
MAX_LINES = 420

#: The layers are folders, so every rule below is read off the tree:
#: ``mx_spec/`` the MX numbers, ``mx_spec/conformance/`` the conformance kit built on them;
#: ``dmx/`` the method's core, ``dmx/llm/`` the LLM side built on it, ``dmx/cli.py`` and
#: ``dmx/commands/`` the doors.
#: The LLM side: Hugging Face models, rotations, data, evaluation, baselines, sweeps, plots, export.
#: (``dmx.llm.pipeline.quantize_model``, which picks an LLM's decoder linears, is on the LLM side.)
LLM_PREFIX = "dmx.llm"
#: The user-facing entry points, imported by nothing below them.
COMMANDS_PREFIXES = ("dmx.cli", "dmx.commands")
#: The command layers, the only modules that parse command lines (import ``argparse``): dMX's CLI,
#: ``mx_spec``'s own console script, and ``dmx.llm.export_ct_runtime``, a ``python -m`` script that
#: writes a committed results file (its folder is the library's; it is imported by nothing).
DOORS = ("dmx.cli", "dmx.commands", "mx_spec.conformance.cli", "dmx.llm.export_ct_runtime")
#: ``mx_spec``'s conformance kit (``mx_spec/conformance/``): the golden vectors (schema, inputs,
#: generator, flat exports) and the verifier of another implementation (comparison, reading
#: results, report, cause and policy hints, the console script). The rest of ``mx_spec`` is the MX
#: numbers themselves: formats, element codecs, scales, blocks, quantize, packing, the generalised
#: minifloat, and the declared policies and layouts (alternative number rules an implementation may
#: follow), plus the atomic writer they share; the kit is built on the numbers, never the other way round.
KIT_PREFIX = "mx_spec.conformance"


def _in_package(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, known: set[str]) -> str | None:
    """The project module an imported name belongs to (``dmx.llm.rotation.spec.RotationSpec`` -> ``dmx.llm.rotation.spec``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported_names(name: str, path: Path, known: set[str]) -> list[tuple[str, str | None, int]]:
    """``(module, name, line)`` for every import in one module's source: ``name`` is what ``from module import name`` takes (None for a
    plain ``import module`` and for a submodule taken by ``from package import submodule``).
    Imports under ``if TYPE_CHECKING:`` (names for annotations, never executed) do not count."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    # imports under ``if TYPE_CHECKING:`` only name types in annotations; they never run
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}" in known
                found.append((f"{base}.{alias.name}" if submodule else base, None if submodule else alias.name,
                              node.lineno))
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules (and ``torch``) imported anywhere in one module's source."""
    found: set[str] = set()
    for module, _, _ in _imported_names(name, path, known):
        if module == "torch" or module.startswith("torch."):
            found.add("torch")
        resolved = _resolve(module, known)
        if resolved is not None and resolved != name:
            found.add(resolved)
    return found


def _is_door(module: str) -> bool:
    return any(module == d or module.startswith(d + ".") for d in DOORS)


def _argparse_users(name: str, path: Path) -> list[int]:
    """Lines where a module imports ``argparse``."""
    return [line for module, _, line in _imported_names(name, path, set(MODULES))
            if module == "argparse" or module.startswith("argparse.")]


#: A command-line flag in a message: ``--`` and a lowercase word.
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _message_text(node: ast.AST) -> str:
    """The literal text of an expression: its strings in source order, an f-string's replacement
    fields as ``{}`` (the code inside them is not message text)."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else ""
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
    return " ".join(_message_text(child) for child in ast.iter_child_nodes(node))


def _flags_in_errors(path: Path) -> list[str]:
    """Flags named by the messages of the exceptions a module raises (the text of the ``raise``
    expression), outside backticked command lines: "write one with `dmx calibrate --out`" tells
    the reader which command makes a file, a recipe rather than a parameter of the call."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            text = re.sub(r"`[^`]*`", "", _message_text(node.exc))
            found += [f"{flag} (line {node.lineno})" for flag in FLAG.findall(text)]
    return found


def _private_imports(name: str, path: Path) -> list[str]:
    """``module._name`` taken by ``from module import _name`` from another project module."""
    known = set(MODULES)
    return [f"{module}.{what} (line {line})" for module, what, line in _imported_names(name, path, known)
            if what is not None and what.startswith("_") and not what.startswith("__")
            and _resolve(module, known) not in (None, name)]


def _reexport_homes(init: Path, package: str) -> dict[str, str]:
    """The names a package's ``__init__`` re-exports, each with the submodule that defines it."""
    known = set(MODULES)
    return {what: module for module, what, _ in _imported_names(package, init, known)
            if what is not None and module.startswith(package + ".")}


def _reads_through_own_init(name: str, path: Path) -> list[str]:
    """Imports by which a module inside a package reaches a name through one of its enclosing
    packages' ``__init__`` (a re-exported name, or ``import package`` itself)."""
    known = set(MODULES)
    parts = name.split(".")
    enclosing = {".".join(parts[:i]) for i in range(1, len(parts))}
    if path.name == "__init__.py":
        enclosing.discard(name)
    bad = []
    for module, what, line in _imported_names(name, path, known):
        if module not in enclosing:
            continue
        if what is None:
            bad.append(f"import {module} (line {line})")
            continue
        home = _reexport_homes(MODULES[module], module).get(what)
        if home is not None:
            bad.append(f"from {module} import {what} (line {line}; defined in {home})")
    return bad


#: Modules that hold a typed :class:`dmx.llm.rotation.RotationSpec` and never test its kind by string.
TYPED_ROTATION = ("dmx.llm.sweep", "dmx.commands.sweep")
ROTATION_KIND_TEST = re.compile(r"""(?:\brotation|\.kind)\s*(?:==|!=|in)\s*[("'\[]""")


def _rotation_kind_tests(path: Path) -> list[int]:
    """Lines comparing a rotation (or a ``.kind``) to a string."""
    return [i for i, line in enumerate(path.read_text().splitlines(), 1) if ROTATION_KIND_TEST.search(line)]


MODULES = _modules()
GRAPH = {name: _imports(name, path, set(MODULES)) for name, path in MODULES.items()}
#: The dMX core: the method itself, independent of where the model comes from (``dmx/`` outside
#: ``dmx/llm/`` and the doors).
CORE = {m for m in MODULES if _in_package(m, "dmx") and m != "dmx" and not _in_package(m, LLM_PREFIX)
        and not any(_in_package(m, d) for d in COMMANDS_PREFIXES)}
CONFORMANCE_KIT = {m for m in MODULES if _in_package(m, KIT_PREFIX)}


def _is_command(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in COMMANDS_PREFIXES)


def test_the_rules_see_the_project():
    assert {"mx_spec.formats", "dmx.calibrate", "dmx.cli"} <= set(MODULES)
    # the folders are the layers: the core, the LLM side and the kit each hold what they should
    assert {"dmx.linear", "dmx.calibrate", "dmx.anneal", "dmx.regularizer"} <= CORE
    assert not CORE & {"dmx.llm.models", "dmx.llm.pipeline", "dmx.llm.kl_baseline", "dmx.llm.sweep.run"}
    assert {"dmx.llm.models", "dmx.llm.sweep.run", "dmx.llm.rotation.spec"} <= set(MODULES)
    assert "dmx.family" in GRAPH["dmx.linear"]  # the reader resolves `from dmx.family import ...`


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("mx_spec")))
def test_mx_spec_imports_neither_dmx_nor_torch(module):
    bad = sorted(m for m in GRAPH[module] if m == "torch" or m.startswith("dmx"))
    assert not bad, f"{module} imports {bad}: mx_spec is the numpy definition of the numbers"


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_dmx_core_never_imports_the_llm_side(module):
    bad = sorted(m for m in GRAPH[module] if m.startswith("dmx") and m not in CORE and m != "dmx")
    assert not bad, f"{module} (dMX core) imports {bad}; move what it needs into the core or pass it in"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _is_command(m) and m != "dmx"))
def test_nothing_below_the_commands_imports_them(module):
    bad = sorted(m for m in GRAPH[module] if _is_command(m))
    assert not bad, f"{module} imports the command layer {bad}"


def test_no_import_cycles():
    project = {m: {d for d in deps if d in MODULES and d not in ("dmx", "mx_spec")} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(project[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(project):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_too_long(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (> {MAX_LINES}): split it along a real seam"


def test_a_planted_upward_import_is_caught(tmp_path):
    source = tmp_path / "offset.py"
    source.write_text("def f():\n    from dmx.llm.sweep import run_sweep\n    import torch.nn\n")
    assert {"dmx.llm.sweep", "torch"} <= _imports("dmx.offset", source, set(MODULES))


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _is_door(m)))
def test_only_the_doors_parse_command_lines(module):
    lines = _argparse_users(module, MODULES[module])
    assert not lines, (f"{module} imports argparse (line {lines}): parse flags in a command layer {DOORS} "
                       "and pass the library typed settings")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _is_door(m)))
def test_only_doors_import_the_doors(module):
    bad = sorted(m for m in GRAPH[module] if _is_door(m))
    assert not bad, f"{module} imports the command layer {bad}: the library is called by the doors, not the reverse"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _is_door(m)))
def test_library_errors_name_parameters_not_flags(module):
    flags = _flags_in_errors(MODULES[module])
    assert not flags, (f"{module} raises errors naming command-line flags {flags}: name the Python parameter "
                       "(e.g. seqlen=..., data_dir) and let the command translate (dmx.commands.FLAGS)")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_imports_across_modules(module):
    bad = _private_imports(module, MODULES[module])
    assert not bad, f"{module} imports private names of other modules: {bad}; make them public where they live"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("mx_spec") and m not in CONFORMANCE_KIT))
def test_the_mx_numbers_never_import_the_conformance_kit(module):
    bad = sorted(m for m in GRAPH[module] if m in CONFORMANCE_KIT)
    assert not bad, f"{module} (the MX numbers) imports the conformance kit {bad}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reads_through_its_own_package_init(module):
    bad = _reads_through_own_init(module, MODULES[module])
    assert not bad, f"{module} imports through its own package's __init__: {bad}; import from the defining module"


def test_the_new_rules_see_the_project():
    assert {"mx_spec.conformance.golden", "mx_spec.conformance.verify", "mx_spec.conformance.cli"} <= CONFORMANCE_KIT
    assert not CONFORMANCE_KIT & {"mx_spec.formats", "mx_spec.quantize", "mx_spec.packing"}
    assert _reexport_homes(MODULES["dmx.llm.rotation"], "dmx.llm.rotation")["RotationSpec"] == "dmx.llm.rotation.spec"
    assert _argparse_users("dmx.cli", MODULES["dmx.cli"])


def _planted(tmp_path: Path, package: str, source: str) -> tuple[str, Path]:
    """A module named as if it lived in ``package`` (``package.planted``), written to ``tmp_path``."""
    path = tmp_path / "planted.py"
    path.write_text(source)
    return f"{package}.planted", path


def test_a_planted_argparse_import_is_caught(tmp_path):
    name, path = _planted(tmp_path, "dmx", "def parse():\n    from argparse import Namespace\n")
    assert not _is_door(name) and _argparse_users(name, path) == [2]
    name, path = _planted(tmp_path, "dmx.commands", "import argparse\n")
    assert _is_door(name) and _argparse_users(name, path) == [1]
    name, path = _planted(tmp_path, "dmx", "from mx_spec.conformance.cli import FLAGS\n")  # the library reaching into a door
    assert [m for m in _imports(name, path, set(MODULES)) if _is_door(m)] == ["mx_spec.conformance.cli"]


def test_a_planted_flag_in_a_library_error_is_caught(tmp_path):
    _, path = _planted(tmp_path, "dmx", 'def f(n, path):\n    if n:\n        raise ValueError(f"only {n} tokens; lower "\n'
                                       '                         "--seqlen" + (" or " + "--data-dir" if n else ""))\n'
                                       '    raise FileNotFoundError(f"{path}: write one with `dmx calibrate --out {path}`")\n')
    assert _flags_in_errors(path) == ["--seqlen (line 3)", "--data-dir (line 3)"]


def test_a_planted_private_import_is_caught(tmp_path):
    name, path = _planted(tmp_path, "dmx", "from mx_spec.elements import _F32, decode_table\n"
                                           "from .linear import __all__\n")
    assert _private_imports(name, path) == ["mx_spec.elements._F32 (line 1)"]


def test_a_planted_kit_import_in_the_numbers_is_caught(tmp_path):
    name, path = _planted(tmp_path, "mx_spec", "def f():\n    from mx_spec.conformance.golden import load_golden\n")
    assert "mx_spec.conformance.golden" in _imports(name, path, set(MODULES)) and name not in CONFORMANCE_KIT


def test_a_planted_read_through_the_own_init_is_caught(tmp_path):
    source = ("from dmx.llm.rotation import RotationSpec\nfrom dmx.llm.rotation.spec import PLACEMENTS\n"
              "from dmx.llm.rotation import spec\nimport dmx.llm.rotation\n")
    name, path = _planted(tmp_path, "dmx.llm.rotation", source)
    assert _reads_through_own_init(name, path) == [
        "from dmx.llm.rotation import RotationSpec (line 1; defined in dmx.llm.rotation.spec)", "import dmx.llm.rotation (line 4)"]
    name, path = _planted(tmp_path, "dmx.llm.sweep", "from dmx.llm.rotation import RotationSpec\n")
    assert _reads_through_own_init(name, path) == []  # another package's door is the right one to use


def test_the_doors_translate_parameters_to_flags():
    flags = {"data_dir": "--data-dir", "online": "--online", "seqlen": "--seqlen", "kl_seqlen": "--kl-seqlen",
             "block=None": "--rotation-block 0", "block": "--rotation-block", "rotation": "--rotation",
             "require": "--require", "device": "--device"}
    assert parameters_as_flags("require: unknown token 'x'", flags) == "--require: unknown token 'x'"
    assert (parameters_as_flags("device 'cuda' requested but CUDA is not available; use device='cpu'", flags)
            == "device 'cuda' requested but CUDA is not available; use --device cpu")
    said = ("no data directory: pass data_dir=DIR or set $DMX_DATA_DIR, or pass online=True; seqlen=4096 exceeds "
            "256, lower seqlen; kl_seqlen too; block=None for the full width; rotation='none' is plain; "
            "not /tmp/data_dir/x nor dmx.data_dir, and the online Hadamard stays prose")
    assert parameters_as_flags(said, flags) == (
        "no data directory: pass --data-dir DIR or set $DMX_DATA_DIR, or pass --online; --seqlen 4096 exceeds "
        "256, lower seqlen; --kl-seqlen too; --rotation-block 0 for the full width; --rotation none is plain; "
        "not /tmp/data_dir/x nor dmx.data_dir, and the online Hadamard stays prose")


def test_a_library_call_is_told_its_parameter_and_the_cli_its_flag(tmp_path, monkeypatch, capsys):
    # imported here, not at the top: the rules above read source and stay free of torch
    import dmx.llm.pipeline
    from dmx.cli import main
    from dmx.llm.data import check_data_source
    from dmx.llm.rotation.spec import RotationSpec

    with pytest.raises(ValueError, match="block=6 is not a Hadamard order") as bad_size:
        RotationSpec(kind="hadamard", block=6)
    monkeypatch.delenv("DMX_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="pass data_dir=DIR") as no_data:
        check_data_source(None, split="test")
    assert not FLAG.search(str(bad_size.value)) and not FLAG.search(str(no_data.value))

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(dmx.llm.pipeline, "load_model", load_model)
    eval_ = ["eval", "--format", "mxfp4_e2m1", "--no-ppl", "--no-progress"]
    assert main([*eval_, "--rotation", "hadamard", "--rotation-block", "6"]) == 2
    assert main([*eval_, "--rotation-block", "32"]) == 2
    assert main(["calibrate", "--out", str(tmp_path / "a.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert ("dmx eval: error: the rotation block --rotation-block 6 is not a Hadamard order; pass one such as 32 "
            "(one MX block), or --rotation-block 0 for the full width") in err
    assert "dmx eval: error: --rotation-block only apply to a rotation; add --rotation hadamard" in err
    assert "dmx calibrate: error: no data directory: pass --data-dir DIR" in err and "pass --online to" in err
    assert not re.search(r"(?<![-\w])block=|rotation_block|data_dir|online=", err)


# -- a DMXLinear's settings are its config (issue #27) ----------------------------------------------
#: Where code that drives DMXLinear layers lives (tutorial notebooks: their code cells).
DRIVERS = ("dmx", "tests", "tools", "benchmarks", "tutorials")


def _layer_settings() -> set[str]:
    """The names of ``DMXLinearConfig``'s fields (read from the source: no torch here), and the
    config itself (``config``, ``_config``)."""
    tree = ast.parse((ROOT / "dmx" / "linear.py").read_text())
    (config,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DMXLinearConfig"]
    return {n.target.id for n in config.body if isinstance(n, ast.AnnAssign)} | {"config", "_config"}


LAYER_SETTINGS = _layer_settings()


def _setting_writes(source: str) -> list[str]:
    """Assignments to a DMXLinear setting attribute in ``source`` (``x.temperature = ...``, also
    augmented, annotated or in a tuple target, and ``setattr(x, "temperature", ...)`` or
    ``object.__setattr__``), each as ``"line: target"``. An object's assignments to its own
    attributes (``self.``) and a ``torch.autograd.Function``'s context (``ctx.backend``) are not a
    layer's settings. IPython magics (``%matplotlib``, ``!pip``) are skipped."""
    source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        else:
            targets = []
        while any(isinstance(t, (ast.Tuple, ast.List, ast.Starred)) for t in targets):  # a, b.x = ...
            targets = [e for t in targets for e in (t.elts if isinstance(t, (ast.Tuple, ast.List))
                                                     else [t.value] if isinstance(t, ast.Starred) else [t])]
        for target in targets:
            if (isinstance(target, ast.Attribute) and target.attr in LAYER_SETTINGS
                    and not (isinstance(target.value, ast.Name) and target.value.id in ("self", "ctx"))):
                found.append((node.lineno, ast.unparse(target)))
        if isinstance(node, ast.Call) and (getattr(node.func, "id", None) == "setattr"
                                           or getattr(node.func, "attr", None) == "__setattr__"):
            name = node.args[1] if len(node.args) > 1 else None
            if isinstance(name, ast.Constant) and name.value in LAYER_SETTINGS:
                found.append((node.lineno, ast.unparse(node)))
    return [f"{line}: {what}" for line, what in sorted(found)]


def _driver_sources() -> list[tuple[str, str]]:
    """``(place, source)`` of every Python file under :data:`DRIVERS` and every notebook code cell."""
    found = []
    for folder in DRIVERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found.append((str(path.relative_to(ROOT)), path.read_text()))
        for path in sorted((ROOT / folder).rglob("*.ipynb")):
            cells = json.loads(path.read_text())["cells"]
            found += [(f"{path.relative_to(ROOT)} cell {i}", "".join(cell["source"]))
                      for i, cell in enumerate(cells) if cell["cell_type"] == "code"]
    return found


def test_the_setting_rule_sees_the_project():
    assert {"temperature", "fixed_format", "backend", "offset_mode", "fractional_scale", "config"} <= LAYER_SETTINGS
    places = [place for place, _ in _driver_sources()]
    assert "dmx/wrap.py" in places and any(p.startswith("tutorials/") and " cell " in p for p in places)
    assert {"tests/core/test_linear.py", "benchmarks/bench_calibration_step.py", "dmx/llm/kl_baseline.py"} <= set(places)


def test_only_dmx_linear_changes_a_layers_settings():
    """A DMXLinear's settings are its frozen config, replaced only by ``layer.reconfigure(...)``;
    nothing outside ``dmx/linear.py`` assigns a setting attribute (they are read-only views)."""
    bad = [f"{place}:{write}" for place, source in _driver_sources() if place != "dmx/linear.py"
           for write in _setting_writes(source)]
    assert not bad, f"assignments to DMXLinear settings {bad}: call layer.reconfigure(setting=value) instead"


def test_a_planted_setting_write_is_caught():
    source = ("%matplotlib inline\nlayer.temperature = 2.0\nsetattr(m, 'backend', 'numpy')\n"
              "for l in layers.values():\n    l.fixed_format, n = None, 1\nlayers['a'].config = c\n"
              "object.__setattr__(m, '_config', c)\nm.block_size += 1\nself.temperature = 1.0\n"
              "ctx.backend = backend\nm.beta_hat = p\nm.reconfigure(temperature=2.0)\n"
              "torch._dynamo.config.recompile_limit = 8\n*a, m.tie = 1, 2\n")
    assert _setting_writes(source) == [
        "2: layer.temperature", "3: setattr(m, 'backend', 'numpy')", "5: l.fixed_format", "6: layers['a'].config",
        "7: object.__setattr__(m, '_config', c)", "8: m.block_size", "14: m.tie"]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(TYPED_ROTATION)))
def test_the_sweep_asks_the_rotation_spec_not_its_kind_string(module):
    assert not _rotation_kind_tests(MODULES[module]), f"{module} compares a rotation kind to a string"


def test_a_planted_rotation_kind_string_test_is_caught(tmp_path):
    _, path = _planted(tmp_path, "dmx.llm.sweep", 'def f(cfg, spec):\n    if cfg.rotation == "learned":\n'
                                             '        return spec.kind != "none"\n    return spec.learns\n')
    assert _rotation_kind_tests(path) == [2, 3]


def test_the_sweep_config_is_frozen_and_typed():
    import dataclasses
    import typing

    import dmx.llm.sweep.config as config

    parts = [config.SweepConfig, config.SweepPlan, config.CalibrationData, config.EvaluationSpec]
    seen = set()
    while parts:
        cls = parts.pop()
        if cls in seen:
            continue
        seen.add(cls)
        assert cls.__dataclass_params__.frozen, f"{cls.__name__} is not frozen"
        for name, hint in typing.get_type_hints(cls).items():
            assert "dict" not in str(hint).lower() and "Any" not in str(hint), f"{cls.__name__}.{name}: {hint}"
            parts += [t for t in typing.get_args(hint) + (hint,) if dataclasses.is_dataclass(t)]
    assert {c.__name__ for c in seen} >= {"ModelSpec", "RotationSpec", "CalibrationConfig"}
