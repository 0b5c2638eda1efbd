"""Every "Notebook NN" tag in kd_lessons names a lesson that really uses that function or class (tags drift).

The rule, checkable without running anything: a tag "notebook NN" (or "notebook NN_name", "notebooks 04 and 11")
in the docstring of a public top-level function or class `X` of module `m` is right when notebook NN's code cells
use X, either
  - directly: the word X appears in a code cell, and so does the name of m or of the package that re-exports X
    (`from kd_lessons.runs import grid` ... `grid.load(...)`; `from kd_lessons import exercises` ... `exercises.X`), or
  - through the package: a function or class that notebook uses refers to X in its body (followed transitively;
    a name resolves to its own module first, else to the kd_lessons modules that module imports).
Every "notebook NN" in such a docstring is a tag (a mere pointer to another lesson says "lesson NN"); the solved
copy of a lesson (notebooks/solutions/NN_*) counts as that lesson. A tag "NN_name" must spell the notebook's file.
kd_lessons/app/ is exempt: its tags name the lesson a tab of the app mirrors, not a notebook that calls it. A name
no notebook reaches (used by the app, the CLI or tests only) drops its tag or names the notebook whose code
reaches the function that uses it.
"""
import ast
import re
from functools import lru_cache
from pathlib import Path

import nbformat

from kd_lessons.course import NOTEBOOK_GLOB

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kd_lessons"
TAG = re.compile(r"\b[Nn]otebooks?\s+((?:\d\d(?:_\w+)?(?:,\s*|\s+and\s+|\s+or\s+|\s*/\s*)?)+)")
NUMBER = re.compile(r"(\d\d)(_\w+)?")
MODULE_CODE = "<module>"  # the pseudo-name of a module's top-level statements
IMPORT = "<import>"  # a ref "<import>methods/logits": the string "kd_lessons.methods.logits", for importlib


@lru_cache(maxsize=None)
def _words(text: str) -> frozenset:
    """The identifiers in a text (a name is "used" when it appears as a whole word)."""
    return frozenset(re.findall(r"\w+", text))


@lru_cache(maxsize=1)
def notebooks() -> dict:
    """{"NN": (file stem, the code cells of the lesson and of its solved copy, joined)} for every lesson."""
    out = {}
    for p in sorted((ROOT / "notebooks").glob(NOTEBOOK_GLOB)):
        copies = [p, *sorted((ROOT / "notebooks" / "solutions").glob(f"{p.stem}_*.ipynb"))]
        cells = [c for q in copies for c in nbformat.read(q, as_version=4).cells if c.cell_type == "code"]
        out[p.name[:2]] = (p.stem, "\n".join(c.source for c in cells))
    return out


def _refs(node) -> set:
    """Names and attributes a statement refers to, and "kd_lessons.x" strings (importlib) as IMPORT + "x"."""
    refs = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    refs |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    return refs | {IMPORT + n.value.replace(".", "/").removeprefix("kd_lessons/") for n in ast.walk(node)
                   if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("kd_lessons.")}


def _module_definitions(rel: str, tree: ast.Module, defs: dict) -> None:
    """Add one module's top-level defs, tables and re-exports to defs, and its import-time code as MODULE_CODE."""
    top = set()  # what the module's own top-level code (run on import) refers to, e.g. register(...) calls
    for node in tree.body:
        refs = _refs(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[(rel, node.name)] = (ast.get_docstring(node) or "", refs - {node.name}, node.lineno)
            if node.decorator_list:  # @register(...) hands the object to a registry when the module imports
                top.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):  # tables such as METHODS = {"kd": TokenKD, ...}
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for name in (t.id for t in targets if isinstance(t, ast.Name)):
                defs[(rel, name)] = ("", refs - {name}, node.lineno)
        elif isinstance(node, ast.ImportFrom):  # a re-export: rr.plot_methods is trace_plots.plot_methods
            for alias in node.names:
                defs.setdefault((rel, alias.asname or alias.name), ("", {alias.name}, node.lineno))
        elif not isinstance(node, ast.Import):
            top |= refs
    defs[(rel, MODULE_CODE)] = ("", top, 0)


@lru_cache(maxsize=1)
def definitions() -> dict:
    """{(module path, name): (docstring, names its body refers to, lineno)} for every top-level def/class."""
    defs = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        if "_course" not in f.parts:
            rel = f.relative_to(PACKAGE).with_suffix("").as_posix()
            _module_definitions(rel, ast.parse(f.read_text(encoding="utf-8")), defs)
    return defs


@lru_cache(maxsize=None)
def imported_modules(module: str) -> frozenset:
    """The kd_lessons modules (paths like "runs/students") that a module imports, as module or from-import."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    here = module.split("/")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                base = here[: len(here) - node.level + 1]
            elif node.module and node.module.split(".")[0] == "kd_lessons":
                base = []
            else:
                continue
            parts = base + (node.module.split(".") if node.module else [])
            parts = parts[1:] if parts[:1] == ["kd_lessons"] else parts
            stem = "/".join(parts)
            found |= {stem, *(f"{stem}/{a.name}".strip("/") for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name.replace(".", "/").removeprefix("kd_lessons/") for a in node.names
                      if a.name.startswith("kd_lessons")}
    modules = {m for m, _ in definitions()}
    return frozenset(m for m in found if m in modules) | frozenset(
        m for m in modules if m.endswith("/__init__") and m.removesuffix("/__init__") in found)


@lru_cache(maxsize=None)
def _init_text(package: str) -> str:
    """A subpackage's __init__.py (what it re-exports), "" if none."""
    init = PACKAGE / package / "__init__.py"
    return init.read_text(encoding="utf-8") if init.is_file() else ""


def _directly_used(module: str, name: str, code: frozenset) -> bool:
    """The notebook's code says `name` and names its module (or a package whose __init__ exports it)."""
    if name == MODULE_CODE or name not in code:
        return False
    parts = module.split("/")
    stems = [parts[-1]] if parts[-1] != "__init__" else [parts[-2]] if len(parts) > 1 else []
    for i in range(len(parts) - 1, 0, -1):
        if name in _words(_init_text("/".join(parts[:i]))):
            stems.append(parts[i - 1])
    if module in ("__init__",):
        stems.append("kd_lessons")
    return any(s in code for s in stems)


@lru_cache(maxsize=None)
def used_by(number: str) -> frozenset:
    """Every (module, name) notebook `number` uses, directly or through the package."""
    code = _words(notebooks()[number][1])
    defs = definitions()
    todo = [key for key in defs if _directly_used(*key, code)]
    seen = set(todo)
    while todo:
        module, name = todo.pop()
        imports = imported_modules(module)
        # Using a def runs its module's top level and that of the modules it imports (registrations), one level.
        targets = [] if name == MODULE_CODE else [(m, MODULE_CODE) for m in (module, *imports)]
        for ref in defs[(module, name)][1]:
            here = (module, ref)
            if ref.startswith(IMPORT):
                targets += [k for k in [(ref.removeprefix(IMPORT), MODULE_CODE)] if k in defs]
            elif here in defs and here != (module, name):
                targets.append(here)
            else:
                targets += [(m, ref) for m in imports if (m, ref) in defs]
        for key in targets:
            if key not in seen:
                seen.add(key)
                todo.append(key)
    return frozenset(seen)


def tags() -> list:
    """(module, name, line, "NN", "_name" or "") for every tag on a public top-level function or class."""
    out = []
    for (module, name), (doc, _, line) in definitions().items():
        if name.startswith("_") or module.startswith("app/"):
            continue
        for match in TAG.finditer(doc):
            out += [(module, name, line, m.group(1), m.group(2) or "") for m in NUMBER.finditer(match.group(1))]
    return out


def wrong_tags() -> list:
    """The tags that break the rule of this file's docstring, each with the notebooks that do use the name."""
    wrong = []
    for module, name, line, number, suffix in tags():
        if number not in notebooks():
            why = f"there is no notebook {number}"
        elif suffix and f"{number}{suffix}" != notebooks()[number][0]:
            why = f"notebook {number} is {notebooks()[number][0]}, not {number}{suffix}"
        elif (module, name) not in used_by(number):
            users = [n for n in notebooks() if (module, name) in used_by(n)]
            why = f"notebook {number} never uses it; used by {users or 'no notebook'}"
        else:
            continue
        wrong.append(f"kd_lessons/{module}.py:{line} {name}: {why}")
    return wrong


def test_the_tag_scan_finds_the_tags():
    """The scan itself can fail: a known tag is found and a known right one passes."""
    found = {(m, n, num) for m, n, _, num, _ in tags()}
    assert len(found) > 150
    assert ("losses", "kd_loss", "03") in found or ("losses", "kd_loss", "02") in found
    assert ("losses", "kd_loss") in used_by("03")


def test_a_wrong_tag_is_caught(monkeypatch):
    """A made-up tag on a name notebook 00 never reaches is reported."""
    defs = dict(definitions())
    doc, refs, line = defs[("generative/divergences", "reverse_kl")]
    defs[("generative/divergences", "reverse_kl")] = ("Introduced in notebook 00_start_here.", refs, line)
    monkeypatch.setitem(globals(), "definitions", lambda: defs)
    used_by.cache_clear()
    try:
        assert any("reverse_kl: notebook 00 never uses it" in w for w in wrong_tags())
    finally:
        used_by.cache_clear()


def test_every_notebook_tag_names_a_notebook_that_uses_the_name():
    wrong = wrong_tags()
    assert not wrong, (f"{len(wrong)} of {len(tags())} 'Notebook NN' tags name a lesson that does not use the name "
                       "(make the docstring name one that does; rule: this file's docstring):\n" + "\n".join(wrong))
