"""kcnn's imports point down its floors and form no cycle (function-level imports included).

Floors, bottom to top: the private helpers (`kcnn._validation`, `kcnn._files`,
`kcnn._serialization`, `kcnn._quantization`); ops and the side rooms data, analysis, export
and viz; layers; backbones; models; detection models; tasks; training; tuning; the CLI. A
module may import from its own floor or below. Read with `ast` from the source, so an import
hidden inside a function counts like any other.
"""

import ast
import pathlib

import kcnn

PACKAGE_ROOT = pathlib.Path(kcnn.__file__).parent
FLOORS = {
    "_validation": 0,
    "_files": 0,
    "_serialization": 0,
    "_quantization": 0,
    "ops": 1,
    "data": 1,
    "analysis": 1,
    "export": 1,
    "viz": 1,
    "layers": 2,
    "backbones": 3,
    "models": 4,
    "detection": 5,
    "tasks": 6,
    "training": 7,
    "tuning": 8,
    "cli": 9,
}


def _module_name(path):
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _imports(path, name, modules):
    """The kcnn modules `name` imports, with the line of each import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from kcnn.x import y` imports the module kcnn.x.y when there is one.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        found += [(target, node.lineno) for target in targets if target in modules]
    return found


def _graph():
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _room(module):
    """The floor key of a module: its subpackage (or top-level module) under kcnn."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _upward_imports(graph):
    problems = []
    for module, imports in graph.items():
        room = _room(module)
        if room is None:
            continue  # `kcnn/__init__.py`, the package's face, imports what it registers
        for target, line in imports:
            target_room = _room(target)
            if target_room is None or target_room == room:
                continue
            if FLOORS[target_room] > FLOORS[room]:
                problems.append(
                    f"{module} (line {line}) imports {target}: {room} is floor "
                    f"{FLOORS[room]}, {target_room} floor {FLOORS[target_room]}"
                )
    return problems


def _cycles(edges):
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def _module_edges(graph):
    """Module -> imported modules, leaving out a package's `__init__` importing its own
    submodules (a package's face re-exports what lives below it; that is not a cycle)."""
    return {
        module: {
            target
            for target, _ in imports
            if not (target.startswith(module + ".") and _room(target) == _room(module))
        }
        for module, imports in graph.items()
        if module != "kcnn"
    }


def test_every_subpackage_has_a_floor():
    rooms = {_room(module) for module in _modules()} - {None}
    assert rooms <= set(FLOORS), f"add a floor for {sorted(rooms - set(FLOORS))}"


def test_no_import_points_up():
    problems = _upward_imports(_graph())
    assert not problems, "imports that point up a floor:\n" + "\n".join(problems)


def test_no_import_cycle_between_subpackages():
    graph = _graph()
    edges = {}
    for module, imports in graph.items():
        if _room(module) is None:
            continue
        for target, _ in imports:
            if _room(target) not in (None, _room(module)):
                edges.setdefault(_room(module), set()).add(_room(target))
    assert not _cycles(edges), f"import cycles between subpackages: {_cycles(edges)}"


def test_no_import_cycle_between_modules():
    cycles = _cycles(_module_edges(_graph()))
    assert not cycles, f"import cycles between modules: {cycles}"


def test_the_checks_see_an_upward_import_and_a_cycle():
    """The walker itself: a planted upward import and a planted cycle are both reported."""
    graph = {
        "kcnn.ops.a": [("kcnn.training.b", 3)],
        "kcnn.training.b": [("kcnn.ops.a", 5)],
    }
    assert _upward_imports(graph) == [
        "kcnn.ops.a (line 3) imports kcnn.training.b: ops is floor 1, training floor 7"
    ]
    assert _cycles(_module_edges(graph)) == [["kcnn.ops.a", "kcnn.training.b"]]


def test_function_level_imports_count(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from kcnn.training import train\n")
    assert _imports(planted, "kcnn.ops.planted", _modules()) == [("kcnn.training", 2)]
