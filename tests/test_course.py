"""kd_lessons.course: the lessons' first-cell setup snippet, and copying the lessons out without losing edits."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kd_lessons import course

ROOT = Path(__file__).resolve().parents[1]


def _run_snippet(monkeypatch, tmp_path, installed: bool, flag: bool = False, colab: bool = False,
                 wheel_present: bool = False):
    """Execute SETUP_SNIPPET as a notebook kernel would; return the pip commands it ran."""
    ran = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "kd_lessons" and not installed else real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: ran.append(cmd))
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", object())
    monkeypatch.chdir(tmp_path)
    if wheel_present:
        (tmp_path / course.INSTALL_SOURCE).write_bytes(b"stand-in")
    exec(compile(course.setup_source(install=flag), "setup-cell", "exec"), {})
    return ran


def test_snippet_does_nothing_where_kd_lessons_is_installed(monkeypatch, tmp_path):
    assert _run_snippet(monkeypatch, tmp_path, installed=True) == []


def test_snippet_says_how_to_install_when_the_flag_is_not_set(monkeypatch, tmp_path):
    with pytest.raises(ModuleNotFoundError, match=r"set INSTALL = True above .* -m pip install -q kd_lessons-"):
        _run_snippet(monkeypatch, tmp_path, installed=False)


def test_snippet_is_six_short_lines_and_the_flag_is_its_first_word():
    lines = course.SETUP_SNIPPET.splitlines()
    assert len(lines) <= 6 and all(len(line) <= 120 for line in lines)
    assert lines[0].startswith("INSTALL, KD_LESSONS_SOURCE = False, ")
    assert course.setup_source(install=True).splitlines()[0].startswith("INSTALL, KD_LESSONS_SOURCE = True, ")


def test_snippet_installs_the_wheel_when_the_flag_is_set(monkeypatch, tmp_path):
    ran = _run_snippet(monkeypatch, tmp_path, installed=False, flag=True, wheel_present=True)
    assert ran == [[sys.executable, "-m", "pip", "install", "-q", course.INSTALL_SOURCE]]


def test_snippet_installs_on_colab_without_the_flag(monkeypatch, tmp_path):
    ran = _run_snippet(monkeypatch, tmp_path, installed=False, colab=True, wheel_present=True)
    assert len(ran) == 1 and ran[0][-1] == course.INSTALL_SOURCE


def test_snippet_leaves_a_missing_wheel_to_pip(monkeypatch, tmp_path):
    """No room in six lines for a second message: pip's own error names the missing file (test_wheel runs it)."""
    ran = _run_snippet(monkeypatch, tmp_path, installed=False, flag=True)
    assert ran == [[sys.executable, "-m", "pip", "install", "-q", course.INSTALL_SOURCE]]
    assert "beside this notebook" in course.SETUP_SNIPPET.splitlines()[0]


def test_install_source_names_this_version_s_wheel():
    import kd_lessons

    assert course.INSTALL_SOURCE == f"kd_lessons-{kd_lessons.__version__}-py3-none-any.whl"


def test_setup_cells_replace_an_older_snippet_and_move_the_rest_to_its_own_cell():
    old = "# --- kd-lessons setup: old ---\nINSTALL = 1\n" + course.SETUP_END + "\nimport torch\n"
    assert course.setup_cells(old) == [course.SETUP_SNIPPET, "import torch"]
    assert course.setup_cells(course.SETUP_SNIPPET) == [course.SETUP_SNIPPET]
    older_short = course.SETUP_SNIPPET.replace("KD_LESSONS_SOURCE = False", "KD_LESSONS_SOURCE = True")
    assert course.is_setup_cell(older_short) and course.setup_cells(older_short) == [course.SETUP_SNIPPET]
    assert not course.is_setup_cell("import torch\n")


def test_a_clone_reads_its_own_files():
    assert course.course_root() == ROOT and course.app_script() == ROOT / "app.py"
    assert course.lessons() == sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.name[:2] for p in course.lessons()] == sorted(p.name[:2] for p in course.lessons())


def test_copy_notebooks_copies_lessons_with_working_reference_links(tmp_path):
    report = course.copy_notebooks(tmp_path / "lessons")
    dest = tmp_path / "lessons"
    names = {p.name for p in course.lessons()}
    assert names <= set(report["copied"]) and "references.md" in report["copied"]
    assert (dest / "sanitize.cfg").is_file() and (dest / "solutions").is_dir()
    for nb in [*dest.glob("*.ipynb"), *dest.glob("solutions/*.ipynb")]:
        text = nb.read_text(encoding="utf-8")
        json.loads(text)
        assert "../docs/references.md" not in text, nb.name  # clone-only links are rewritten
        if "](references.md" in text:
            assert (nb.parent / "references.md").is_file()
    solved = next(dest.glob("solutions/*.ipynb")).read_text(encoding="utf-8")
    assert "](../references.md" in solved


def test_copy_notebooks_keeps_edits_unless_forced(tmp_path):
    course.copy_notebooks(tmp_path)
    first = tmp_path / course.lessons()[0].name
    edit = '"INSTALL, KD_LESSONS_SOURCE = False, ', '"INSTALL, KD_LESSONS_SOURCE = True, # my edit '
    first.write_text(first.read_text(encoding="utf-8").replace(*edit), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"edited copies of {first.name}; nothing was copied.*--force"):
        course.copy_notebooks(tmp_path)
    assert "# my edit" in first.read_text(encoding="utf-8")  # the learner's edit survives
    again = course.copy_notebooks(tmp_path, force=True)
    assert again["overwritten"] == [first.name] and not again["copied"]
    assert "# my edit" not in first.read_text(encoding="utf-8")
    assert course.copy_notebooks(tmp_path)["overwritten"] == []


def test_copy_notebooks_refuses_a_file_as_destination(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file; pass a folder"):
        course.copy_notebooks(tmp_path / "f")


def test_every_test_file_names_its_lessons(lesson_table, pytestconfig):
    """`make test-lesson N=12` is only honest if no test file is left out of tests/conftest.py's LESSONS table."""
    files = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    missing, stale = sorted(files - set(lesson_table)), sorted(set(lesson_table) - files)
    assert not missing, f"{missing} have no lessons: add each to LESSONS in tests/conftest.py"
    assert not stale, f"LESSONS in tests/conftest.py names {stale}, which are not in tests/: rename or drop them"
    numbers = {int(p.name[:2]) for p in course.lessons()}
    unknown = {name: n for name, ns in lesson_table.items() for n in ns if n not in numbers}
    assert not unknown, f"LESSONS names lessons with no notebook: {unknown}"
    declared = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    undeclared = sorted(f"lesson{n:02d}" for n in numbers if f"lesson{n:02d}" not in declared)
    assert not undeclared, f"declare {undeclared} under [tool.pytest.ini_options] markers in pyproject.toml"
