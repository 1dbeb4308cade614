"""The package's import graph: one direction, no cycles, internal imports at module level.

Layers, lowest first (docs/ARCHITECTURE.md): a module may import its own layer
or lower ones, never higher, and the graph between units (top-level modules
and subpackages) has no cycle.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wham_gym"

LAYERS = [
    {"controller", "sampling", "atomic", "threads", "memory"},  # plain data and the rules WHAM fixes; plain helpers
    {"model", "data", "position"},  # networks and file formats (position: a linear probe of a frame's tokens)
    {"engine", "games"},  # the hot path; the real game
    {"rollout", "env", "autoreset", "prompts", "rewards", "reinjection", "sb3", "action_sets", "action_sets_sb3"},  # environments
    {"dream", "measure", "train", "serve", "cluster"},  # tools built on environments and rollouts (cluster: on Ray)
    {"commands", "__init__", "__main__"},  # the command line and the package facade
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}

# Function-level internal imports that are allowed, and why.
LAZY_OK = {
    # The CLI imports a job's modules only when that job runs, so `wham-gym --help` stays fast.
    "commands": "CLI start-up",
}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), is_pkg, path


ALL = {name for name, _, _ in modules()}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(name: str, is_pkg: bool, path: Path):
    """(imported module, line, at module level) for every import of the package in ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "wham_gym":
                continue
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in ALL else mod for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "wham_gym"]
        else:
            continue
        for t in targets:
            found.append((t, node.lineno, id(node) in top))
    return found


def test_layers_point_down_and_units_have_no_cycle():
    edges, wrong = {}, []
    for name, is_pkg, path in modules():
        src = unit_of(name)
        for target, line, _ in imports(name, is_pkg, path):
            dst = unit_of(target)
            if dst == src:
                continue
            assert src in LAYER and dst in LAYER, f"{name}: unit {src!r} or {dst!r} has no layer; add it to LAYERS"
            if target == "wham_gym" and LAYER[src] < LAYER["__init__"]:
                wrong.append(f"{path.name}:{line} imports the package facade; import the module that defines the name")
            elif LAYER[dst] > LAYER[src]:
                wrong.append(f"{name}:{line} ({src}, layer {LAYER[src]}) imports {target} ({dst}, layer {LAYER[dst]})")
            edges.setdefault(src, set()).add(dst)
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)

    # No cycle between units (lateral imports within a layer are allowed, cycles are not).
    state = {}

    def visit(u, trail):
        state[u] = "open"
        for v in edges.get(u, ()):
            if state.get(v) == "open":
                pytest.fail("import cycle between units: " + " -> ".join(trail + [u, v]))
            if v not in state:
                visit(v, trail + [u])
        state[u] = "done"

    for u in list(edges):
        if u not in state:
            visit(u, [])


def test_internal_imports_are_at_module_level():
    hidden = []
    for name, is_pkg, path in modules():
        if unit_of(name) in LAZY_OK:
            continue
        for target, line, top in imports(name, is_pkg, path):
            if not top and unit_of(target) != "__init__":
                hidden.append(f"{name}:{line} imports {target} inside a function")
    assert not hidden, "function-level internal imports hide dependencies:\n" + "\n".join(hidden)
