"""The folder tree is the layer table: imports point one way (docs/architecture.md).

Each package of src/nndl is one layer; a module's layer is its package's. A module may import
modules of its own layer or lower ones, at the top or inside functions. Only the entry points and
the two public re-export modules sit beside the packages; a new top-level module fails
:func:`test_the_tree_is_the_layer_table` until it is placed, so where it sits is a decision.
"""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "nndl"

# package (or top-level module) -> layer, lowest first
LAYERS = {
    "base": 0,       # errors, masking, atomic files, progress, config machinery, the model catalogue
    "data": 1,       # Dataset record + registry, readers, splits, one module per dataset kind
    "nn": 2,         # torch modules, augmentation, the one inference path, prediction intervals
    "figures": 3,    # one PNG per function; never a task
    "runfolder": 4,  # run-folder files, Run/Study objects, the report; never a task
    "training": 5,   # engine (stop policy, events), trainer, stacked trainer, CV, callbacks, TensorBoard
    "tasks": 6,      # the Task interface, run_task, and every task-specific line: regress/, classify/
    "tools": 7,      # predict, export, lr finder, sklearn estimators, bench: over any task
    "search": 7,     # Optuna studies over any task
    # entry points and the public re-export modules (nndl.callbacks, nndl.sklearn)
    "cli": 8, "__main__": 8, "callbacks": 8, "sklearn": 8,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    """The layer of ``module``: that of its package below ``nndl`` (the package itself is 0)."""
    parts = module.split(".")
    return 0 if parts == ["nndl"] else LAYERS.get(parts[1])


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


def test_the_tree_is_the_layer_table():
    """Beside the packages, only the entry points and public re-exports; every package has a layer."""
    entries = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" and p.name != "__init__.py"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert not entries - set(LAYERS), f"top-level modules without a layer (move them into a package): {entries - set(LAYERS)}"
    assert not packages - set(LAYERS), f"packages without a layer in tests/test_architecture.py: {packages - set(LAYERS)}"


def test_imports_point_down():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        me = module_name(path)
        for target in nndl_imports(path):
            if target == "nndl.__version__":
                continue  # a constant of the package
            there = layer_of(target)
            if there is not None and there > layer_of(me):
                upward.append(f"{me} (layer {layer_of(me)}) imports {target} (layer {there})")
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))


def test_the_public_re_exports_hold_nothing_of_their_own():
    """nndl.callbacks and nndl.sklearn are stable import paths for users, not a second home for code."""
    for name in ("callbacks", "sklearn"):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        own = [type(n).__name__ for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not own, f"nndl/{name}.py defines {own}: put them in its package and re-export"


# Modules outside tasks/ and cli that may still spell a task's name, and why.
TASK_NAME_ALLOWED = {
    "__init__.py": "the public functions nndl.regress and nndl.classify: names of the API, not a task switch "
                   "(nndl, layer 0, cannot read the task registry of layer 6)",
}


def test_no_task_name_outside_tasks():
    """tasks/ owns every task-specific line: elsewhere a task is reached through the registry and the Task
    interface, never by a string that is its name (``task == "classify"``, a table keyed by task name). A
    docstring or message that mentions a task in words is text, not a switch, and is not flagged."""
    from nndl.tasks import task_names

    names = set(task_names())
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("tasks/") or rel == "cli.py" or rel in TASK_NAME_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"src/nndl/{rel}:{node.lineno}: {node.value!r}")
    assert not found, ("task names outside tasks/ (reach the task through nndl.tasks.get_task and its interface, "
                       "or put the task-specific part in tasks/<task>/):\n" + "\n".join(found))


def test_the_config_machinery_names_no_task():
    """base/config.py is the machinery and the registry; each task's config, presets and rules live in
    tasks/NAME/config.py and register themselves (issue 20), so no task name is written there."""
    text = (PACKAGE / "base" / "config.py").read_text()
    for name in ("regress", "classify", "RegressConfig", "ClassifyConfig"):
        assert name.lower() not in text.lower(), f"base/config.py names the task '{name}': move that line to tasks/"
