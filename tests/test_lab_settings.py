"""JupyterLab, as `make lab` starts it, does not cover the first lesson with the 'fetch Jupyter news?' popup."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEY = "@jupyterlab/apputils-extension:notification"


def test_the_projects_lab_overrides_say_never_fetch_news():
    settings = json.loads((ROOT / "jupyter" / "overrides.json").read_text())[KEY]
    assert settings["fetchNews"] == "false" and settings["checkForUpdates"] is False
    makefile = (ROOT / "Makefile").read_text()
    assert "lab: setup data $(LAB_OVERRIDES)" in makefile and "cp jupyter/overrides.json $@" in makefile


@pytest.mark.slow
def test_a_lab_server_with_the_overrides_serves_fetch_news_never(tmp_path):
    prefix = tmp_path / "prefix"  # stands in for the venv's share/jupyter, where `make lab` copies the file
    target = prefix / "share" / "jupyter" / "lab" / "settings"
    target.mkdir(parents=True)
    shutil.copy(ROOT / "jupyter" / "overrides.json", target / "overrides.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "user"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--IdentityProvider.token=t",
           "--allow-root", f"--ServerApp.root_dir={tmp_path}", f"--LabApp.app_settings_dir={target}"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/lab/api/settings/{KEY}?token=t"
        for _ in range(120):
            try:
                body = json.loads(urllib.request.urlopen(url, timeout=5).read())
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        defaults = body["schema"]["properties"]  # overrides replace the schema's defaults (no user settings here)
        assert defaults["fetchNews"]["default"] == "false", defaults["fetchNews"]  # without the file: "none" (ask)
        assert defaults["checkForUpdates"]["default"] is False
    finally:
        server.terminate()
        server.wait(timeout=30)
