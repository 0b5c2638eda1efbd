"""kd_lessons.mnist1d: MNIST-1D generated offline, cached once, verified on load, pinned (lesson 18)."""
import random
import sys
from importlib import metadata

import numpy as np
import pytest
import torch

from kd_lessons import cache
from kd_lessons import mnist1d as m

SMALL = 200  # 160 train / 40 test: generated in well under a second


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_small_generation_has_the_dataset_shape_and_is_reproducible():
    a, b = m.generate(SMALL), m.generate(SMALL)
    assert a["x"].shape == (160, m.LENGTH) and a["x_test"].shape == (40, m.LENGTH)
    assert a["x"].dtype == torch.float32 and a["y"].dtype == torch.int64
    assert set(torch.cat([a["y"], a["y_test"]]).tolist()) == set(range(10))
    assert torch.cat([a["y"], a["y_test"]]).bincount().tolist() == [SMALL // 10] * 10  # balanced, as the package makes
    x = torch.cat([a["x"], a["x_test"]])
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2  # standardised as a whole
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["x"], m.generate(SMALL, seed=1)["x"])  # the seed is the generator's


def test_generation_leaves_the_global_random_state_alone():
    np.random.seed(123)
    random.seed(123)
    m.generate(SMALL)  # the package calls np.random.seed(42) and random.seed(42) inside
    got = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    assert got == (np.random.rand(), random.random())


def test_the_standard_set_matches_its_pin():
    data = m.generate()
    assert (len(data["y"]), len(data["y_test"])) == (4000, 1000)
    assert m.fingerprint(data) == m.PINNED_FINGERPRINT


def test_load_builds_once_then_reads_the_verified_file(tmp_cache, monkeypatch):
    calls = []
    real = m.generate
    monkeypatch.setattr(m, "generate", lambda *a: calls.append(a) or real(*a))
    first = m.load(SMALL)
    file = m.cache_file(SMALL)
    assert file.is_file() and cache.sidecar(file).is_file() and file.parent.name == "tensors"
    again = m.load(SMALL)
    assert len(calls) == 1 and all(torch.equal(first[k], again[k]) for k in first)
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.warns(cache.CacheWarning, match="MNIST-1D"):
        rebuilt = m.load(SMALL)
    assert len(calls) == 2 and torch.equal(rebuilt["x"], first["x"])


def test_a_cached_file_of_the_wrong_content_is_rebuilt(tmp_cache):
    file = m.cache_file(SMALL)
    meta = {"kind": "kd_lessons.mnist1d", "num_samples": SMALL, "seed": 42, "mnist1d": m.package_version()}
    cache.save_verified({"x": torch.zeros(3, 40)}, file, meta)  # a valid checksum over the wrong tensors
    with pytest.warns(cache.CacheWarning):
        data = m.load(SMALL)
    assert data["x"].shape == (160, 40)


def test_a_package_that_generates_other_data_fails_loudly(tmp_cache, monkeypatch):
    monkeypatch.setitem(m.STANDARD, "num_samples", SMALL)  # the small set now counts as standard: it misses the pin
    with pytest.raises(cache.CorruptFileError, match="mnist1d==0.0.2.post1"):
        m.load(SMALL)
    assert not m.cache_file(SMALL).exists()  # a failed build writes nothing


def test_missing_package_says_how_to_install_it(tmp_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # import mnist1d now raises ImportError
    monkeypatch.delitem(sys.modules, "mnist1d.data", raising=False)
    with pytest.raises(m.Mnist1DUnavailableError, match=r"pip install 'mnist1d>=0.0.2'"):
        m.generate(SMALL)

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(m.metadata, "version", absent)
    with pytest.raises(m.Mnist1DUnavailableError, match="not installed"):
        m.load(SMALL)
    assert issubclass(m.Mnist1DUnavailableError, m.DataUnavailableError)


@pytest.mark.parametrize("kwargs, match", [({"num_samples": 205}, "multiple of 10"), ({"num_samples": 20}, "at least"),
                                           ({"num_samples": True}, "int"), ({"num_samples": 200.0}, "int"),
                                           ({"seed": -1}, "seed")])
def test_bad_arguments_say_what_is_allowed(kwargs, match):
    with pytest.raises(ValueError, match=match):
        m.generate(**kwargs)
    with pytest.raises(ValueError, match=match):
        m.load(**kwargs)
