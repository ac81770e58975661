"""The shape of the code, as rules a change can break (issue #14).

* ``mx_spec`` (the definition of the numbers) imports neither ``dmx`` nor torch;
* the dMX core (the method, usable on any ``nn.Module``) never imports the LLM side (Hugging Face
  models, rotations, data, evaluation, baselines, sweeps) and neither imports the commands;
* no import cycle between project modules;
* no module over ``MAX_LINES`` lines.

Imports are read from the source (``ast``), including those inside functions: an upward import
hidden in a function body is still an upward import. Imports under ``if TYPE_CHECKING:`` (names
for annotations, never executed) do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mx_spec", "dmx")
MAX_LINES = 420

#: The dMX core: the method itself, independent of where the model comes from.
#: (``dmx.pipeline.quantize_model``, which picks an LLM's decoder linears, is on the LLM side.)
CORE = {"dmx.family", "dmx.offset", "dmx.anneal", "dmx.regularizer", "dmx.autograd", "dmx.mx_torch",
        "dmx.mx_torch_primitives", "dmx.linear", "dmx.wrap", "dmx.calibrate", "dmx.trainable",
        "dmx.assignment", "dmx.checkpoint", "dmx.distributed", "dmx.files", "dmx.provenance"}
#: The user-facing entry points, imported by nothing below them.
COMMANDS_PREFIXES = ("dmx.cli", "dmx.commands")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, known: set[str]) -> str | None:
    """The project module an imported name belongs to (``dmx.rotation.spec.RotationSpec`` -> ``dmx.rotation.spec``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules (and ``torch``) imported anywhere in one module's source."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    # imports under ``if TYPE_CHECKING:`` only name types in annotations; they never run
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            if target == "torch" or target.startswith("torch."):
                found.add("torch")
            resolved = _resolve(target, known)
            if resolved is not None and resolved != name:
                found.add(resolved)
    return found


MODULES = _modules()
GRAPH = {name: _imports(name, path, set(MODULES)) for name, path in MODULES.items()}


def _is_command(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in COMMANDS_PREFIXES)


def test_the_rules_see_the_project():
    assert {"mx_spec.formats", "dmx.calibrate", "dmx.cli"} <= set(MODULES)
    assert CORE <= set(MODULES), f"core modules listed here but missing: {sorted(CORE - set(MODULES))}"
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
    source.write_text("def f():\n    from dmx.sweep import run_sweep\n    import torch.nn\n")
    assert {"dmx.sweep", "torch"} <= _imports("dmx.offset", source, set(MODULES))
