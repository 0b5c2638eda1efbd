"""Write the solved copy of notebook 09_coding_exercises from the learner copy, so they never drift apart.

Each cell tagged `solution` (metadata `kd_exercise` = an exercise key) gets that exercise's
solution_code; an all-correct assertion follows the cell tagged `summary`; relative links gain a
`../` because the copy sits one folder deeper. `--check` writes nothing and exits 1 if the copy is stale.
"""
import copy
import re
import sys
from pathlib import Path

import nbformat

from kd_lessons.exercises import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
LEARNER = ROOT / "notebooks" / "09_coding_exercises.ipynb"
SOLVED = ROOT / "notebooks" / "solutions" / "09_coding_exercises_solved.ipynb"

SOLVED_NOTE = ("> **Solved copy.** Generated from `09_coding_exercises.ipynb` by `make solutions` "
               "(`scripts/build_solutions.py`); do not edit it by hand. Try the learner copy first.")
ASSERT_ALL = ("# Solved copy only: every exercise above must report \"correct\".\n"
              "outcomes = {key: r.outcome for key, r in exercises.results().items()}\n"
              "missing = sorted(set(exercises.EXERCISES) - set(outcomes))\n"
              "assert not missing, missing\n"
              "assert all(o == \"correct\" for o in outcomes.values()), outcomes\n"
              "print(f\"all {len(outcomes)} exercises correct\")")


def build_solutions(nb):
    """The solved notebook for a learner notebook: solution cells filled in, an all-correct assert added."""
    solved = copy.deepcopy(nb)
    for cell in solved.cells:
        if "solution" in cell.metadata.get("tags", []):
            key = cell.metadata.get("kd_exercise")
            if key not in EXERCISES:
                raise ValueError(f"a cell tagged 'solution' has kd_exercise={key!r}; set its metadata "
                                 f"'kd_exercise' to one of {sorted(EXERCISES)}.")
            cell.source = EXERCISES[key]().solution_code.rstrip("\n")
        elif cell.cell_type == "markdown":
            cell.source = re.sub(r"\]\(\.\./", "](../../", cell.source)
    solved.cells[0].source = solved.cells[0].source.rstrip("\n") + "\n\n" + SOLVED_NOTE
    summary = [i for i, c in enumerate(solved.cells) if "summary" in c.metadata.get("tags", [])]
    if len(summary) != 1:
        raise ValueError(f"the learner notebook needs exactly one cell tagged 'summary' (found "
                         f"{len(summary)}); the all-correct assertion goes right after it.")
    solved.cells.insert(summary[0] + 1, nbformat.v4.new_code_cell(
        ASSERT_ALL, id="solved-assert-all", metadata={"tags": ["solved-only"]}))
    return solved


def main(argv=None) -> int:
    """`make solutions`: write the solved copy; with --check only say whether it is stale (exit 1)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--check"]):
        print("usage: python scripts/build_solutions.py [--check]")
        return 2
    text = nbformat.writes(build_solutions(nbformat.read(LEARNER, as_version=4)))
    if argv == ["--check"]:
        stale = not SOLVED.exists() or SOLVED.read_text(encoding="utf-8") != text
        print(f"{SOLVED.name} is {'stale: run make solutions' if stale else 'up to date'}")
        return int(stale)
    SOLVED.parent.mkdir(parents=True, exist_ok=True)
    tmp = SOLVED.with_name(SOLVED.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(SOLVED)  # atomic: readers see the old copy or the new one, never half of one
    print(f"wrote {SOLVED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
