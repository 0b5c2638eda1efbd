"""`make full`: every lesson in full mode; its quoted numbers, asserts and stage times into results/NN_lesson.json.

Runs notebooks/NN_*.ipynb in course order (`--lessons 11 12`: a subset) with nbclient, no cell timeout, in notebooks/
with KD_QUICK=0, KD_RESULTS_DIR and KD_LESSON set (so `results.record` stages); the executed copy goes to build/full/.
Errors do not stop a lesson; then every `assert` is judged, cell times are summed under the `##` headings and
`results.finalize` writes the ledger atomically. A dead kernel, Ctrl-C or SIGTERM keeps the lesson's previous file.
Exits 1 if a lesson failed, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import ast
import asyncio
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager
from nbclient import NotebookClient
from nbclient.util import ensure_async
from tqdm.auto import tqdm

from kd_lessons import results
from kd_lessons.course import NOTEBOOK_GLOB

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FRAME = re.compile(r"Cell In\[(\d+)\], line (\d+)")  # IPython's traceback frame of a notebook cell


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT: stop at once, write no ledger for the lesson that was running."""


def _stop(signum, frame=None):
    raise Stopped(signum)


def pick(folder: Path, wanted: list[str]) -> list[Path]:
    """The lessons asked for ('11', '1', '11_methods_tour'), in course order; ValueError lists those that exist."""
    lessons = sorted(folder.glob(NOTEBOOK_GLOB))
    tokens = [t for w in wanted for t in re.split(r"[\s,]+", w) if t]
    if not tokens:
        return lessons
    by_key = {p.name[:2]: p for p in lessons} | {p.stem: p for p in lessons}
    keys = [f"{int(t):02d}" if t.isdigit() else t.removesuffix(".ipynb") for t in tokens]
    unknown = [t for t, k in zip(tokens, keys) if k not in by_key]
    if unknown:
        raise ValueError(f"--lessons {' '.join(unknown)}: no such lesson in {folder}; the lessons are "
                         + (", ".join(p.stem for p in lessons) or "none"))
    return [p for p in lessons if p in {by_key[k] for k in keys}]


def _parse(source: str) -> ast.Module:
    """A code cell as Python (IPython magics turned into calls, line numbers kept); empty if it does not parse."""
    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def _when(test: ast.expr, env: dict) -> tuple[bool, bool]:
    """(body runs only in full mode, else-branch runs only in full mode) for an `if` test on config.is_quick()."""
    if isinstance(test, ast.Call) and getattr(test.func, "attr", getattr(test.func, "id", "")) == "is_quick":
        return False, True
    if isinstance(test, ast.Name):
        return env.get(test.id, (False, False))
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        body, other = _when(test.operand, env)
        return other, body
    if isinstance(test, ast.BoolOp):
        parts = [_when(v, env) for v in test.values]
        if isinstance(test.op, ast.And):
            return any(p[0] for p in parts), all(p[1] for p in parts)
        return all(p[0] for p in parts), any(p[1] for p in parts)
    return False, False


def _collect(node: ast.AST, full_only: bool, env: dict, out: list) -> None:
    if isinstance(node, ast.Assert):
        out.append((node, full_only))
    branches = [(node.body, _when(node.test, env)[0]), (node.orelse, _when(node.test, env)[1])] \
        if isinstance(node, ast.If) else [(list(ast.iter_child_nodes(node)), False)]
    for children, full in branches:
        for child in children:
            _collect(child, full_only or full, env, out)


def error_of(cell) -> dict | None:
    """The cell's error output: name, message, and the cell lines of the outermost and innermost frames in it."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            trace = ANSI.sub("", "\n".join(out.get("traceback", [])))
            lines = [int(m[2]) for m in FRAME.finditer(trace) if int(m[1]) == cell.get("execution_count")]
            return {"ename": out.get("ename", "Error"), "evalue": str(out.get("evalue", "")),
                    "top": lines[0] if lines else None, "deepest": lines[-1] if lines else None}
    return None


def _judge(node: ast.Assert, error: dict | None, hit: bool | None = None) -> tuple[bool, str]:
    """(passed, note): from the kernel's record of passing asserts where there is one, else from the traceback."""
    if hit:
        return True, ""
    skipped = "not run (its branch was skipped)"
    if error is None:
        return (True, "") if hit is None else (False, skipped)
    top, deepest = error["top"], error["deepest"]
    if deepest is not None and node.lineno <= deepest <= node.end_lineno:
        return False, f"failed: {error['ename']}"
    if top is not None and node.end_lineno < top:
        return (True, "") if hit is None else (False, skipped)
    return False, "not reached"


def list_asserts(nb, quick: bool) -> list[dict]:
    """Every `assert` in the code cells: cell, line, source, full_only, and whether it passed in this run."""
    trees = {i: _parse(c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    env = {}  # names bound to a mode test, e.g. FULL = not config.is_quick()
    for tree in trees.values():
        for n in ast.walk(tree):
            if isinstance(n, ast.Assign) and any(_when(n.value, env)):
                env.update({t.id: _when(n.value, env) for t in n.targets if isinstance(t, ast.Name)})
    rows = []
    for i, tree in trees.items():
        found = []
        _collect(tree, False, env, found)
        lines = nb.cells[i].source.splitlines()
        count, hits = nb.cells[i].get("execution_count"), nb.metadata.get("kd_assert_hits")
        for node, full_only in sorted(found, key=lambda f: f[0].lineno):
            hit = None if hits is None else [count, node.lineno] in hits
            passed, note = _judge(node, error_of(nb.cells[i]), hit)
            if full_only and quick:
                passed, note = False, "not run (quick mode)"
            row = {"cell": i, "line": node.lineno, "full_only": full_only, "passed": passed,
                   "source": "\n".join(lines[node.lineno - 1:node.end_lineno]).strip()}
            rows.append(row | ({"note": note} if note else {}))
    return rows


def stages(nb, seconds: dict) -> list[dict]:
    """Cell times summed under the notebook's `##` headings (outside code fences), in order: [{"name", "s"}]."""
    out, name = [], "start"  # the cells above the first `##` heading: imports, settings
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            fences = re.sub(r"^```.*?^```", "", cell.source, flags=re.M | re.S)
            name = ([line[3:].strip() for line in fences.splitlines() if line.startswith("## ")] or [name])[-1]
        elif i in seconds:
            if not out or out[-1]["name"] != name:
                out.append({"name": name, "s": 0.0})
            out[-1]["s"] += seconds[i]
    return [{"name": s["name"], "s": round(s["s"], 2)} for s in out]


# Run first and last in the kernel (then dropped from the notebook): every assert that passes records (cell's In[n],
# line), so an assert whose branch never ran (no CIFAR-10, quick mode) is not counted as passed.
HITS_SETUP = """import ast as _ast, builtins as _b
_b.__kd_hits__ = set()
class _KdHits(_ast.NodeTransformer):
    def visit_Assert(self, node):
        n = get_ipython().execution_count - 1  # already counts the cell being run: In[n] is one less
        hit = _ast.parse(f"__import__('builtins').__kd_hits__.add(({n}, {node.lineno}))").body[0]
        return [node, _ast.fix_missing_locations(_ast.copy_location(hit, node))]
get_ipython().ast_transformers.append(_KdHits())"""
HITS_REPORT = "import builtins, json; print('KD_ASSERT_HITS=' + json.dumps(sorted(builtins.__kd_hits__)))"


def _hits(nb) -> list | None:
    """Drop the two hidden cells; the (In[n], line) of every assert that passed, None if the report is missing."""
    nb.cells.pop(0)
    for out in nb.cells.pop().get("outputs", []):
        if out.get("name") == "stdout" and "KD_ASSERT_HITS=" in out.get("text", ""):
            return json.loads(out["text"].split("KD_ASSERT_HITS=", 1)[1].splitlines()[0])
    return None


# No full-mode cell takes 15 minutes; a cell past 30 is a lost kernel message (seen once at load 8), not work.
CELL_TIMEOUT_S = 1800


def execute(path: Path, out_dir: Path) -> tuple:
    """Run one lesson in its folder, errors kept; (executed notebook, {cell: s}, total s, why it stopped or None)."""
    nb = nbformat.read(path, as_version=4)
    seconds, started, caught = {}, {}, []
    bar = tqdm(total=len(nb.cells), desc=path.stem, unit="cell", leave=False)
    nb.cells = [nbformat.v4.new_code_cell(HITS_SETUP), *nb.cells, nbformat.v4.new_code_cell(HITS_REPORT)]

    def on_start(cell, cell_index, **_):
        bar.update(int(cell.cell_type != "code" or not cell.source.strip()))  # a code cell counts when it is done

    def on_executed(cell_index, **_):
        seconds[cell_index - 1] = time.perf_counter() - started.pop(cell_index)  # -1: the hidden first cell
        bar.update(1)

    def on_notebook_start(**_):  # nbclient's handlers would stop the kernel and run on; this one stops the run
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)

    def on_signal(sig):
        caught.append(sig)
        asyncio.ensure_future(ensure_async(client.km.signal_kernel(signal.SIGKILL)))  # nbclient then cleans up

    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_start=on_start, on_cell_executed=on_executed, on_notebook_start=on_notebook_start,
        on_cell_execute=lambda cell_index, **_: started.update({cell_index: time.perf_counter()}))
    start, problem = time.perf_counter(), None
    signal.signal(signal.SIGTERM, _stop)  # until the kernel is up (nbclient resets it to the default afterwards)
    try:
        client.execute()
    except Exception as exc:  # noqa: BLE001 - a dead kernel: reported, no ledger written, the other lessons run
        problem = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    finally:
        signal.signal(signal.SIGTERM, _stop)
        bar.close()
        nb.metadata["kd_assert_hits"] = _hits(nb)
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / path.name)
    if caught:
        raise Stopped(caught[0])
    seconds.pop(len(nb.cells), None)  # the hidden report cell
    return nb, seconds, time.perf_counter() - start, problem


def git_facts() -> dict:
    """HEAD's sha and whether the tree differs from it (results/ aside: the ledger is what this run writes)."""
    try:
        head, status = (subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=60)
                        for a in (["rev-parse", "HEAD"], ["status", "--porcelain", "--", ".", ":(exclude)results"]))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": True}
    ok = head.returncode == 0
    return {"commit": head.stdout.strip() if ok else "unknown", "dirty": bool(status.stdout.strip()) or not ok}


def report_errors(stem: str, nb) -> list[str]:
    """One line per error output: cell index, the error, and the cell line it was raised at."""
    lines = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (error := error_of(cell)):
            top, source = error["top"] or 0, [""] + cell.source.splitlines()
            where = f" at line {top}: {source[top].strip()}" if 0 < top < len(source) else ""
            message = (error["evalue"].strip().splitlines() or [""])[0][:200]
            lines.append(f"{stem} cell {i}: {error['ename']}: {message}{where}")
    return lines


def run_lesson(path: Path, args, facts: dict) -> dict:
    """Execute one lesson and finalize its ledger (not when its kernel died); the summary row."""
    stem = path.stem
    (args.results / ".staging" / f"{stem}.json").unlink(missing_ok=True)  # a killed run's leftovers
    os.environ["KD_LESSON"] = stem
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    load = {"start": round(os.getloadavg()[0], 2)}  # on a shared machine wall times are upper bounds: say how shared
    nb, seconds, total, problem = execute(path, args.out)
    load["end"] = round(os.getloadavg()[0], 2)
    errors = report_errors(stem, nb)
    for line in errors:
        tqdm.write(line)
    row = {"lesson": stem, "wall": total, "status": "killed", "asserts": None}
    if problem:
        tqdm.write(f"{stem}: {problem}; its previous ledger file is kept")
        return row
    asserts = list_asserts(nb, args.mode == "quick")
    status = "failed" if errors else "passed"
    run = {**facts, "date": date, "mode": args.mode, "status": status, "asserts": asserts,
           "machine": {**facts["machine"], "load_1min": load},
           "wall_s": {"total": round(total, 1), "stages": stages(nb, seconds)}}
    try:
        results.finalize(stem, run, args.results)
    except results.LedgerError as err:  # a malformed staged number: the lesson's previous file stays
        tqdm.write(f"{stem}: no ledger written: {err}")
        status = "failed"
    return row | {"status": status, "asserts": asserts}


def summary(rows: list[dict], quick: bool) -> str:
    """The table printed at the end: lesson, wall time, status, asserts passed, full-only asserts passed."""
    def count(asserts, full_only):
        chosen = [a for a in asserts or [] if not full_only or a["full_only"]]
        if asserts is None or (quick and full_only and chosen):
            return "-" if asserts is None else f"{len(chosen)} not run"
        return f"{sum(a['passed'] for a in chosen)}/{len(chosen)}"

    width, clock = max([len(r["lesson"]) for r in rows] + [6]), lambda t: f"{round(t) // 60:>5}:{round(t) % 60:02d}"
    out = [f"{'lesson':<{width}}  {'wall':>8}  {'status':<7}  {'asserts':>8}  {'full-only':>10}"]
    out += [f"{r['lesson']:<{width}}  {clock(r['wall'])}  {r['status']:<7}  {count(r['asserts'], False):>8}  "
            f"{count(r['asserts'], True):>10}" for r in rows]
    return "\n".join(out + [f"{'total':<{width}}  {clock(sum(r['wall'] for r in rows))}"])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", nargs="*", default=[], help="lesson numbers or stems (default: all)")
    parser.add_argument("--mode", choices=["full", "quick"], default="full", help="quick: KD_QUICK=1, a smoke test")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help="where the lessons are")
    parser.add_argument("--results", type=Path, help="ledger folder (results/; quick mode: build/full/quick-results/)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "full", help="where executed copies go")
    args = parser.parse_args(argv)
    args.results = (args.results or ROOT / ("results" if args.mode == "full" else "build/full/quick-results")).resolve()
    args.out, args.notebooks = args.out.resolve(), args.notebooks.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        lessons = pick(args.notebooks, args.lessons)
    except ValueError as err:
        print(f"run_full: {err}", file=sys.stderr)
        return 2
    os.environ.update(KD_QUICK="1" if args.mode == "quick" else "0", KD_RESULTS_DIR=str(args.results))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    signal.signal(signal.SIGTERM, _stop)  # execute() keeps it in place around nbclient
    facts = {**git_facts(), "machine": results.machine()}
    print(f"make full: {len(lessons)} lessons in {args.mode} mode, ledger in {args.results}, commit "
          f"{facts['commit'][:12]}{' (dirty tree)' if facts['dirty'] else ''}; {facts['machine']}", flush=True)
    rows, stopped, path = [], None, None
    try:
        for path in tqdm(lessons, desc="lessons", unit="lesson"):
            rows.append(run_lesson(path, args, facts))
    except KeyboardInterrupt as exc:
        stopped = exc.args[0] if isinstance(exc, Stopped) and exc.args else signal.SIGINT
        during = f"during {path.stem}: its previous ledger file is kept" if path else "before the first lesson"
        print(f"\nstopped by signal {stopped} {during}", flush=True)
    if rows:
        print(summary(rows, args.mode == "quick"), flush=True)
    return 128 + int(stopped) if stopped is not None else int(any(r["status"] != "passed" for r in rows))


if __name__ == "__main__":
    sys.exit(main())
