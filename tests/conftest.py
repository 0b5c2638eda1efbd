"""Shared fixtures: one torch thread for tiny-tensor tests, real MNIST subsets, and a CIFAR-format stand-in.

Tests use these through fixtures only (never `from conftest import ...`).
"""
import dataclasses
import hashlib
import pickle
from pathlib import Path
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


# ---------------------------------------------------------------- lesson markers (`make test-lesson N=12`)
# Which lessons each test file rests under: the notebooks whose code imports the module that file tests (read off
# the notebooks' `from kd_lessons...` lines). EVERY marks the plumbing each lesson runs on (settings, cache, locks,
# the notebooks' own hygiene). A notebook belongs to the lesson of its number (notebooks/solutions/ too), so a new
# lesson needs no entry; a new test file does (tests/test_course.py fails until it has one).
EVERY = tuple(range(17))
LESSONS = {
    "test_app.py": (0,), "test_lab_settings.py": (0,),
    "test_app_browser.py": (0,), "test_app_jobs.py": (0,), "test_load_app.py": (0,),
    "test_app_shutdown.py": (0,),
    "test_app_datasets.py": (0,), "test_app_playground.py": (0,), "test_app_layout.py": (0,), "test_ddp.py": (6,),
    "test_recipes.py": (4, 5, 6, 7, 10, 11, 12, 13, 14), "test_registry.py": (10, 11),
    "test_app_panels.py": (1, 2, 3, 4), "test_app_kl_direction.py": (10,),
    "test_stats.py": EVERY, "test_results.py": EVERY, "test_run_full.py": EVERY, "test_ledger.py": EVERY,
    "test_cache.py": EVERY, "test_config.py": EVERY, "test_locks.py": EVERY, "test_notebooks_clean.py": EVERY,
    "test_docstring_tags.py": EVERY, "test_site_browser.py": (0,),  # the rendered site: built once, for the course
    "test_course.py": (0,), "test_main.py": (0,), "test_wheel.py": (0,),
    "test_data.py": (0, 1, 2, 3, 6, 8, 12), "test_datasets.py": (0, 1, 2, 3, 6, 8, 12), "test_cifar_path.py": (6,),
    "test_models.py": (0, 3, 4, 5, 6, 8, 11, 12, 13), "test_plots.py": (0, 1, 2, 4, 5, 7, 10, 11, 12),
    "test_teachers.py": (0, 1, 2, 3, 4, 5, 6, 11, 12, 14), "test_train.py": (0, 1, 2, 3, 6, 12, 14),
    "test_loop.py": (3, 4, 5, 6, 7, 10, 11, 12, 13, 14),
    "test_losses.py": (1, 2, 3, 5, 8, 9), "test_objectives.py": (3, 5, 8, 11),
    "test_runs_students.py": (4, 5, 6, 11, 12, 13, 14), "test_few_labels.py": (4,), "test_grid.py": (4,),
    "test_deploy.py": (4, 6), "test_hinton2015.py": (7,), "test_tour.py": (11,),
    "test_runs_synthetic_sets.py": (12,), "test_runs_trace_students.py": (13,), "test_compression.py": (8, 14),
    "test_runs_lm_students.py": (10,), "test_runs_lm_seq_sweep.py": (10,), "test_runs_lm_measures.py": (10,),
    "test_generative_cost_positions.py": (10,),
    "test_methods_feature_kd.py": (5, 6), "test_methods_logits.py": (8, 11), "test_methods_relations.py": (8, 11),
    "test_methods_contrastive.py": (11,), "test_methods_schemes.py": (11,), "test_methods_deep_inversion.py": (8, 12),
    "test_generative_divergences.py": (8, 10), "test_generative_toy.py": (8, 10), "test_generative_text.py": (10,),
    "test_generative_transformer.py": (8, 10, 13), "test_generative_zoo.py": (10,),
    "test_generative_lm_objectives.py": (10,), "test_generative_pretrained.py": (10,),
    "test_generative_scratchpad.py": (8, 13), "test_on_policy.py": (15,),
    "test_exercises.py": (8, 9), "test_exercises_questions.py": (8,), "test_exercises_core.py": (9,),
    "test_exercises_build_solutions.py": (9,), "test_exercises_temperature.py": (9,), "test_exercises_kl_loss.py": (9,),
    "test_exercises_step.py": (9,), "test_exercises_hint_loss.py": (9,), "test_exercises_caching.py": (9,),
    "test_exercises_method_losses.py": (9,), "test_exercises_bn_statistics.py": (9,),
    "test_exercises_trace_filter.py": (9,), "test_exercises_sequence_kd.py": (9,),
    "test_exercises_on_policy.py": (9,), "test_exercises_speculative.py": (9,),
    "test_exercises_cross_tokenizer.py": (9,), "test_exercises_logit_store.py": (9,),
    "test_generative_speculative.py": (9, 16), "test_runs_speculative_drafts.py": (16,),
    "test_generative_logit_store.py": (16,), "test_runs_logit_storage.py": (16,),
    "test_generative_subword.py": (16,), "test_generative_cross_tokenizer.py": (16,),
    "test_runs_cross_tokenizer_students.py": (16,),
    # lessons 17 (diffusion step distillation) and 18 (DINO): () until their notebooks exist, then (17,) / (18,)
    "test_diffusion_data.py": (), "test_diffusion_model.py": (), "test_diffusion_distill.py": (),
    "test_diffusion_metrics.py": (), "test_diffusion_consistency.py": (), "test_runs_step_distillation.py": (),
    "test_methods_dino.py": (), "test_runs_dino.py": (),
    "test_exercises_step_distillation.py": (9,), "test_exercises_dino.py": (9,),
    "test_mnist1d.py": (), "test_runs_capacity_gap.py": (), "test_runs_kd_map.py": (),  # lesson 18
}


def lessons_of(path) -> tuple:
    """The lessons a collected file belongs to: a notebook by its number, a test file by LESSONS (else none)."""
    name = Path(str(path)).name
    if name.endswith(".ipynb") and name[:2].isdigit():
        return (int(name[:2]),)
    return LESSONS.get(name, ())


def pytest_collection_modifyitems(config, items):
    """Mark every test and notebook cell with its lessons, so `pytest -m lesson12` runs what notebook 12 rests on."""
    for item in items:
        for n in lessons_of(item.path):
            item.add_marker(f"lesson{n:02d}")


def pytest_configure(config):
    """Keep each lesson nbval runs, so the site test renders it, not runs it again (scripts/site_executed.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("site_executed", Path(__file__).parents[1] / "scripts" /
                                                  "site_executed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config.pluginmanager.register(module.Capture(), module.PLUGIN)


@pytest.fixture(scope="session")
def lesson_table():
    """The LESSONS table, for the test that every test file has an entry (tests import fixtures, not conftest)."""
    return LESSONS


@pytest.fixture
def grid_jobs(monkeypatch, request):
    """The app's real heatmap jobs, each waited for (the module's FILL_TIMEOUT) when the test ends, so none
    outlives the test's monkeypatches."""
    from kd_lessons.app import jobs

    started, real = [], jobs.start_grid
    monkeypatch.setattr(jobs, "start_grid", lambda *args, **kwargs: started.append(real(*args, **kwargs))
                        or started[-1])
    yield started
    for job in started:
        try:
            job.future.result(timeout=getattr(request.module, "FILL_TIMEOUT", 180))
        except Exception:  # noqa: BLE001 - the test itself checks what the page showed
            pass


# ---------------------------------------------------------------- the generative lessons' small real text
@pytest.fixture(scope="module")
def corpus():
    """The first 30,000 characters of the real corpus (a small real text; the whole one is not needed here)."""
    from kd_lessons.generative.text import CharVocab, Corpus, load_text, split
    from kd_lessons.generative.text import DataUnavailableError as TextUnavailable

    try:
        text = load_text("shakespeare")[:30_000]
    except TextUnavailable as exc:
        pytest.skip(f"the Shakespeare corpus is not available: {exc}")
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    return Corpus("shakespeare", text, vocab, ids, *split(ids, 0.2))


@pytest.fixture(scope="module")
def teacher(corpus):
    """A tiny untrained character transformer over that text (context 16): the generative runs' stand-in teacher."""
    from kd_lessons.generative.transformer import CharTransformer

    torch.manual_seed(0)
    return CharTransformer(corpus.vocab_size, 16, 1, 2, 16).eval()


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch, one_thread):
    """An empty cache folder and quick mode, one torch thread."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KD_QUICK", "1")
    return tmp_path / "cache"
