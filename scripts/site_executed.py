"""Executed lessons, kept: the notebooks nbval runs in a pytest session, saved with their outputs, so the rendered
site (scripts/build_site.py --executed DIR) shows them instead of running every lesson a second time.

`make test` runs nbval over every notebooks/NN_*.ipynb and, in the same session, tests/test_site_browser.py builds
the site; executing the 15 lessons twice cost ~4 minutes. Capture (a pytest plugin, registered by tests/conftest.py)
records each nbval cell's outputs (IPyNbCell.test_outputs) and, once a notebook's last code cell has run, writes
DIR/NN_x.ipynb with the source's content hash and the mode (quick/full) in its metadata. load() hands a saved
notebook back only when both still match, and only when every code cell ran, so a stale, partial or other-mode run
is executed again rather than shown.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import nbformat

PLUGIN = "kd_site_capture"  # the name tests/test_site_browser.py asks the plugin manager for
META = "kd_executed"        # notebook metadata key: {"source_sha256", "mode", "seconds", "by"}
SITE_TEST = "test_site_browser.py"
LESSONS_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def content_sha256(nb) -> str:
    """Hash of what runs and what is shown (each cell's type and source), not of metadata or stored outputs."""
    cells = [[cell.cell_type, cell.source] for cell in nb.cells]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode("utf-8")).hexdigest()


def mode_now() -> str:
    """'quick' or 'full', as the kernels this process starts will see it (kd_lessons.config reads KD_QUICK)."""
    from kd_lessons import config

    return config.mode()


def load(folder: Path, source: Path, mode: str):
    """(notebook, why): the saved execution of `source` if it is complete and matches its content and mode, else
    (None, why not)."""
    saved = Path(folder) / source.name
    if not saved.is_file():
        return None, "not run by nbval in this session"
    nb = nbformat.read(saved, as_version=4)
    meta = nb.metadata.get(META, {})
    if meta.get("mode") != mode:
        return None, f"saved in {meta.get('mode')} mode, not {mode}"
    if meta.get("source_sha256") != content_sha256(nbformat.read(source, as_version=4)):
        return None, "the notebook changed since it was run"
    return nb, f"rendered from the run by {meta.get('by', 'nbval')}"


def save(folder: Path, source_nb, name: str, outputs: list, seconds: float, mode: str) -> Path:
    """Write source_nb with outputs[i] as code cell i's outputs (atomically: a reader never sees half a file)."""
    nb = copy.deepcopy(source_nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if len(code) != len(outputs):
        raise ValueError(f"{name}: {len(outputs)} cell outputs for {len(code)} code cells; pass one list per cell")
    for count, (cell, outs) in enumerate(zip(code, outputs), start=1):
        quiet = _ends_in_semicolon(cell.source)
        cell.outputs = [nbformat.from_dict(dict(out)) for out in outs
                        if not (quiet and out.get("output_type") == "execute_result")]
        cell.execution_count = count
        for out in cell.outputs:
            if out.output_type == "execute_result":
                out.execution_count = count
    nb.metadata[META] = {"source_sha256": content_sha256(source_nb), "mode": mode, "seconds": round(seconds, 1),
                         "by": "nbval"}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    nbformat.write(nb, tmp)
    os.replace(tmp, folder / name)
    return folder / name


def _ends_in_semicolon(source: str) -> bool:
    """IPython's own test for a trailing `;`: nbval runs cells with store_history=False, so the kernel cannot
    see the `;` and shows the value that Jupyter, nbclient and the site's own runs hide (e.g. `interact(...);`)."""
    from IPython.core.displayhook import DisplayHook

    try:
        return DisplayHook.semicolon_at_end_of_expression(source)
    except Exception:  # noqa: BLE001 - a cell IPython cannot tokenize (e.g. a magic): keep its outputs
        return False


def _is_nbval_cell(item) -> bool:
    """nbval's IPyNbCell of a lesson the site renders (not notebooks/solutions/' copy of the same name); duck-typed,
    so this module imports without nbval."""
    return (type(item).__name__ == "IPyNbCell" and hasattr(item, "test_outputs") and hasattr(item.parent, "nb")
            and item.path.resolve().parent == LESSONS_DIR and item.path.name[:2].isdigit())


class Capture:
    """The pytest plugin: saves each lesson nbval runs, and runs the site test after the notebooks."""

    def __init__(self):
        self.folder: Path | None = None  # made at the first save, removed when the session ends
        self.active = False
        self.saved: dict[str, str] = {}  # notebook name -> mode it was saved in
        self._runs: dict[str, dict] = {}

    def pytest_collection_modifyitems(self, items):
        """Site test last (it renders what nbval ran before it); capture only when the site test is collected."""
        site = [item for item in items if item.path.name == SITE_TEST]
        self.active = bool(site) and any(_is_nbval_cell(item) for item in items)
        if site:
            items[:] = [item for item in items if item.path.name != SITE_TEST] + site

    def pytest_runtest_makereport(self, item, call):
        """Collect a cell's outputs after it ran; save the notebook after its last code cell's teardown."""
        if not (self.active and _is_nbval_cell(item)):
            return None
        name = item.path.name
        run = self._runs.setdefault(name, {"outputs": {}, "seconds": 0.0, "mode": mode_now()})
        if call.when == "call":
            run["seconds"] += call.duration
            if item.test_outputs is not None:  # None: skipped or the kernel was dead (the notebook is not kept)
                run["outputs"][item.cell_num] = list(item.test_outputs)
        n_code = sum(1 for cell in item.parent.nb.cells if cell.cell_type == "code")
        if call.when == "teardown" and item.cell_num == n_code - 1:
            outputs = [run["outputs"].get(i) for i in range(n_code)]
            if all(outs is not None for outs in outputs):
                self.folder = self.folder or Path(tempfile.mkdtemp(prefix="kd-executed-"))
                save(self.folder, item.parent.nb, name, outputs, run["seconds"], run["mode"])
                self.saved[name] = run["mode"]
            self._runs.pop(name)
        return None

    def pytest_unconfigure(self):
        """The saved notebooks live as long as the session."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
