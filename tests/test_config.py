"""kd_lessons.config: quick switch, device choice, seeding and folders."""
import torch
import pytest

from kd_lessons import config


def test_quick_switch_reads_env(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    assert config.is_quick() and config.pick(10, 1) == 1
    monkeypatch.setenv("KD_QUICK", "0")
    assert not config.is_quick() and config.pick(10, 1) == 10
    monkeypatch.delenv("KD_QUICK")
    assert not config.is_quick()


def test_device_override_and_default(monkeypatch):
    monkeypatch.setenv("KD_DEVICE", "cpu")
    assert config.get_device() == torch.device("cpu")
    monkeypatch.delenv("KD_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if config._mps_available() else "cpu")
    assert config.get_device().type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_override_unavailable_cuda_is_clear(monkeypatch):
    monkeypatch.setenv("KD_DEVICE", "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
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


def test_precision_override_and_auto(monkeypatch):
    monkeypatch.setenv("KD_PRECISION", "fp32")
    assert config.amp_dtype("cpu") is None
    monkeypatch.setenv("KD_PRECISION", "bf16")
    assert config.amp_dtype("cpu") == torch.bfloat16
    assert config.amp_dtype("mps") is None            # MPS trains in fp32 whatever is asked
    monkeypatch.delenv("KD_PRECISION")
    for amx, expected in [(True, torch.bfloat16), (False, None)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert config.amp_dtype("cpu") == expected   # auto: bf16 only where the CPU has AMX units
        assert ("bfloat16 autocast" in config.describe("cpu")) == amx


def test_precision_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("KD_PRECISION", "half")
    with pytest.raises(ValueError, match="KD_PRECISION='half'.*'auto', 'fp32' or 'bf16'"):
        config.amp_dtype("cpu")
