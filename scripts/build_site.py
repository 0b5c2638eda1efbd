"""`make site`: the course as a static HTML site, every lesson executed, with its figures and the app's screenshot.

Executes each notebooks/NN_*.ipynb (in course order, picked up by glob) with nbclient in the chosen mode,
then renders them with Sphinx + myst-nb (furo theme) next to docs/references.md, docs/results.md (when there)
and a generated landing page. Mode `auto` is full on a machine with a CUDA GPU and quick (KD_QUICK=1) elsewhere;
every page's banner says which. `--executed DIR` renders the lessons nbval already ran in this pytest session
(scripts/site_executed.py; their content hash and mode must match) and executes only the rest. Equations are
typeset by a local MathJax (scripts/site_assets.py: pinned, cached, copied into _static), so the site works
offline. Writes <out>/html/index.html and <out>/build.json (timings, errors, which lessons were reused).
Exits 1 if a notebook raised (its page still shows the error) or MathJax cannot be had, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from tqdm.auto import tqdm

from kd_lessons.course import NOTEBOOK_GLOB, localize_links

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the site_*.py helpers beside this script
import site_assets  # noqa: E402
import site_executed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "artifacts" / "app_screenshot.png"


def choose_mode(asked: str) -> tuple[str, str]:
    """(mode, why): `auto` runs the full course only where a CUDA GPU makes it take minutes, not hours."""
    if asked != "auto":
        return asked, "asked for"
    import torch

    if torch.cuda.is_available():
        return "full", f"auto: CUDA GPU {torch.cuda.get_device_name(0)}"
    return "quick", "auto: no CUDA GPU, so the full course would train for 35+ min (SITE_MODE=full forces it)"


def title_of(nb) -> str:
    """The notebook's first markdown heading."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "untitled"


def execute(path: Path, timeout: int, src: Path):
    """(notebook, seconds, problems): run one lesson top to bottom in src (errors are kept in the page)."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    problem = []
    try:  # widget state is stored (nbclient's output widgets need it); conf.py loads no widget JavaScript
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(src)}}).execute()
    except Exception as exc:  # noqa: BLE001 - a timeout or a dead kernel: reported, the other lessons still run
        problem = [f"execution stopped: {type(exc).__name__}: {exc}"]
    return nb, time.perf_counter() - start, problem


def lesson(path: Path, src: Path, args, mode: str) -> dict:
    """Execute one lesson (or take nbval's run of it from --executed), count its errors and figures, write it."""
    nb, why = site_executed.load(args.executed, path, mode) if args.executed else (None, "no --executed")
    if nb is not None:
        seconds, problem, ran = nb.metadata[site_executed.META]["seconds"], [], "reused"
    else:
        (nb, seconds, problem), ran = execute(path, args.timeout, src), "executed"
    errors = problem + [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(nb.cells)
                        if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if any(k.startswith("image/") for k in o.get("data", {})))
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = localize_links(cell.source)
    nbformat.write(nb, src / path.name)
    return {"notebook": path.name, "title": title_of(nb), "seconds": round(seconds, 1), "errors": errors,
            "figures": figures, "ran": ran, "why": why}


def take_screenshot(dest: Path) -> str:
    """Use the browser test's screenshot of the app, else take one (scripts/app_screenshot.py)."""
    if not SCREENSHOT.is_file():
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "app_screenshot.py"), str(SCREENSHOT)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            return f"no screenshot: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    shutil.copyfile(SCREENSHOT, dest)
    return ""


def landing_page(rows: list[dict], mode: str, why: str, machine: str, shot_problem: str, results: bool) -> str:
    """index.md: what the course is, the mode, the app's screenshot, the lessons in order, the reference pages."""
    quick_note = ("Quick mode (`KD_QUICK=1`) trains with smoke-test sizes, so the numbers on these pages are not the "
                  "course's results (the Measured results page shows the full-mode ledger); the asserts still ran. "
                  if mode == "quick" else "Full mode: the course's own settings. ")
    shot = ("```{figure} app_screenshot.png\n:alt: the classroom app\n:width: 100%\n\nThe classroom app "
            "(`make app`, or `python -m kd_lessons app` after `pip install`): soft labels, the T x alpha heatmap, "
            "loss anatomy, live training.\n```\n" if not shot_problem else f"*(The app's screenshot is missing: "
            f"{shot_problem}; run `make test` or `python scripts/app_screenshot.py`.)*\n")
    table = "\n".join(f"| [{r['notebook'][:2]}]({r['notebook']}) | {r['title']} | {r['seconds']:.0f} s "
                      f"| {r['figures']} |" for r in rows)
    names = "\n".join(r["notebook"].removesuffix(".ipynb") for r in rows)
    reference = ("Measured results <results>\n" if results else "") + "references"
    return f"""# Knowledge distillation, hands-on

A course on knowledge distillation in Python and PyTorch: every lesson below was executed top to bottom for this
site, and every number on it was computed by the cell above it.

**Rendered in {mode} mode** ({why}) on {machine}, {dt.date.today().isoformat()}. {quick_note}

{shot}
| lesson | title | run time | figures |
| --- | --- | --- | --- |
{table}

```{{toctree}}
:caption: Lessons
:maxdepth: 1

{names}
```

```{{toctree}}
:caption: Reference
:maxdepth: 1

{reference}
```
"""


def write_sources(src: Path, rows: list[dict], mode: str, why: str, machine: str) -> str:
    """Everything Sphinx reads besides the lessons: conf.py, site.json, index.md, references, results, MathJax."""
    refs = (ROOT / "docs" / "references.md").read_text(encoding="utf-8")  # its HTML anchors as MyST targets, so
    refs = re.sub(r'^<a id="([^"]+)"></a>[ \t]*$', r"(\1)=", refs, flags=re.M)  # `references.md#source-000` resolves
    (src / "references.md").write_text(refs, encoding="utf-8")
    results = ROOT / "docs" / "results.md"  # rendered from the ledger by scripts/render_results.py, when there
    if results.is_file():
        shutil.copyfile(results, src / "results.md")
    shutil.copyfile(ROOT / "docs" / "site" / "conf.py", src / "conf.py")
    shot_problem = take_screenshot(src / "app_screenshot.png")
    banner = (f"Executed in <b>{mode} mode</b>" + (" (KD_QUICK=1: smoke-test sizes, not the course's results)"
                                                   if mode == "quick" else "") + f" on {dt.date.today().isoformat()}")
    (src / "site.json").write_text(json.dumps({"mode": mode, "banner": banner,
                                               "mathjax_path": site_assets.MATHJAX_PATH}), encoding="utf-8")
    (src / "index.md").write_text(landing_page(rows, mode, why, machine, shot_problem, results.is_file()),
                                  encoding="utf-8")
    return shot_problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["auto", "quick", "full"], default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="output folder (replaced)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run")
    parser.add_argument("--executed", type=Path, default=None,
                        help="folder of lessons nbval ran (scripts/site_executed.py): render those, execute the rest")
    args = parser.parse_args(argv)
    mode, why = choose_mode(args.mode)
    if mode == "quick":
        os.environ["KD_QUICK"] = "1"  # for the kernels this process starts (kd_lessons.config reads it)
    else:
        os.environ.pop("KD_QUICK", None)
    from kd_lessons import config  # after KD_QUICK is set: describe() reports the kernels' mode

    machine = config.describe()
    out = args.out.resolve()
    src = out / "src"
    shutil.rmtree(out, ignore_errors=True)
    src.mkdir(parents=True)
    try:  # first: without MathJax there is no offline site, so stop before executing anything
        site_assets.install_mathjax(src / "_static")
    except site_assets.AssetError as exc:
        print(f"site: {exc}", file=sys.stderr)
        return 1
    lessons = sorted((ROOT / "notebooks").glob(NOTEBOOK_GLOB))
    print(f"site: {len(lessons)} lessons in {mode} mode ({why}); {machine}", flush=True)
    start = time.perf_counter()
    rows = []
    for path in tqdm(lessons, desc="executing lessons", unit="notebook"):
        rows.append(lesson(path, src, args, mode))
        print(f"  {path.name}: {rows[-1]['ran']}, {rows[-1]['seconds']:.0f} s, {rows[-1]['figures']} figures, "
              f"{len(rows[-1]['errors'])} errors", flush=True)
    executed = time.perf_counter() - start
    shot_problem = write_sources(src, rows, mode, why, machine)
    sphinx = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", str(src), str(out / "html")],
                            capture_output=True, text=True)
    total = time.perf_counter() - start
    report = {"mode": mode, "why": why, "machine": machine, "lessons": rows, "execute_seconds": round(executed, 1),
              "total_seconds": round(total, 1), "screenshot": shot_problem or "ok",
              "sphinx_warnings": [w for w in sphinx.stderr.splitlines() if "WARNING" in w]}
    (out / "build.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    if sphinx.returncode != 0:
        print(sphinx.stdout[-3000:], sphinx.stderr[-3000:], sep="\n", file=sys.stderr)
        print(f"site: sphinx failed (exit {sphinx.returncode})", file=sys.stderr)
        return 1
    failed = [r for r in rows if r["errors"]]
    reused = sum(r["ran"] == "reused" for r in rows)
    print(f"site: {out / 'html' / 'index.html'} ({mode} mode, {len(rows) - reused} lessons executed and {reused} "
          f"reused in {executed:.0f} s, built in {total:.0f} s; {len(report['sphinx_warnings'])} sphinx warnings "
          f"in {out / 'build.json'})")
    for r in failed:
        print(f"site: {r['notebook']} raised: {'; '.join(r['errors'])}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
