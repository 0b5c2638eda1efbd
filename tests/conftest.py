"""Shared fixtures: one torch thread for tiny-tensor tests, and real MNIST subsets.

Tests use these through fixtures only (never `from conftest import ...`).
"""
import pytest
import torch

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
