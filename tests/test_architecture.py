"""Imports point one way: no module imports one from a higher layer (docs/architecture.md).

Every module of src/nndl must be placed in a layer here; a new module fails this test until it
is, so where it sits is a decision, not an accident. Imports inside functions count too.
"""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# (layer, module prefixes). A module may import modules of its own layer or lower ones.
LAYERS = [
    (0, ["nndl", "nndl.errors", "nndl.masking", "nndl.fileio", "nndl.progress", "nndl.model_kinds",
         "nndl.config"]),
    (1, ["nndl.data", "nndl.datasets", "nndl.models", "nndl.inference", "nndl.uncertainty", "nndl.figures",
         "nndl.runs", "nndl.tensorboard"]),
    (2, ["nndl.callbacks", "nndl.engine", "nndl.training", "nndl.crossval", "nndl.report", "nndl.predict",
         "nndl.export"]),
    (3, ["nndl.results", "nndl.pipeline"]),
    (4, ["nndl.regression", "nndl.classification", "nndl.tasks", "nndl.lrfinder", "nndl.sklearn"]),
    (5, ["nndl.search", "nndl.bench"]),
    (6, ["nndl.cli", "nndl.__main__"]),
]


def layer_of(module: str) -> int | None:
    """The layer of the longest matching prefix (``nndl`` alone matches only the package itself)."""
    best = None
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if module == prefix or (prefix != "nndl" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), layer)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def nndl_imports(path: Path) -> set[str]:
    """Every nndl module ``path`` imports, at the top or inside functions."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names] if node.module is None else [target]
            found.update(n for n in names if n.split(".")[0] == "nndl")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "nndl")
    return found


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for p in SRC.joinpath("nndl").rglob("*.py") if layer_of(module_name(p)) is None]
    assert not unplaced, f"place these modules in a layer of tests/test_architecture.py: {unplaced}"


def test_imports_point_down():
    upward = []
    for path in SRC.joinpath("nndl").rglob("*.py"):
        me = module_name(path)
        for target in nndl_imports(path):
            if target == "nndl.__version__":
                continue  # a constant of the package
            there = layer_of(target)
            if there is not None and there > layer_of(me):
                upward.append(f"{me} (layer {layer_of(me)}) imports {target} (layer {there})")
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))


def test_writers_of_run_folders_never_import_tasks_or_the_api():
    """runs, report and figures read and write folders; they must work without any task loaded."""
    forbidden = ("nndl.regression", "nndl.classification", "nndl.search", "nndl.sklearn", "nndl.results",
                 "nndl.bench", "nndl.cli", "nndl.lrfinder")
    for path in SRC.joinpath("nndl").rglob("*.py"):
        me = module_name(path)
        if me.startswith(("nndl.runs", "nndl.report", "nndl.figures")):
            bad = [t for t in nndl_imports(path) if t.startswith(forbidden)]
            assert not bad, f"{me} imports {bad}"
