"""Put kd_lessons.course.SETUP_SNIPPET at the top of each lesson's first code cell (replacing an older one).

Usage: `python scripts/apply_setup_cell.py notebooks/00_start_here.ipynb ...` (no argument: every
notebooks/NN_*.ipynb). Cell ids and the rest of the cell stay as they are; `--check` writes nothing and
exits 1 when a notebook lacks the current snippet. Then run `make strip` and `make solutions`.
"""
import sys
from pathlib import Path

import nbformat

from kd_lessons.course import NOTEBOOK_GLOB, SETUP_SNIPPET, with_setup

ROOT = Path(__file__).resolve().parents[1]


def apply(path: Path, check: bool = False) -> bool:
    """Give one notebook the current snippet; return True if it lacked it (and, unless check, write it)."""
    nb = nbformat.read(path, as_version=4)
    first = next((c for c in nb.cells if c.cell_type == "code"), None)
    if first is None:
        raise ValueError(f"{path} has no code cell; a lesson's first code cell is its setup cell")
    if first.source.startswith(SETUP_SNIPPET):
        return False
    if not check:
        first.source = with_setup(first.source)
        nbformat.write(nb, path)
    return True


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or sorted((ROOT / "notebooks").glob(NOTEBOOK_GLOB))
    stale = [p for p in paths if apply(p, check)]
    for p in stale:
        print(f"{'lacks the setup snippet' if check else 'updated'}: {p}")
    return int(check and bool(stale))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
