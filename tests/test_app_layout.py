"""The app's shape (issue 22 item 7), checked on the source: app.py is layout, kd_lessons/app never imports
Streamlit, no function reads a sidebar value as a global, and no code branches on a dataset's name."""
import ast
from pathlib import Path

from kd_lessons import datasets

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
PACKAGE = sorted((ROOT / "kd_lessons" / "app").glob("*.py"))
SIDEBAR = {"dataset", "T", "alpha", "width", "n_images", "available"}  # the values app.py's sidebar widgets return


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_app_py_is_at_most_150_lines_and_assigns_the_sidebar_values_it_passes_on():
    assert len(APP.read_text(encoding="utf-8").splitlines()) <= 150
    assigned = {t.id for node in _tree(APP).body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    assert SIDEBAR - {"available"} <= assigned  # the check below would pass vacuously if a name changed


def _outermost_functions(node: ast.AST):
    """Functions and lambdas not nested in another one (a nested one may read its enclosing function's names)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield child
        else:
            yield from _outermost_functions(child)


def test_no_function_reads_a_sidebar_value_as_a_global():
    checked = 0
    for path in [APP, *PACKAGE]:
        for fn in _outermost_functions(_tree(path)):
            checked += 1
            own = {a.arg for f in ast.walk(fn) if isinstance(f, (ast.FunctionDef, ast.Lambda))
                   for a in f.args.args + f.args.kwonlyargs}
            own |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            read = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            leaked = (read - own) & SIDEBAR
            assert not leaked, f"{path.name}:{fn.lineno} reads {sorted(leaked)} as globals: pass them in"
    assert checked > 50  # every module's functions were walked


def test_the_package_side_never_imports_streamlit():
    for path in PACKAGE:
        for node in ast.walk(_tree(path)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "streamlit" for n in names), f"{path.name} imports {names}"


def test_no_dataset_name_appears_in_the_app_code():
    names = set(datasets.DATASETS)
    assert {"mnist", "cifar10"} <= names  # the registry is the one read here
    for path in [APP, *PACKAGE]:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in names, f"{path.name}:{node.lineno} names dataset {node.value!r}"
