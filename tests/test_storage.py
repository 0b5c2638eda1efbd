"""kd_lessons.storage: atomic writes and checksum-verified loads."""
import json

import pytest
import torch

from kd_lessons import storage


def test_save_and_load_roundtrip(tmp_path):
    path = tmp_path / "ckpt.pt"
    obj = {"w": torch.arange(5.0)}
    digest = storage.save_verified(obj, path, meta={"recipe": "abc"})
    assert digest == storage.sha256_file(path)
    back = storage.load_verified(path, meta={"recipe": "abc"})
    assert torch.equal(back["w"], obj["w"])
    assert not list(tmp_path.glob("*.part")), "no temporary files are left behind"


def test_flipped_byte_is_detected(tmp_path):
    path = tmp_path / "ckpt.pt"
    storage.save_verified({"w": torch.ones(100)}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(storage.CorruptFileError, match="sha256"):
        storage.load_verified(path)


def test_mismatched_meta_is_detected(tmp_path):
    path = tmp_path / "ckpt.pt"
    storage.save_verified({"w": torch.ones(1)}, path, meta={"recipe": "old"})
    with pytest.raises(storage.CorruptFileError, match="recipe"):
        storage.load_verified(path, meta={"recipe": "new"})


def test_unreadable_sidecar_and_missing_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(FileNotFoundError):
        storage.load_verified(path)
    storage.save_verified({"w": torch.ones(1)}, path)
    path.with_name(path.name + ".sha256.json").write_text("{not json")
    with pytest.raises(storage.CorruptFileError, match="unreadable"):
        storage.load_verified(path)


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "f.bin"
    storage.atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with storage.atomic_path(path) as tmp:
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"old"
    assert not list(tmp_path.glob("*.part"))


def test_sidecar_records_size(tmp_path):
    path = tmp_path / "x.pt"
    storage.save_verified(torch.zeros(3), path)
    record = json.loads(path.with_name("x.pt.sha256.json").read_text())
    assert record["bytes"] == path.stat().st_size
