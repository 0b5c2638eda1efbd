"""The course's files (lessons, app script, references) wherever kd_lessons is installed, and copying them out.

Introduced in notebook 00_start_here. A wheel carries them in `kd_lessons/_course/` (setup.py's build_py
copies them there); a clone (editable install) reads them from the repository itself. Every lesson's first
code cell is SETUP_SNIPPET, six lines (written by scripts/apply_setup_cell.py, checked by
tests/test_notebooks_clean.py), so a lesson opened where kd_lessons is missing says how to install it.
"""
from __future__ import annotations

import re
from pathlib import Path

from kd_lessons import __version__

__all__ = ["INSTALL_SOURCE", "SETUP_SNIPPET", "SETUP_END", "setup_source", "is_setup_cell", "setup_cells",
           "course_root", "lessons", "app_script", "references", "copy_notebooks", "localize_links", "NOTEBOOK_GLOB"]

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"  # the lessons, in course order by their number
_PACKAGED = Path(__file__).resolve().with_name("_course")
_CHECKOUT = Path(__file__).resolve().parents[1]

# Where pip gets kd_lessons from inside a lesson. The project has no public URL and no PyPI release, so the
# default is the course's wheel uploaded beside the notebook (Colab: the Files panel; `make wheel` builds it).
# A published copy would put its git URL or PyPI name here; then run scripts/apply_setup_cell.py.
INSTALL_SOURCE = f"kd_lessons-{__version__}-py3-none-any.whl"

SETUP_END = "# --- end of setup ---"  # closed the setup lines of older lessons (apply_setup_cell.py splits them off)


def setup_source(install: bool = False) -> str:
    """The first code cell of every lesson (SETUP_SNIPPET; install=True as a learner sets it).

    Six lines that run before kd_lessons can be imported: where it is missing they stop and say how to install
    it, or (INSTALL = True, always on Colab) pip-install KD_LESSONS_SOURCE, the course's wheel beside the notebook.
    Lesson imports go in the next cell.
    """
    return f'''INSTALL, KD_LESSONS_SOURCE = {install}, "{INSTALL_SOURCE}"  # the course's wheel beside this notebook
import importlib.util, subprocess, sys  # noqa: E401, I001  (one line: this first cell is the same in every lesson)
pip = [sys.executable, "-m", "pip", "install", "-q", KD_LESSONS_SOURCE]  # or a git URL: README, "Install anywhere"
if importlib.util.find_spec("kd_lessons") is None and not (INSTALL or "google.colab" in sys.modules):
    raise ModuleNotFoundError("kd_lessons is not installed: set INSTALL = True above and rerun, or: " + " ".join(pip))
importlib.util.find_spec("kd_lessons") or subprocess.run(pip, check=True)  # installs it (on Colab without the flag)'''


SETUP_SNIPPET = setup_source()


def is_setup_cell(source: str) -> bool:
    """Whether a code cell is a lesson's setup cell, this version's or an older one (it sets KD_LESSONS_SOURCE)."""
    return "KD_LESSONS_SOURCE" in source and "find_spec" in source


def setup_cells(source: str) -> list[str]:
    """What replaces a lesson's first code cell: SETUP_SNIPPET, then the cell's own code if it had more than setup.

    scripts/apply_setup_cell.py writes it into the lessons. An older setup cell (lines up to
    SETUP_END, or a whole cell setting KD_LESSONS_SOURCE) is dropped; code after it moves to a cell of its own.
    """
    if SETUP_END in source:
        source = source.split(SETUP_END, 1)[1]
    elif is_setup_cell(source):
        source = ""
    rest = source.strip("\n")
    return [SETUP_SNIPPET, rest] if rest else [SETUP_SNIPPET]


def course_root() -> Path:
    """The folder holding notebooks/, app.py and docs/: the installed copy, else the clone this runs from."""
    for root in (_PACKAGED, _CHECKOUT):
        if (root / "notebooks").is_dir() and (root / "app.py").is_file():
            return root
    raise FileNotFoundError(f"no course files in {_PACKAGED} (an installed wheel) nor {_CHECKOUT} (a clone): "
                            f"reinstall with `pip install kd-lessons` from a wheel or from the repository")


def lessons() -> list[Path]:
    """The lesson notebooks (NN_name.ipynb) in course order."""
    return sorted((course_root() / "notebooks").glob(NOTEBOOK_GLOB))


def app_script() -> Path:
    """The Streamlit script of the classroom app (`python -m kd_lessons app` runs it)."""
    return course_root() / "app.py"


def references() -> Path:
    """docs/references.md: every paper the course cites."""
    return course_root() / "docs" / "references.md"


def localize_links(text: str, depth: int = 0) -> str:
    """Links into the clone's docs/ point at references.md copied beside the lessons."""
    up = "../" * depth
    return re.sub(r"\]\((?:\.\./)+docs/references\.md", "](" + up + "references.md", text)


def _planned(dest: Path) -> list[tuple[Path, Path, bool]]:
    """(source, target, rewrite_links) for every file `copy_notebooks` writes."""
    root = course_root()
    files = [(p, dest / p.name, True) for p in lessons()]
    solved = sorted((root / "notebooks" / "solutions").glob("*.ipynb"))
    files += [(p, dest / "solutions" / p.name, True) for p in solved]
    files += [(root / "notebooks" / "sanitize.cfg", dest / "sanitize.cfg", False),
              (references(), dest / "references.md", False)]
    return [f for f in files if f[0].is_file()]


def copy_notebooks(dest: str | Path, force: bool = False) -> dict[str, list[str]]:
    """Copy the lessons (with solutions/, references.md, sanitize.cfg) into dest; never overwrite edits unless force.

    Returns {"copied": [...], "unchanged": [...], "overwritten": [...]} (paths relative to dest). A file in dest
    that differs from the course's copy is a learner's edit: without force nothing is written and a ValueError
    lists them.
    """
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"{dest} is a file; pass a folder to copy the lessons into (it is created if missing)")
    plan = []
    for src, target, rewrite in _planned(dest):
        depth = len(target.relative_to(dest).parts) - 1
        text = src.read_text(encoding="utf-8")
        plan.append((target, localize_links(text, depth) if rewrite else text))
    edited = [t for t, text in plan if t.exists() and t.read_text(encoding="utf-8") != text]
    if edited and not force:
        names = ", ".join(str(t.relative_to(dest)) for t in edited)
        raise ValueError(f"{dest} already has edited copies of {names}; nothing was copied. Keep your work "
                         f"(copy the lessons to another folder) or pass --force to overwrite them.")
    report = {"copied": [], "unchanged": [], "overwritten": []}
    for target, text in plan:
        rel = str(target.relative_to(dest))
        if target.exists() and target.read_text(encoding="utf-8") == text:
            report["unchanged"].append(rel)
            continue
        report["overwritten" if target.exists() else "copied"].append(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)  # atomic: a half-written notebook never appears
    return report
