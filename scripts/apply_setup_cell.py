"""Make kd_lessons.course.SETUP_SNIPPET the first code cell of each lesson (replacing an older setup cell).

Usage: `python scripts/apply_setup_cell.py notebooks/00_start_here.ipynb ...` (no argument: every
notebooks/NN_*.ipynb and notebooks/solutions/*.ipynb). The setup cell keeps its cell id; code that shared the cell
with an older, longer snippet moves to a new cell right after it. `--check` writes nothing and exits 1 when a
notebook's first code cell is not the current snippet. Then run `make strip` and `make solutions`.
"""
import sys
from pathlib import Path

import nbformat

from kd_lessons.course import NOTEBOOK_GLOB, SETUP_SNIPPET, is_setup_cell, setup_cells

ROOT = Path(__file__).resolve().parents[1]


def apply(path: Path, check: bool = False) -> bool:
    """Give one notebook the current setup cell; return True if it lacked it (and, unless check, write it)."""
    nb = nbformat.read(path, as_version=4)
    at = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), None)
    if at is None:
        raise ValueError(f"{path} has no code cell; a lesson's first code cell is its setup cell: add one")
    first = nb.cells[at]
    if first.source == SETUP_SNIPPET:
        return False
    if check:
        return True
    if is_setup_cell(first.source):
        sources = setup_cells(first.source)
        first.source = sources[0]
        # a fixed id, so applying the script twice (or to a copy) gives the same notebook
        nb.cells[at + 1:at + 1] = [nbformat.v4.new_code_cell(s, id=f"{first.get('id', 'setup')}-next")
                                   for s in sources[1:]]
    else:  # a lesson without a setup cell: one goes in front of its first code cell
        nb.cells.insert(at, nbformat.v4.new_code_cell(SETUP_SNIPPET))
    nbformat.write(nb, path)
    return True


def main(argv: list[str]) -> int:
    """Apply (or with --check, verify) the setup cell; the exit status is 1 when --check finds a stale notebook."""
    check = "--check" in argv
    folder = ROOT / "notebooks"
    default = [*sorted(folder.glob(NOTEBOOK_GLOB)), *sorted((folder / "solutions").glob("*.ipynb"))]
    paths = [Path(a) for a in argv if a != "--check"] or default
    stale = [p for p in paths if apply(p, check)]
    for p in stale:
        print(f"{'lacks the setup cell' if check else 'updated'}: {p}")
    return int(check and bool(stale))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
