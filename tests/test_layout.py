"""The package's layout: packages say what lives in them, imports run one way (no cycles, counting the
imports inside functions too), models/ never reads data/. The import graph is read with ``ast``."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "merbench_plugins"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


# the registry imports the models package to run their @register_model decorators (timm's registration by
# import); the one edge allowed to close a loop, since every model imports the registry it registers in
REGISTRATION = ("merbench_plugins.registry", "merbench_plugins.models")


def imports_of(name: str) -> set:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = package.split(".")[:len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
        out |= {t for t in targets if t in MODULES and t != name}
    return out


GRAPH = {name: imports_of(name) for name in MODULES}
GRAPH[REGISTRATION[0]].discard(REGISTRATION[1])


def test_no_import_cycles():
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == "open":
                cycles.append(trail[trail.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, trail + [dep])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", ["models", "modules"])
def test_models_and_modules_do_not_import_data_or_training(package):
    """A model is built from modules and its config; data, training and evaluation build on models."""
    for name, deps in GRAPH.items():
        if name.startswith(f"merbench_plugins.{package}"):
            bad = sorted(d for d in deps if d.split(".")[1] in ("data", "train", "evaluate", "search", "launch"))
            assert not bad, f"{name} imports {bad}"


def test_evaluation_does_not_import_training():
    """Training calls evaluation, not the other way round."""
    for name, deps in GRAPH.items():
        if name.startswith("merbench_plugins.evaluate"):
            assert not [d for d in deps if d.startswith("merbench_plugins.train")], name


def test_every_package_says_what_lives_there():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(PACKAGE.parent)} needs a one-line docstring saying what lives there"
