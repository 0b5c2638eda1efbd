"""Install anywhere: the built wheel, in a fresh venv outside the checkout, copies the lessons and runs notebook 00.

Slow (about a minute or two). The venv sees the already-installed dependencies (torch, jupyter, ...) through a
folder of links to this venv's site-packages that leaves out kd_lessons itself, so nothing is downloaded
(pip runs with PIP_NO_INDEX=1) and the kd_lessons that runs is the wheel's, which the test asserts.
"""
import os
import site
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kd_lessons import course

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env, timeout=600, check=True):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _dependencies_without_kd_lessons(dest: Path) -> Path:
    """Links to every entry of this venv's site-packages except kd_lessons and its editable-install hooks."""
    dest.mkdir(parents=True)
    ours = ("kd_lessons", "__editable__", "_kd_lessons", "kd-lessons")
    for sp in site.getsitepackages():
        for entry in Path(sp).iterdir():
            if entry.name.lower().startswith(ours) or entry.suffix == ".pth" or (dest / entry.name).exists():
                continue
            (dest / entry.name).symlink_to(entry)
    return dest


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv outside the checkout with the wheel installed by the lessons' own setup snippet."""
    work = tmp_path_factory.mktemp("wheel")
    assert ROOT not in work.parents
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", KD_QUICK="1", PYTHONNOUSERSITE="1")
    start = time.perf_counter()
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", work / "dist", ROOT], work, env)
    wheels = list((work / "dist").glob("*.whl"))
    assert [w.name for w in wheels] == [course.INSTALL_SOURCE]  # the name the lessons' snippet installs
    _run([sys.executable, "-m", "venv", "--without-pip", work / "venv"], work, env)
    python = work / "venv" / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   work, env).stdout.strip()
    # named site-packages: Streamlit turns on its development mode (no --server.port) anywhere else
    deps = _dependencies_without_kd_lessons(work / "deps" / "site-packages")
    (Path(purelib) / "kd_deps.pth").write_text(f"{deps}\n")
    missing = _run([python, "-c", "import kd_lessons"], work, env, check=False)
    assert missing.returncode != 0 and "No module named 'kd_lessons'" in missing.stderr
    yield {"python": python, "work": work, "env": env, "dist": work / "dist", "venv": work / "venv", "start": start}


def test_snippet_without_the_flag_says_how_to_install(venv):
    done = _run([venv["python"], "-c", course.SETUP_SNIPPET], venv["dist"], venv["env"], check=False)
    assert done.returncode != 0 and "set INSTALL = True above and rerun" in done.stderr


def test_the_wheel_installs_copies_the_lessons_and_runs_notebook_00(venv):
    python, env, work = venv["python"], venv["env"], venv["work"]
    snippet = course.setup_source(install=True)
    _run([python, "-c", snippet], venv["dist"], env)  # the lessons' first cell installs the wheel beside it
    where = _run([python, "-c", "import kd_lessons, kd_lessons.course as c; print(kd_lessons.__file__); "
                  "print(c.course_root())"], work, env).stdout.split()
    assert Path(where[0]).is_relative_to(venv["venv"]), f"imported {where[0]}, not the wheel's copy"
    assert Path(where[1]) == Path(where[0]).parent / "_course"
    dest = work / "my-lessons"
    out = _run([python, "-m", "kd_lessons", "notebooks", dest], work, env).stdout
    assert "00_start_here.ipynb" in out and (dest / "00_start_here.ipynb").is_file()
    assert {p.name for p in dest.glob("[0-9][0-9]_*.ipynb")} == {p.name for p in course.lessons()}
    refused = _run([python, "-m", "kd_lessons", "notebooks", dest], work, env, check=False)
    assert refused.returncode == 0 and "unchanged" in refused.stdout  # nothing edited: nothing to refuse
    nbval = _run([python, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with",
                  dest / "sanitize.cfg", dest / "00_start_here.ipynb", "-p", "no:cacheprovider", "-q"],
                 dest, env, timeout=900)
    assert " passed" in nbval.stdout and "failed" not in nbval.stdout
    print(f"wheel built, installed and notebook 00 run in {time.perf_counter() - venv['start']:.0f} s")


def test_the_installed_app_starts_and_renders(venv):
    python, env, work = venv["python"], venv["env"], venv["work"]
    check = ("from streamlit.testing.v1 import AppTest\nfrom kd_lessons import course\n"
             "at = AppTest.from_file(str(course.app_script()), default_timeout=300).run()\n"
             "assert not at.exception, [e.value for e in at.exception]\n"
             "assert not at.error, [e.value for e in at.error]\n"
             "print(course.app_script(), at.title[0].value)")
    out = _run([python, "-c", check], work, env).stdout
    assert str(venv["venv"]) in out and "Knowledge distillation, live" in out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(python), "-m", "kd_lessons", "app", "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false"], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, health = time.monotonic() + 90, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                health = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5).read()
                break
            except OSError:
                time.sleep(0.5)
        assert health == b"ok", f"`python -m kd_lessons app` did not serve (exit {server.poll()})"
    finally:
        server.terminate()
        try:
            out, _ = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate()
    assert str(venv["venv"]) in out  # the command it printed runs the installed script
