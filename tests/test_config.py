"""kd_lessons.config: the only reader of the environment (mode, device, precision, offline, timeout, folders)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kd_lessons
from kd_lessons import config

PACKAGE = Path(kd_lessons.__file__).resolve().parent


def test_quick_switch_reads_env(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    assert config.is_quick() and config.pick(10, 1) == 1
    monkeypatch.setenv("KD_QUICK", "0")
    assert not config.is_quick() and config.pick(10, 1) == 10
    monkeypatch.delenv("KD_QUICK")
    assert not config.is_quick()


def test_mode_names_quick_and_full(monkeypatch):
    for value, expected in [("1", "quick"), ("true", "quick"), (" YES ", "quick"), ("0", "full"), ("", "full")]:
        monkeypatch.setenv("KD_QUICK", value)
        assert config.mode() == expected, value
    monkeypatch.delenv("KD_QUICK")
    assert config.mode() == "full"


def test_offline_reads_kd_offline(monkeypatch):
    monkeypatch.delenv("KD_OFFLINE", raising=False)
    assert config.offline() is False
    for value, expected in [("1", True), ("on", True), ("True", True), ("0", False), ("no", False), ("", False)]:
        monkeypatch.setenv("KD_OFFLINE", value)
        assert config.offline() is expected, value


def test_download_timeout_default_and_override(monkeypatch):
    monkeypatch.delenv("KD_DOWNLOAD_TIMEOUT", raising=False)
    assert config.download_timeout() == 10.0
    monkeypatch.setenv("KD_DOWNLOAD_TIMEOUT", "2.5")
    assert config.download_timeout() == 2.5
    monkeypatch.setenv("KD_DOWNLOAD_TIMEOUT", " 30 ")
    assert config.download_timeout() == 30.0


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "ten"])
def test_download_timeout_rejects_bad_values(monkeypatch, value):
    monkeypatch.setenv("KD_DOWNLOAD_TIMEOUT", value)
    with pytest.raises(ValueError, match=rf"KD_DOWNLOAD_TIMEOUT='{value}': use a number of seconds > 0.*unset it"):
        config.download_timeout()


def test_device_override_and_default(monkeypatch):
    monkeypatch.setenv("KD_DEVICE", "cpu")
    assert config.get_device() == torch.device("cpu")
    assert config.get_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("KD_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if config._mps_available() else "cpu")
    assert config.get_device().type == expected


def test_resolve_device_keeps_a_given_device_and_picks_for_none(monkeypatch):
    monkeypatch.setenv("KD_DEVICE", "cpu")
    assert config.resolve_device() == config.resolve_device(None) == torch.device("cpu")  # None follows KD_DEVICE
    assert config.resolve_device("cpu") == torch.device("cpu")
    meta = torch.device("meta")  # a given device wins over KD_DEVICE, as a str or a torch.device
    assert config.resolve_device(meta) is meta and config.resolve_device("meta") == meta
    monkeypatch.delenv("KD_DEVICE")
    assert config.resolve_device() == config.get_device()
    for bad in ("gpu0", 3.5, [0]):
        with pytest.raises(ValueError, match=r"device=.* is not a device: pass 'cpu', 'cuda'"):
            config.resolve_device(bad)


def test_every_device_argument_goes_through_resolve_device():
    spelled = re.compile(r"if [\w.]+ is not None else (config\.)?get_device\(\)")  # what resolve_device replaces
    offenders = [f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}" for path in sorted(PACKAGE.rglob("*.py"))
                 for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if spelled.search(line) and path.name != "config.py"]
    assert offenders == [], "use config.resolve_device(device):\n" + "\n".join(offenders)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_override_unavailable_cuda_is_clear(monkeypatch):
    monkeypatch.setenv("KD_DEVICE", "cuda")
    with pytest.raises(ValueError, match="CUDA is not available; use 'cpu' or unset KD_DEVICE"):
        config.get_device()


def test_seed_everything_repeats():
    g1 = config.seed_everything(3)
    a = torch.rand(4), torch.rand(2, generator=g1)
    g2 = config.seed_everything(3)
    b = torch.rand(4), torch.rand(2, generator=g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_folders_follow_env(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "c"))
    assert config.data_dir() == tmp_path / "d" and config.data_dir().is_dir()
    assert config.cache_dir() == tmp_path / "c" and config.cache_dir().is_dir()
    monkeypatch.delenv("KD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert config.cache_dir() == tmp_path / "xdg" / "kd_lessons"


def test_describe_mentions_device_and_mode(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    text = config.describe()
    assert "device=" in text and "quick" in text
    monkeypatch.setenv("KD_QUICK", "0")
    assert "mode=full" in config.describe("cpu")


def test_precision_choice_env_and_default(monkeypatch):
    monkeypatch.delenv("KD_PRECISION", raising=False)
    assert config.precision() == "auto"
    monkeypatch.setenv("KD_PRECISION", " BF16 ")
    assert config.precision() == "bf16"
    assert config.precision("fp32") == "fp32"       # an explicit choice beats the environment
    assert config.precision("Auto") == "auto"
    monkeypatch.setenv("KD_PRECISION", "")
    assert config.precision() == "auto"


def test_precision_override_and_auto(monkeypatch):
    monkeypatch.setenv("KD_PRECISION", "fp32")
    assert config.amp_dtype("cpu") is None
    assert config.amp_dtype("cpu", "bf16") == torch.bfloat16   # the argument beats KD_PRECISION
    monkeypatch.setenv("KD_PRECISION", "bf16")
    assert config.amp_dtype("cpu") == torch.bfloat16
    assert config.amp_dtype("cpu", "fp32") is None
    assert config.amp_dtype("mps") is None            # MPS trains in fp32 whatever is asked
    monkeypatch.delenv("KD_PRECISION")
    for amx, expected in [(True, torch.bfloat16), (False, None)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert config.amp_dtype("cpu") == expected   # auto: bf16 only where the CPU has AMX units
        assert ("bfloat16 autocast" in config.describe("cpu")) == amx


def test_precision_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("KD_PRECISION", "half")
    with pytest.raises(ValueError, match="KD_PRECISION='half': use 'auto', 'fp32' or 'bf16'"):
        config.amp_dtype("cpu")
    with pytest.raises(ValueError, match="KD_PRECISION='half': use 'auto', 'fp32' or 'bf16'"):
        config.precision()
    monkeypatch.delenv("KD_PRECISION")
    with pytest.raises(ValueError, match="precision='fp16': use 'auto', 'fp32' or 'bf16'"):
        config.precision("fp16")


def test_importing_the_package_changes_no_environment_variable():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import json, os, torch\n"
            "before = dict(os.environ)\n"
            "import kd_lessons, kd_lessons.config, kd_lessons.cache, kd_lessons.data, kd_lessons.sources\n"
            "import kd_lessons.models, kd_lessons.losses, kd_lessons.objectives, kd_lessons.train\n"
            "import kd_lessons.teachers\n"
            "after = dict(os.environ)\n"
            "changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))\n"
            "print(json.dumps({'changed': changed, 'omp': os.environ.get('OMP_WAIT_POLICY')}))\n")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=PACKAGE.parent)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"changed": [], "omp": None}


def test_only_config_reads_the_environment():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "config.py":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(PACKAGE)}: {word}" for word in ("os.environ", "getenv") if word in text]
    assert len(list(PACKAGE.rglob("*.py"))) > 10  # the walk really saw the package
    assert offenders == [], "read settings through kd_lessons.config instead"
