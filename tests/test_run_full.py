"""scripts/run_full.py (`make full`): kernels' numbers reach the ledger, asserts are judged, a killed run keeps it."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell as code
from nbformat.v4 import new_markdown_cell as md
from nbformat.v4 import new_notebook, new_output

from kd_lessons import results

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run_full.py"
spec = importlib.util.spec_from_file_location("run_full", SCRIPT)
run_full = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_full)

ALPHA = [md("# Alpha"),
         code("from kd_lessons import config, results\n"
              "entry = results.record('alpha_value', [1.0, 2.0, 3.0], 'points', text='about two', seeds=[0, 1, 2])"),
         md("## Claims\nThe value is about two."),
         code("assert entry['n'] == 3\nif not config.is_quick():\n    assert entry['value'] > 5, 'full only'\n"
              "assert True"),
         code("x = 1\nif not config.is_quick():\n    undefined_name\nassert x == 1"),
         md("## Tail"),
         code("with results.stage('tail'):\n    results.record('after_error', 7, 's')")]
BETA = [md("# Beta\n## Only"), code("assert 1 + 1 == 2\nif 1 + 1 == 3:  # a branch that never runs (no CIFAR-10)\n"
                                    "    assert 2 + 2 == 4")]
GAMMA = [code("import os\nos._exit(3)  # the kernel dies"), code("print('never')")]
DELTA = [code("import os, pathlib, time\npathlib.Path(os.environ['KD_TEST_MARK']).write_text(str(os.getpid()))\n"
              "time.sleep(120)")]
OLD_RUN = {"commit": "0" * 40, "date": "2026-12-01T00:00:00Z", "machine": {"cpu": "x", "threads": 2}, "mode": "full",
           "wall_s": {"total": 1.0}, "asserts": [], "status": "passed"}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def lessons(folder: Path, **cells) -> Path:
    """Write tiny lessons `NN_name.ipynb` into folder; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, cell_list in cells.items():
        nbformat.write(new_notebook(cells=cell_list), folder / f"{stem}.ipynb")
    return folder


def runner(tmp_path, *args) -> list:
    env = {k: v for k, v in os.environ.items() if k not in ("KD_RESULTS_DIR", "KD_LESSON", "KD_QUICK")}
    return [sys.executable, str(SCRIPT), "--notebooks", str(tmp_path / "nb"), "--results", str(tmp_path / "res"),
            "--out", str(tmp_path / "out"), *args], env


def run(tmp_path, *args) -> subprocess.CompletedProcess:
    cmd, env = runner(tmp_path, *args)
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)


def old_ledger(tmp_path, stem: str) -> bytes:
    """A previous run's ledger file for stem, as bytes."""
    return results.finalize(stem, OLD_RUN, tmp_path / "res").read_bytes()


@pytest.mark.slow
def test_full_mode_judges_asserts_records_numbers_and_keeps_a_killed_lessons_ledger(tmp_path):
    nb = lessons(tmp_path / "nb", **{"01_alpha": ALPHA, "02_beta": BETA, "03_gamma": GAMMA})  # 02: not asked for
    source = (nb / "01_alpha.ipynb").read_bytes()
    before = old_ledger(tmp_path, "03_gamma")
    done = run(tmp_path, "--lessons", "1", "03_gamma")
    assert done.returncode == 1, done.stdout + done.stderr
    alpha = results.load("01_alpha", tmp_path / "res")
    assert alpha["status"] == "failed" and alpha["mode"] == "full" and len(alpha["commit"]) == 40
    assert alpha["numbers"]["alpha_value"]["values"] == [1.0, 2.0, 3.0] and alpha["seeds"] == [0, 1, 2]
    assert alpha["numbers"]["after_error"]["value"] == 7.0  # cells after an error still ran
    flags = [(a["cell"], a["line"], a["full_only"], a["passed"], a.get("note")) for a in alpha["asserts"]]
    assert flags == [(3, 1, False, True, None), (3, 3, True, False, "failed: AssertionError"),
                     (3, 4, False, False, "not reached"), (4, 4, False, False, "not reached")]
    assert [s["name"] for s in alpha["wall_s"]["stages"]] == ["start", "Claims", "Tail", "tail"]
    assert alpha["machine"]["dtype"] in ("float32", "bf16 autocast") and alpha["machine"]["cpu"]
    assert not (tmp_path / "res" / "02_beta.json").exists()
    assert (tmp_path / "res" / "03_gamma.json").read_bytes() == before  # its kernel died: the old ledger stays
    assert "01_alpha cell 3: AssertionError: full only at line 3" in done.stdout
    assert "01_alpha cell 4: NameError" in done.stdout and "killed" in done.stdout
    assert (nb / "01_alpha.ipynb").read_bytes() == source and (tmp_path / "out" / "01_alpha.ipynb").exists()


@pytest.mark.slow
def test_quick_mode_marks_full_only_asserts_not_run_and_sigterm_keeps_the_previous_ledger(tmp_path):
    lessons(tmp_path / "nb", **{"01_alpha": ALPHA, "04_delta": DELTA})
    (tmp_path / "res" / ".staging").mkdir(parents=True)
    (tmp_path / "res" / ".staging" / "01_alpha.json").write_text('{"numbers": {"stale": {}}, "stages": []}')
    before = old_ledger(tmp_path, "04_delta")
    mark = tmp_path / "kernel.pid"
    cmd, env = runner(tmp_path, "--mode", "quick")
    proc = subprocess.Popen(cmd, env={**env, "KD_TEST_MARK": str(mark)}, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:  # 01 runs to the end, then 04's cell sleeps until the runner is sent SIGTERM
        deadline = time.monotonic() + 180
        while not (mark.exists() and mark.read_text()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        kernel = int(mark.read_text())
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out
    alpha = results.load("01_alpha", tmp_path / "res")
    assert alpha["status"] == "passed" and alpha["mode"] == "quick"
    assert set(alpha["numbers"]) == {"alpha_value", "after_error"}  # the stale staging file was cleared first
    full_only = [a for a in alpha["asserts"] if a["full_only"]]
    assert [(a["passed"], a["note"]) for a in full_only] == [(False, "not run (quick mode)")]
    assert all(a["passed"] for a in alpha["asserts"] if not a["full_only"])
    assert "during 04_delta: its previous ledger file is kept" in out
    assert (tmp_path / "res" / "04_delta.json").read_bytes() == before
    assert not [p for p in (tmp_path / "res").iterdir() if p.name.endswith(".tmp")]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{kernel}").exists():
        time.sleep(0.2)
    assert not Path(f"/proc/{kernel}").exists(), "the kernel outlived the runner"


def test_a_passing_lesson_exits_0_and_an_assert_never_reached_is_not_passed(tmp_path, monkeypatch, capsys):
    for name in ("KD_QUICK", "KD_RESULTS_DIR", "KD_LESSON"):  # main() sets them for its kernels; restored after
        monkeypatch.setenv(name, "")
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # pytest's own SIGTERM handling stays
    nb = lessons(tmp_path / "nb", **{"02_beta": BETA})
    argv = ["--mode", "quick", "--notebooks", str(nb), "--results", str(tmp_path / "res"), "--out", str(tmp_path)]
    assert run_full.main(argv) == 0, capsys.readouterr()
    beta = results.load("02_beta", tmp_path / "res")
    assert beta["status"] == "passed" and [a["passed"] for a in beta["asserts"]] == [True, False]
    assert beta["asserts"][1]["note"] == "not run (its branch was skipped)"  # the kernel saw it never pass
    assert "02_beta" in capsys.readouterr().out


def test_bad_lessons_exit_2_naming_the_lessons_that_exist(tmp_path, capsys):
    nb = lessons(tmp_path / "nb", **{"01_alpha": ALPHA, "02_beta": BETA})
    assert run_full.main(["--notebooks", str(nb), "--lessons", "7", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--lessons 7" in err and "01_alpha, 02_beta" in err
    assert run_full.main(["--notebooks", str(nb), "--lessons", "alpha", "--results", str(tmp_path / "r")]) == 2
    assert [p.name for p in run_full.pick(nb, ["2,1", "01_alpha.ipynb"])] == ["01_alpha.ipynb", "02_beta.ipynb"]
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit) as exc:
        run_full.main(["--mode", "fast"])
    assert exc.value.code == 2


def executed(cells_and_errors) -> nbformat.NotebookNode:
    """A notebook as nbclient leaves it: code cells with execution counts and, where given, an error output."""
    nb = new_notebook()
    for i, (source, line) in enumerate(cells_and_errors, start=1):
        cell = code(source, execution_count=i)
        if line is not None:
            trace = [f"\x1b[36mCell\x1b[39m \x1b[32mIn[{i}]\x1b[39m\x1b[32m, line {n}\x1b[39m" for n in line]
            cell.outputs = [new_output("error", ename="AssertionError", evalue="", traceback=trace)]
        nb.cells.append(cell)
    return nb


def test_asserts_are_judged_by_the_lines_of_the_traceback_and_mode_tests_found():
    nb = executed([
        ("FULL = not config.is_quick()\nif FULL and x:\n    assert a\nif config.is_quick():\n    assert b\n"
         "else:\n    assert c\nif not FULL:\n    assert d", None),
        ("def f():\n    assert e\nassert g\nf()\nassert h", [4, 2]),  # f's assert failed when line 4 called it
        ("%matplotlib inline\nassert i", [2]),
    ])
    got = [(a["cell"], a["line"], a["full_only"], a["passed"], a.get("note")) for a in run_full.list_asserts(nb, False)]
    assert got == [(0, 3, True, True, None), (0, 5, False, True, None), (0, 7, True, True, None),
                   (0, 9, False, True, None), (1, 2, False, False, "failed: AssertionError"), (1, 3, False, True, None),
                   (1, 5, False, False, "not reached"), (2, 2, False, False, "failed: AssertionError")]


def test_stages_sum_cell_times_under_the_headings():
    nb = new_notebook(cells=[code("a"), md("# T\n## One\n```\n## not a heading\n```"), code("b"), code("c"),
                             md("no heading"), code("d"), md("## Two"), md("## Three"), code("e")])
    got = run_full.stages(nb, {0: 1.0, 2: 2.0, 3: 0.5, 5: 0.25, 8: 4.0})
    assert got == [{"name": "start", "s": 1.0}, {"name": "One", "s": 2.75}, {"name": "Three", "s": 4.0}]
    assert json.dumps(run_full.git_facts())  # commit and dirty flag, JSON-ready
