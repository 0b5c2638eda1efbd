"""Clear outputs and execution counts of notebooks so commits stay small and diffable."""
import sys
from pathlib import Path

import nbformat


def strip(path: Path) -> bool:
    """Strip one notebook in place; return True if it changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code":
            if cell.outputs or cell.execution_count is not None:
                changed = True
            cell.outputs, cell.execution_count = [], None
        for key in ("execution", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    roots = [Path(p) for p in sys.argv[1:]] or [Path("notebooks")]
    for root in roots:
        for path in sorted(root.rglob("*.ipynb")) if root.is_dir() else [root]:
            if ".ipynb_checkpoints" not in path.parts and strip(path):
                print(f"stripped {path}")
