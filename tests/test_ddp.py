"""DDP scale-out: 2 torchrun CPU processes (gloo) train the same student as 1 process on the same global batches.

Why they must agree: each rank takes its contiguous half of every global batch of 64 (the shuffled order
is the single process's), DistributedDataParallel averages the two halves' gradients, and HintonKD is a
mean over the batch, so every step's gradient is the whole batch's one; the MLP student has no
BatchNorm or dropout, and both runs compute in fp32. What differs is float summation order only.
Stated tolerance: after 16 AdamW steps (2 epochs x 8 batches, OneCycle on) on 512 real MNIST images,
every parameter of the two students differs by less than 1e-4 (while training moved them by > 1e-2).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kd_lessons import distributed
from kd_lessons.models import MLPStudent
from kd_lessons.train import TrainOptions, fit

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

ARGS = ["--n-train", "512", "--epochs", "2", "--batch-size", "64", "--hidden", "32", "--lr", "3e-3",
        "--precision", "fp32", "--seed", "1"]


def _run(cmd):
    env = {**os.environ, "KD_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "KD_PRECISION": "fp32"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_two_torchrun_processes_train_the_same_student_as_one(mnist_subset, tmp_path):
    x, y, _, _ = mnist_subset(512, 10)  # skips without MNIST; a tiny teacher, trained here, saved whole
    torch.manual_seed(0)
    teacher = MLPStudent((64,))
    fit(teacher, x, y, num_epochs=1, lr=3e-3, options=TrainOptions(batch_size=64, device="cpu", progress=False))
    torch.save(teacher, tmp_path / "teacher.pt")
    entry = ["-m", "kd_lessons.runs.scale_out", *ARGS, "--teacher", str(tmp_path / "teacher.pt")]
    _run([sys.executable, *entry, "--out", str(tmp_path / "one.pt")])
    out = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *entry,
                "--out", str(tmp_path / "two.pt")])
    one, two = (torch.load(tmp_path / f"{n}.pt", weights_only=False) for n in ("one", "two"))
    assert one["summary"]["world_size"] == 1 and two["summary"]["world_size"] == 2
    assert '"world_size": 2' in out and out.count('"world_size"') == 1  # only rank 0 printed its summary
    assert one["history"]["step"] == two["history"]["step"] == [8, 16]  # global batches: 8 steps per epoch
    first_one, first_two = one["history"]["step_loss"][0], two["history"]["step_loss"][0]
    assert abs(first_one - first_two) > 1e-3  # rank 0's loss is over its half of the batch: it really was sharded
    torch.manual_seed(1)  # the script's seed: its student's initial weights
    start = MLPStudent((32,)).state_dict()
    moved = max(float((one["student"][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-2  # the student really trained (so equal parameters are not equal initialisations)
    diff = max(float((one["student"][k] - two["student"][k]).abs().max()) for k in one["student"])
    print(f"max abs parameter difference, 1 vs 2 processes: {diff:.2e}")
    assert diff < 1e-4, f"max abs parameter difference 1 vs 2 processes: {diff:.2e}"


def test_alone_the_helpers_are_the_identity():
    model = MLPStudent((4,))
    batches = [(torch.arange(3), torch.zeros(3, 784), torch.zeros(3, dtype=torch.long))]
    assert not distributed.active() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.wrap(model) is model
    assert list(distributed.shard(iter(batches))) == batches
