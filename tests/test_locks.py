"""cache.lock: one build at a time across processes and threads; the second one says it waits, then reuses.

Two real processes ask for the same tiny teacher at once (exactly one trains); threads of one
process take the same lock (no deadlock, no second build); a held lock with a timeout gives up
with an error naming the lock file; a reader never deletes a file caught mid-write.
"""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kd_lessons import cache

REPO = Path(__file__).resolve().parents[1]
TINY = {"width": 2, "num_epochs": 1, "n_train": 256, "batch_size": 64, "augment": "none"}

# One child process: count trainings in a shared file, meet the other child, then ask for the teacher.
CHILD = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from kd_lessons import cache, teachers
from kd_lessons.data import DataUnavailableError
from kd_lessons.train import TrainOptions

work, me = Path(sys.argv[1]), sys.argv[2]
real_train = teachers._train

def counted(rec, *args, **kwargs):
    with open(work / "trainings", "a") as f:
        f.write(me + "\\n")
    while len(list(work.glob("asking-*"))) < 2 and time.time() < deadline:  # until the other one asks too
        time.sleep(0.005)
    time.sleep(0.5)
    return real_train(rec, *args, **kwargs)

teachers._train = counted
(work / f"ready-{me}").touch()
deadline = time.time() + 60
while len(list(work.glob("ready-*"))) < 2 and time.time() < deadline:  # start together
    time.sleep(0.005)
(work / f"asking-{me}").touch()
try:
    teacher, info = teachers.get_teacher("mnist", "cnn", device="cpu", recipe_override=json.loads(sys.argv[3]),
                                         options=TrainOptions(progress=False))
except DataUnavailableError as exc:
    print(exc, file=sys.stderr)
    sys.exit(77)
print(json.dumps({"me": me, "weights": cache.state_digest(teacher), "errors": info["test_errors"],
                  "train_seconds": info["train_seconds"]}))
"""


def _hold(file, held: threading.Event, release: threading.Event):
    """Hold file's lock in another thread until `release` is set."""
    def work():
        with cache.lock(file, "a test file"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    assert held.wait(30)
    return thread


def test_two_processes_train_one_teacher_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "KD_CACHE_DIR": str(tmp_path / "cache"), "KD_QUICK": "1",
           "KD_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), name, json.dumps(TINY)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in "ab"]
    try:
        outputs = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            child.kill()
    if any(child.returncode == 77 for child in children):
        pytest.skip(f"MNIST not available: {outputs[0][1][-500:]}")
    assert [child.returncode for child in children] == [0, 0], [err[-2000:] for _, err in outputs]
    trainers = (tmp_path / "trainings").read_text().split()
    assert len(trainers) == 1, f"trained by {trainers}: the lock did not keep the second process out"
    results = {json.loads(out)["me"]: json.loads(out) for out, _ in outputs}
    assert results["a"] == {**results["b"], "me": "a"}  # same weights, same measured info
    waiter = ({"a", "b"} - set(trainers)).pop()
    err = outputs["ab".index(waiter)][1]
    lock_file = cache.lock_path(next((tmp_path / "cache" / "teachers").glob("*.pt")))
    assert f"waiting for another process that is building the MNIST cnn teacher ({lock_file})" in err
    assert "waiting" not in outputs["ab".index(trainers[0])][1]


def test_second_thread_waits_says_so_and_gets_the_lock_after_the_first(tmp_path, capsys):
    file, held, release = tmp_path / "sweeps" / "x.pt", threading.Event(), threading.Event()
    holder = _hold(file, held, release)
    order, seen = [], []

    def second():
        with cache.lock(file, "the x sweep") as path:
            order.append("second")
            seen.append(path)

    waiter = threading.Thread(target=second)
    waiter.start()
    deadline = time.time() + 10
    while not cache.waiting() and time.time() < deadline:
        time.sleep(0.01)
    message = f"waiting for another thread of this process that is building the x sweep ({file}.lock)"
    assert cache.waiting() == [message]  # what the app can show while a job waits
    order.append("first done")
    release.set()
    holder.join(10)
    waiter.join(10)
    assert order == ["first done", "second"] and seen == [tmp_path / "sweeps" / "x.pt.lock"]
    assert cache.waiting() == []
    assert capsys.readouterr().err.count("waiting for another") == 1  # said once, on stderr


def test_lock_is_reentrant_within_a_thread(tmp_path, capsys):
    file = tmp_path / "a.pt"
    with cache.lock(file, "a"):
        with cache.lock(file, "a"):  # e.g. grid.load_or_run holds it when add_result takes it
            pass
        with cache.lock(tmp_path / "b.pt", "b"):
            pass
    with cache.lock(file, "a"):
        pass
    assert capsys.readouterr().err == ""


def test_held_lock_with_a_timeout_raises_naming_the_lock_file(tmp_path):
    file, held, release = tmp_path / "teachers" / "t.pt", threading.Event(), threading.Event()
    holder = _hold(file, held, release)
    try:
        start = time.perf_counter()
        lock_file = str(tmp_path / "teachers" / "t.pt.lock")
        with pytest.raises(cache.LockTimeout, match=f"gave up after 0.2 s waiting for {lock_file}.*"
                                                    f"delete {lock_file}"):
            with cache.lock(file, "the t teacher", timeout=0.2):
                pytest.fail("the lock is held elsewhere")
        assert time.perf_counter() - start < 5
        assert cache.waiting() == []
    finally:
        release.set()
        holder.join(10)
    with cache.lock(file, "the t teacher", timeout=0.2):  # free again once released
        pass


def test_a_file_caught_mid_write_is_not_deleted_but_read_once_written(tmp_path, capsys):
    """save_verified renames the data, then its checksum: a reader in between must wait, not discard."""
    file = tmp_path / "sweeps" / "grid.pt"
    cache.save_verified({"rows": [1]}, file, {"kind": "test"})
    old_sidecar = cache.sidecar(file).read_bytes()
    held, release = threading.Event(), threading.Event()

    def writer():
        with cache.lock(file, "the test grid"):
            cache.save_verified({"rows": [1, 2]}, file, {"kind": "test"})
            new_sidecar = cache.sidecar(file).read_bytes()
            cache.sidecar(file).write_bytes(old_sidecar)  # the moment between the two renames
            held.set()
            release.wait(30)
            cache.sidecar(file).write_bytes(new_sidecar)

    thread = threading.Thread(target=writer)
    thread.start()
    assert held.wait(30)
    got = []
    reader = threading.Thread(target=lambda: got.append(cache.load_or_none(file, {"kind": "test"}, "grid")))
    reader.start()
    time.sleep(0.3)
    assert not got and file.exists()  # waiting for the writer, not deleting its file
    release.set()
    thread.join(10)
    reader.join(10)
    assert got == [{"rows": [1, 2]}]
    assert "waiting for another thread of this process that is building grid" in capsys.readouterr().err
