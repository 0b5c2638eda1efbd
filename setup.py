"""Ships the course's files inside the package: the notebooks stay in notebooks/ at the repository root.

pyproject.toml holds the metadata; this only adds a build_py step that copies the lessons, the app script and
the references into kd_lessons/_course/ of a wheel (kd_lessons.course finds them there). Editable installs
skip it: kd_lessons.course reads the clone's own files.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
COURSE_FILES = ["notebooks/[0-9][0-9]_*.ipynb", "notebooks/solutions/*.ipynb", "notebooks/sanitize.cfg",
                "app.py", "docs/references.md"]  # MANIFEST.in lists the same for the sdist


class build_py_with_course(build_py):
    """build_py, then the course files into <build_lib>/kd_lessons/_course/."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "kd_lessons" / "_course"
        found = [p for pattern in COURSE_FILES for p in sorted(ROOT.glob(pattern))]
        if not any(p.suffix == ".ipynb" for p in found) or not (ROOT / "app.py").is_file():
            raise SystemExit(f"no notebooks or app.py under {ROOT}: build from a clone or from the sdist")
        for src in found:
            dest = target / src.relative_to(ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)


setup(cmdclass={"build_py": build_py_with_course})
