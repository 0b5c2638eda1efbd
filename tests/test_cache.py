"""kd_lessons.cache: the cache layout, content keys, atomic writes and checksum-verified loads."""
import copy
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from kd_lessons import cache

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A private cache folder: these tests write fake and corrupt entries."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_save_and_load_roundtrip(tmp_path):
    path = tmp_path / "ckpt.pt"
    obj = {"w": torch.arange(5.0)}
    digest = cache.save_verified(obj, path, meta={"recipe": "abc"})
    assert digest == cache.file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    back = cache.load_verified(path, meta={"recipe": "abc"})
    assert torch.equal(back["w"], obj["w"])
    assert not list(tmp_path.glob("*.part")), "no temporary files are left behind"


def test_flipped_byte_is_detected(tmp_path):
    path = tmp_path / "ckpt.pt"
    cache.save_verified({"w": torch.ones(100)}, path)
    _flip_middle_byte(path)
    with pytest.raises(cache.CorruptFileError, match="does not match its recorded sha256.*delete it"):
        cache.load_verified(path)


def test_mismatched_meta_is_detected(tmp_path):
    path = tmp_path / "ckpt.pt"
    cache.save_verified({"w": torch.ones(1)}, path, meta={"recipe": "old"})
    with pytest.raises(cache.CorruptFileError, match="recipe='old', expected 'new'.*another configuration"):
        cache.load_verified(path, meta={"recipe": "new"})


def test_unreadable_sidecar_and_missing_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(FileNotFoundError, match=r"ckpt\.pt \(or its checksum file ckpt\.pt\.sha256\.json\) does not"):
        cache.load_verified(path)
    cache.save_verified({"w": torch.ones(1)}, path)
    cache.sidecar(path).write_text("{not json")
    with pytest.raises(cache.CorruptFileError, match="unreadable.*delete .* and rebuild it"):
        cache.load_verified(path)


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "f.bin"
    cache.atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="crash while writing"):
        with cache.atomic_path(path) as tmp:
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"old"
    assert not list(tmp_path.glob("*.part"))


def test_sidecar_records_size(tmp_path):
    path = tmp_path / "x.pt"
    cache.save_verified(torch.zeros(3), path, meta={"rows": 3})
    assert cache.sidecar(path) == tmp_path / "x.pt.sha256.json"
    record = json.loads(cache.sidecar(path).read_text())
    assert record["bytes"] == path.stat().st_size and record["rows"] == 3


# ---------------------------------------------------------------- layout and names

def test_path_is_kind_folder_in_the_cache_dir(tmp_cache):
    for kind in cache.KINDS:
        assert cache.path(kind, "a.pt") == tmp_cache / kind / "a.pt"


@pytest.mark.parametrize("kind", ["tensor", "checkpoints", "", "../teachers"])
def test_path_rejects_unknown_kinds(tmp_cache, kind):
    with pytest.raises(ValueError, match=rf"cache kind '{kind}' is not known; use one of \['tensors', 'teachers'"):
        cache.path(kind, "a.pt")


def test_key_is_stable_short_and_order_insensitive():
    a = {"dataset": "mnist", "seed": 0, "lr": 0.004}
    b = {"lr": 0.004, "seed": 0, "dataset": "mnist"}
    assert cache.key(a) == cache.key(b) == cache.key(dict(a))
    assert cache.key(a) == "15c95c84188e"        # the same in every process and on every machine
    assert cache.key("a", 1) == "2657442bb4a4"
    assert len(cache.key(a)) == 12 and all(c in "0123456789abcdef" for c in cache.key(a))
    assert cache.key({"outer": a}) == cache.key({"outer": b})   # nested dicts too
    assert cache.key({**a, "seed": 1}) != cache.key(a)
    assert cache.key(a, "quick") != cache.key(a, "full") != cache.key(a)


def test_tensor_digest_changes_when_one_value_changes():
    t = torch.arange(12.0).view(3, 4)
    d = cache.tensor_digest(t)
    assert d == cache.tensor_digest(t.clone()) and len(d) == 16
    assert d == cache.tensor_digest(t.t().contiguous().t())  # layout does not matter, content does
    changed = t.clone()
    changed[2, 3] += 1e-3
    assert cache.tensor_digest(changed) != d
    assert cache.tensor_digest(t.view(4, 3)) != d             # same bytes, other shape
    assert cache.tensor_digest(torch.zeros(3, dtype=torch.int32)) != cache.tensor_digest(torch.zeros(3))
    assert cache.tensor_digest(torch.zeros(0)) != cache.tensor_digest(torch.zeros(0, 2))


def test_state_digest_changes_when_a_weight_changes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    d = cache.state_digest(model)
    twin = copy.deepcopy(model)
    assert cache.state_digest(twin) == d and len(d) == 16
    with torch.no_grad():
        twin[0].weight[1, 2] += 1e-4
    assert cache.state_digest(twin) != d
    bn = copy.deepcopy(model)
    bn[1].running_mean += 0.1                                  # buffers are part of the weights too
    assert cache.state_digest(bn) != d


# ---------------------------------------------------------------- unusable files are warned about and deleted

def test_load_or_none_absent_valid_corrupt_and_foreign(tmp_cache):
    file = cache.path("logits", "x.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load_or_none(file, {"rows": 3}) is None          # absent: quietly None
        cache.save_verified(torch.ones(3), file, {"rows": 3})
        assert torch.equal(cache.load_or_none(file, {"rows": 3}), torch.ones(3))
    _flip_middle_byte(file)
    with pytest.warns(cache.CacheWarning, match="test logits .*x.pt was unusable .*sha256.*deleted and will be"):
        assert cache.load_or_none(file, {"rows": 3}, "test logits") is None
    assert not file.exists() and not cache.sidecar(file).exists()
    cache.save_verified(torch.ones(3), file, {"rows": 3})
    with pytest.warns(cache.CacheWarning, match="rows=3, expected 4"):
        assert cache.load_or_none(file, {"rows": 4}) is None          # another configuration's file
    assert not file.exists() and not cache.sidecar(file).exists()


def test_discard_warns_and_deletes_file_and_sidecar(tmp_cache):
    file = cache.path("sweeps", "s.pt")
    cache.save_verified({"a": 1}, file)
    with pytest.warns(cache.CacheWarning, match="sweep .*s.pt was unusable \\(stale\\); it was deleted"):
        cache.discard(file, RuntimeError("stale"), "sweep")
    assert not file.exists() and not cache.sidecar(file).exists()
    assert issubclass(cache.CacheWarning, UserWarning)


def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    blob = bytes(range(256)) * 41 + b"tail"
    path.write_bytes(blob)
    assert cache.file_digest(path) == hashlib.sha256(blob).hexdigest()
    assert cache.file_digest(path, "sha256", chunk=7) == hashlib.sha256(blob).hexdigest()
    assert cache.file_digest(path, "md5") == hashlib.md5(blob).hexdigest()
    assert cache.file_digest(path, "md5", chunk=1000) == hashlib.md5(blob).hexdigest()
    assert cache.sha256_bytes(blob) == hashlib.sha256(blob).hexdigest()
    with pytest.raises(ValueError, match="algo='sha1': use 'sha256' or 'md5'"):
        cache.file_digest(path, "sha1")


# ---------------------------------------------------------------- build_once: check, lock, check, build, save

def _counting_build(calls, value=7.0, pause=0.0):
    def build():
        calls.append(1)
        time.sleep(pause)
        return torch.full((3,), value)
    return build


def test_build_once_builds_then_loads_the_verified_file(tmp_cache):
    file, calls = cache.path("sweeps", "b.pt"), []
    first = cache.build_once(file, {"rows": 3}, _counting_build(calls), "a test sweep")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cache.build_once(file, {"rows": 3}, _counting_build(calls, value=9.0), "a test sweep")
    assert len(calls) == 1 and torch.equal(first, again) and torch.equal(again, torch.full((3,), 7.0))
    assert cache.load_verified(file, {"rows": 3}).tolist() == [7.0] * 3     # saved with its sidecar and meta


def test_build_once_builds_once_across_two_threads(tmp_cache):
    file, calls, got = cache.path("sweeps", "t.pt"), [], []
    build = _counting_build(calls, pause=0.3)
    threads = [threading.Thread(target=lambda: got.append(cache.build_once(file, None, build, "a slow sweep")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(calls) == 1 and len(got) == 2 and torch.equal(got[0], got[1])


_CHILD = """
import sys, time
from pathlib import Path
import torch
from kd_lessons import cache
work, me = Path(sys.argv[1]), sys.argv[2]
(work / f"ready-{me}").touch()
deadline = time.time() + 60
while len(list(work.glob("ready-*"))) < 2 and time.time() < deadline:
    time.sleep(0.005)
def build():
    with open(work / "builds", "a") as f:
        f.write(me + "\\n")
    time.sleep(0.5)
    return torch.arange(4.0)
print(cache.build_once(work / "cache" / "p.pt", {"kind": "test"}, build, "a test file").tolist())
"""


def test_build_once_builds_once_across_two_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), me], stdout=subprocess.PIPE, text=True,
                                 env=env) for me in ("a", "b")]
    outs = [c.communicate(timeout=120)[0] for c in children]
    assert [c.returncode for c in children] == [0, 0]
    assert len((tmp_path / "builds").read_text().split()) == 1
    assert outs[0].strip() == outs[1].strip() == "[0.0, 1.0, 2.0, 3.0]"


def test_build_once_rebuilds_a_corrupt_file_with_a_warning(tmp_cache):
    file, calls = cache.path("sweeps", "c.pt"), []
    cache.build_once(file, None, _counting_build(calls), "a test sweep")
    _flip_middle_byte(file)
    with pytest.warns(cache.CacheWarning, match="a test sweep .*c.pt was unusable .*sha256.*deleted and will be"):
        value = cache.build_once(file, None, _counting_build(calls, value=2.0), "a test sweep")
    assert len(calls) == 2 and value.tolist() == [2.0] * 3 and cache.load_verified(file).tolist() == [2.0] * 3


def test_build_once_rebuilds_a_file_of_another_configuration(tmp_cache):
    file, calls = cache.path("sweeps", "m.pt"), []
    cache.build_once(file, {"rows": 3}, _counting_build(calls), "a test sweep")
    with pytest.warns(cache.CacheWarning, match="rows=3, expected 4"):
        value = cache.build_once(file, {"rows": 4}, _counting_build(calls, value=4.0), "a test sweep")
    assert len(calls) == 2 and value.tolist() == [4.0] * 3
    assert cache.load_verified(file, {"rows": 4}).tolist() == [4.0] * 3


def test_build_once_custom_load_errors_name_their_type_and_rebuild(tmp_cache):
    file, calls = cache.path("teachers", "k.pt"), []
    cache.build_once(file, None, _counting_build(calls), "a test model")

    def load(f):
        raise RuntimeError("size mismatch for weight")
    with pytest.warns(cache.CacheWarning, match=r"was unusable \(RuntimeError: size mismatch for weight\)"):
        cache.build_once(file, None, _counting_build(calls), "a test model", load=load, save=lambda v, f: None)
    assert len(calls) == 2


def test_a_failing_build_leaves_no_file_and_releases_the_lock(tmp_cache):
    file = cache.path("sweeps", "f.pt")

    def build():
        raise ValueError("the build failed")
    with pytest.raises(ValueError, match="the build failed"):
        cache.build_once(file, None, build, "a failing sweep")
    assert not file.exists() and not cache.sidecar(file).exists() and not list(file.parent.glob("*.part"))
    took = []

    def take():
        with cache.lock(file, "the same file", timeout=1):
            took.append(True)
    other = threading.Thread(target=take)
    other.start()
    other.join(10)
    assert took, "another thread gets the lock at once after the failed build"


def test_build_once_refresh_rebuilds_a_valid_file(tmp_cache):
    file, calls = cache.path("sweeps", "r.pt"), []
    cache.build_once(file, None, _counting_build(calls), "a test sweep")
    value = cache.build_once(file, None, _counting_build(calls, value=5.0), "a test sweep", refresh=True)
    assert len(calls) == 2 and value.tolist() == [5.0] * 3 and cache.load_verified(file).tolist() == [5.0] * 3
