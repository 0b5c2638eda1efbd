"""The ledger in the repository: a valid file per lesson, real commits, README and docs/results.md rendered from it.

The first tests check the committed ledger (results/*.json, written by `make full`); `test_every_lesson_has_a_ledger`
fails until `make full` has measured every lesson. The rest test scripts/render_results.py on synthetic ledgers.
"""
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kd_lessons import results

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 12 * 1024  # issue 23: the README is at most 12 KB
SPEC = importlib.util.spec_from_file_location("render_results", ROOT / "scripts" / "render_results.py")
render = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(render)


def _ledger_files():
    return sorted((ROOT / "results").glob("*.json"))


def _git(*args):
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


def test_every_ledger_file_validates_and_belongs_to_a_lesson():
    for path in _ledger_files():
        obj = results.load(path.stem, ROOT / "results")
        assert obj["lesson"] == path.stem, f"{path} says lesson {obj['lesson']!r}"
        assert (ROOT / "notebooks" / f"{path.stem}.ipynb").exists(), f"{path}: no notebooks/{path.stem}.ipynb"


def test_every_ledger_commit_is_in_git_history():
    files = _ledger_files()
    commits = {path.name: json.loads(path.read_text())["commit"] for path in files}
    for name, sha in commits.items():
        assert re.fullmatch(r"[0-9a-f]{40}", sha), f"results/{name}: commit {sha!r} is not a 40-hex sha"
    if shutil.which("git") is None or _git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        pytest.skip("not a git checkout: the commits cannot be looked up")
    if _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        pytest.skip("a shallow clone: older commits are not here")
    for name, sha in commits.items():
        assert _git("cat-file", "-e", f"{sha}^{{commit}}").returncode == 0, \
            f"results/{name}: commit {sha} is not in this repository's history; rerun `make full LESSONS={name[:2]}`"


def test_every_lesson_has_a_ledger():
    """Fails until `make full` has measured every lesson (the integrator runs it and commits results/)."""
    missing = [stem for stem in render.lessons(ROOT) if not results.ledger_path(stem, ROOT / "results").exists()]
    assert not missing, "no ledger for " + ", ".join(missing) + ": run `make full LESSONS=\"" + \
        " ".join(s[:2] for s in missing) + "\"` and commit results/"


def test_readme_and_docs_results_match_the_ledger():
    problems = render.differences(ROOT)
    assert not problems, "\n".join(problems)


def test_docs_results_quote_no_number_outside_the_ledger_blocks():
    stray = render.stray_numbers((ROOT / render.DOCS).read_text(encoding="utf-8"))
    assert not stray, "\n".join(stray)


def test_readme_is_at_most_12_kb():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size:,} bytes (limit {README_LIMIT:,}): move detail to docs/"


# ---------------------------------------------------------------- the renderer, on a synthetic course

README = """# course

<!-- ledger:summary -->
<!-- /ledger:summary -->

Total: <!-- ledger:total --><!-- /ledger:total -->.
Status: <!-- ledger:status --><!-- /ledger:status -->.
Headline: <!-- ledger:number 01_tour/kd_minus_scratch --><!-- /ledger:number -->.
"""
DOCS = """# results

## 00_start

<!-- ledger:lesson 00_start -->
<!-- /ledger:lesson -->
"""


def _ledger(lesson="01_tour", **changes):
    numbers = {
        "teacher_errors": {"value": 48.0, "unit": "errors", "n": 1, "low": None, "high": None, "values": [48.0],
                           "method": "single", "text": "the teacher", "seeds": None, "margin": None, "verdict": None},
        "kd_minus_scratch": {"value": -940.2, "unit": "errors", "n": 5, "low": -1012.5, "high": -867.9,
                             "values": [-900.0, -950.0, -940.0, -1000.0, -911.0], "method": "t",
                             "text": "KD makes fewer errors | than scratch", "seeds": [0, 1, 2, 3, 4],
                             "margin": 2.5, "verdict": "better"}}
    obj = {"schema": 1, "lesson": lesson, "commit": "abcdef0" + "1" * 33, "date": "2026-12-07T12:00:00Z",
           "machine": {"cpu": "Test CPU", "threads": 2, "dtype": "float32", "gpu": None}, "mode": "full",
           "seeds": [0, 1, 2, 3, 4], "wall_s": {"total": 754.4, "stages": [{"name": "teacher", "s": 40.2},
                                                                           {"name": "students", "s": 700.0}]},
           "status": "passed", "numbers": numbers,
           "asserts": [{"cell": 7, "line": 2, "source": "assert d.high < 0, d", "full_only": True, "passed": True},
                       {"cell": 3, "line": 1, "source": "assert x > 1", "full_only": False, "passed": True},
                       {"cell": 9, "line": 1, "source": "assert d.low > 0", "full_only": True, "passed": False}]}
    return {**obj, **changes}


@pytest.fixture
def course(tmp_path):
    """A tiny course: lessons 00_start (not measured) and 01_tour (measured), README and docs with blocks."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "docs").mkdir()
    for stem in ("00_start", "01_tour"):
        (tmp_path / "notebooks" / f"{stem}.ipynb").write_text("{}")
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "docs" / "results.md").write_text(DOCS)
    results.write_json(tmp_path / "results" / "01_tour.json", _ledger())
    return tmp_path


def _write(root):
    for rel, (_, want) in render.rendered(root).items():
        (root / rel).write_text(want, encoding="utf-8")


def test_status_names_the_failed_lessons(course):
    results.write_json(course / "results" / "00_start.json", _ledger("00_start", status="failed"))
    _write(course)
    assert ("<!-- ledger:status -->1 of 2 lessons passed, 2 of 4 full-only asserts passed; failed: 00"
            "<!-- /ledger:status -->") in (course / "README.md").read_text()


def test_render_fills_every_block_from_the_ledger(course):
    _write(course)
    readme, docs = (course / "README.md").read_text(), (course / "docs" / "results.md").read_text()
    assert "| `00_start` | — | — | not measured yet | — | — |" in readme
    assert "| `01_tour` | 12 min 34 s | — | passed | 1/2 | `abcdef0` |" in readme
    assert "Total: <!-- ledger:total -->12 min 34 s (1 of 2 lessons measured)<!-- /ledger:total -->." in readme
    assert ("Status: <!-- ledger:status -->1 of 2 lessons passed, 1 of 2 full-only asserts passed"
            "<!-- /ledger:status -->.") in readme
    assert ("Headline: <!-- ledger:number 01_tour/kd_minus_scratch -->-940 errors (95% interval -1,012..-868, n=5)"
            "<!-- /ledger:number -->.") in readme
    assert "not measured yet: run `make full LESSONS=00`" in docs
    assert "## 01_tour" in docs and "<!-- ledger:lesson 01_tour -->" in docs  # a new lesson gets its section
    assert "- run: commit `abcdef0`, 2026-12-07T12:00:00Z, mode full, status **passed**" in docs
    assert "- wall time: 12 min 34 s (teacher 40.2 s, students 11 min 40 s)" in docs
    assert ("| `kd_minus_scratch` | KD makes fewer errors \\| than scratch | -940 | -1,012..-868 | 5 | errors | t "
            "| better (margin 2.5) |") in docs
    assert "| `teacher_errors` | the teacher | 48 | — | 1 | errors | single | — |" in docs
    assert docs.index("`kd_minus_scratch`") < docs.index("`teacher_errors`")  # sorted by name
    assert "Asserts: 3, of which 2 full-only (1 passed)." in docs
    assert "| 9 | 1 | `assert d.low > 0` | yes | **failed** |" in docs
    assert docs.index("| 3 | 1 |") < docs.index("| 7 | 2 |") < docs.index("| 9 | 1 |")
    assert render.check(course) == []
    assert {rel: now == want for rel, (now, want) in render.rendered(course).items()} == \
        {"README.md": True, "docs/results.md": True}  # rendering is a fixed point: deterministic


def test_check_lists_each_block_that_differs(course, monkeypatch, capsys):
    _write(course)
    ledger = _ledger(wall_s={"total": 30.0, "stages": []})
    results.write_json(course / "results" / "01_tour.json", ledger)
    problems = render.check(course)
    assert any("README.md: block `ledger:summary` differs" in p for p in problems)
    assert any("README.md: block `ledger:total` differs" in p for p in problems)
    assert any("docs/results.md: block `ledger:lesson 01_tour` differs" in p for p in problems)
    assert not any("ledger:number" in p or "00_start" in p for p in problems)
    monkeypatch.setattr(render, "ROOT", course)
    assert render.main(["--check"]) == 1 and "render_results.py --write" in capsys.readouterr().out
    assert render.main(["--write"]) == 0 and render.main(["--check"]) == 0


def test_a_malformed_ledger_names_the_file_and_the_lesson_to_rerun(course):
    (course / "results" / "01_tour.json").write_text("{broken")
    with pytest.raises(results.LedgerError, match=r"01_tour.json is not valid JSON.*make full LESSONS=01"):
        render.check(course)
    bad = _ledger()
    del bad["numbers"]["kd_minus_scratch"]["unit"]
    results.write_json(course / "results" / "01_tour.json", bad)
    with pytest.raises(results.LedgerError, match=r"01_tour.json: number 'kd_minus_scratch'.*LESSONS=01"):
        render.rendered(course)
    results.write_json(course / "results" / "01_tour.json", _ledger(lesson="00_start"))
    with pytest.raises(results.LedgerError, match=r"01_tour.json: says lesson '00_start'.*LESSONS=01"):
        render.rendered(course)


def test_a_quoted_number_the_ledger_lacks_is_an_error_naming_the_marker(course):
    (course / "README.md").write_text(README.replace("kd_minus_scratch", "kd_gain"))
    with pytest.raises(results.LedgerError, match=r"README.md quotes 01_tour/kd_gain.*LESSONS=01"):
        render.rendered(course)
    (course / "README.md").write_text(README.replace("01_tour/", "07_nowhere/"))
    with pytest.raises(ValueError, match="names no lesson"):
        render.rendered(course)


@pytest.mark.parametrize("x,want", [(0.44321, "0.443"), (2.4567, "2.46"), (96.126, "96.1"), (-0.00012345, "-0.000123"),
                                    (1114.3, "1,114"), (-940.2, "-940"), (100.4, "100"), (-0.0001, "-0.0001"),
                                    (0.0, "0"), (None, "n/a"), (float("inf"), "n/a")])
def test_numbers_have_a_fixed_format(x, want):
    assert render.num(x) == want


@pytest.mark.parametrize("s,want", [(8.314, "8.31 s"), (59.4, "59.4 s"), (59.6, "1 min 00 s"), (789, "13 min 09 s"),
                                    (3599.4, "59 min 59 s"), (3600, "1 h 00 min"), (53985, "15 h 00 min")])
def test_durations_have_a_fixed_format(s, want):
    assert render.duration(s) == want


def test_stray_numbers_are_found_outside_the_blocks_only():
    text = ("Intro: CIFAR-10, int8 and 7s are names; the 95% interval; `make full LESSONS=12`.\n"
            "## 04_distill_mnist\n<!-- ledger:lesson 04_x -->\n| 931 | 2.45 |\n<!-- /ledger:lesson -->\n"
            "Distilled beats scratch by 2.45 points.\nA drop of -0.3 bits.\n")
    assert render.stray_numbers(text) == [
        "docs/results.md:6: a number outside the ledger blocks: Distilled beats scratch by 2.45 points.",
        "docs/results.md:7: a number outside the ledger blocks: A drop of -0.3 bits."]
