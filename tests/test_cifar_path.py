"""The CIFAR path end to end on every machine, on a CIFAR-format stand-in written by a fixture.

The stand-in is NOT CIFAR-10: it is synthetic (each class a flat colour with class-specific stripes,
plus per-image brightness jitter and pixel noise), written in the official cifar-10-batches-py pickle
layout (data_batch_1..5, test_batch, batches.meta; uint8 data [N, 3072], labels a list), so that
`sources.read_raw`, the tensor cache, `teachers.get_teacher("cifar10")` (ResNet), `runs.students`
with crop-flip augmentation and `runs.deploy.model_table` all run for real. It says nothing about
CIFAR-10 accuracy; real CIFAR-10 is still required for any such claim (notebook 06).

The md5 pins of `kd_lessons.sources.PINNED["cifar10"]` are replaced by the stand-in's own md5s only
while this module's tests run (a MonkeyPatch context in a module fixture), with private
KD_DATA_DIR and KD_CACHE_DIR folders.
"""
import pickle

import numpy as np
import pytest
import torch

from kd_lessons import data, sources, teachers
from kd_lessons.cache import file_digest
from kd_lessons.models import CifarResNet, CifarStudent, count_params
from kd_lessons.runs import deploy, students
from kd_lessons.train import TrainOptions, predict_logits

pytestmark = pytest.mark.slow

STANDIN = "CIFAR-format stand-in"
PER_BATCH, N_TEST = 400, 500  # 5 x 400 training images, 500 test images
# Ten well-separated colours, one per class (RGB, 0-255).
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (128, 128, 128)], np.float32)
# One epoch on 2,000 images, at sizes that keep this module well under a minute on two busy cores.
TEACHER_OVERRIDE = {"num_epochs": 1, "n_train": 5 * PER_BATCH, "width": 8, "depth": 8, "batch_size": 50}
QUIET = TrainOptions(progress=False)


def standin_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N, 3, 32, 32]: class colour + class stripes (period 2-6 px; rows for 0-4, columns for 5-9) + noise."""
    n = len(labels)
    coord = np.arange(32, dtype=np.float32)
    period = 2 + labels % 5
    along = np.where(labels[:, None, None] < 5, coord[None, :, None], coord[None, None, :])  # [N, 32, 1] or [N, 1, 32]
    stripes = np.where((along // period[:, None, None]) % 2 == 0, 35.0, -35.0) * np.ones((1, 32, 32), np.float32)
    img = PALETTE[labels][:, :, None, None] + stripes[:, None] + rng.normal(0, 20, (n, 1, 1, 1))
    img = img + rng.normal(0, 30, (n, 3, 32, 32))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_standin(folder, seed: int = 0) -> dict:
    """Write the stand-in in the official layout (protocol-2 pickles with bytes keys, as the originals load)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    splits = [(f"data_batch_{i}", PER_BATCH, f"training batch {i} of 5") for i in range(1, 6)]
    for fname, n, what in splits + [("test_batch", N_TEST, "testing batch 1 of 1")]:
        labels = rng.permutation(np.arange(n) % 10)
        images = standin_images(labels, rng)
        batch = {b"batch_label": f"{STANDIN} {what} (synthetic, not CIFAR-10)".encode(),
                 b"labels": [int(v) for v in labels],
                 b"data": images.reshape(n, 3072),
                 b"filenames": [f"{STANDIN.replace(' ', '_')}_{fname}_{j}.png".encode() for j in range(n)]}
        with open(folder / fname, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[fname] = (images, labels)
    meta = {b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072,
            b"label_names": [f"{STANDIN} class {c}".encode() for c in range(10)]}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """Private data and cache folders holding the stand-in; the md5 pins follow it while this module runs."""
    root = tmp_path_factory.mktemp("cifar_format_standin")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KD_DATA_DIR", str(root / "data"))
        mp.setenv("KD_CACHE_DIR", str(root / "cache"))
        mp.setenv("KD_OFFLINE", "1")  # nothing may be fetched: every file must come from the stand-in
        folder = root / "data" / data.DATASETS["cifar10"].folder
        written = write_standin(folder)
        pins = {fname: ("md5", file_digest(folder / fname, "md5")) for fname in sources.PINNED["cifar10"]}
        mp.setitem(sources.PINNED, "cifar10", pins)
        yield {"folder": folder, "written": written}
    data.clear_memo()  # drop the in-process copies of the stand-in's tensors


@pytest.fixture(scope="module")
def teacher_run(standin):
    """(teacher, info): the ResNet teacher trained on the stand-in through get_teacher, one epoch."""
    teacher, info = teachers.get_teacher("cifar10", recipe_override=TEACHER_OVERRIDE, options=QUIET)
    return teacher, info


def test_standin_loads_through_the_cifar_path(standin):
    assert sources.ensure_raw("cifar10") == f"data folder {standin['folder']}"  # found and md5-verified
    x, y = data.load_tensors("cifar10", train=True)
    x_test, y_test = data.load_tensors("cifar10", train=False)
    assert x.shape == (5 * PER_BATCH, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x_test.shape == (N_TEST, 3, 32, 32) and sorted(y_test.unique().tolist()) == list(range(10))
    # Training rows are the five batches in order; pixels come back as written, normalised with CIFAR-10's stats.
    raw = np.concatenate([standin["written"][f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = np.concatenate([standin["written"][f"data_batch_{i}"][1] for i in range(1, 6)])
    assert torch.equal(y, torch.from_numpy(labels).long())
    assert torch.allclose(data.denormalize(x, "cifar10") * 255, torch.from_numpy(raw).float(), atol=1e-3)
    info = data.DATASETS["cifar10"]
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    assert torch.allclose(x, (torch.from_numpy(raw).float() / 255 - mean) / std, atol=1e-5)


def test_standin_file_failing_its_pin_is_rejected(standin):
    """The pinning still works with the stand-in's md5s: a changed file is deleted and, offline, not replaced."""
    path = standin["folder"] / "test_batch"
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(data.DataUnavailableError, match="test_batch fails its md5 check"):
            sources.ensure_raw("cifar10")
        assert not path.exists()
    finally:
        path.write_bytes(original)
    assert sources.ensure_raw("cifar10").startswith("data folder")


def test_resnet_teacher_learns_the_standin_and_is_cached(standin, teacher_run):
    teacher, info = teacher_run
    assert isinstance(teacher, CifarResNet) and not teacher.training
    assert info["n_train"] == 5 * PER_BATCH and info["n_test"] == N_TEST
    # Chance is 10%: one epoch must beat it by a wide margin, or the stand-in (or the path) is broken.
    assert info["test_accuracy"] >= 0.6, f"ResNet on the {STANDIN}: {info['test_accuracy']:.1%} after one epoch"
    rec = teachers.recipe("cifar10", **TEACHER_OVERRIDE)
    path = teachers.checkpoint_path("cifar10", rec)
    assert path.is_file() and path.parent.parent == standin["folder"].parent.parent / "cache"
    again, again_info = teachers.get_teacher("cifar10", recipe_override=TEACHER_OVERRIDE, options=QUIET)
    assert again is not teacher and again_info["train_seconds"] == info["train_seconds"]  # loaded, not retrained
    for (name, a), (_, b) in zip(teacher.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a.cpu(), b.cpu()), name
    x_test, _ = data.load_tensors("cifar10", train=False)
    assert torch.equal(predict_logits(teacher, x_test[:64]), predict_logits(again, x_test[:64]))


def test_students_and_model_table_on_the_standin(standin, teacher_run):
    teacher, info = teacher_run
    home = next(teacher.parameters()).device
    split = students.load_split("cifar10")
    runs = students.scratch_vs_distilled(lambda: CifarStudent(width=8), split, teacher, seeds=[0], num_epochs=1,
                                         lr=0.05, options=TrainOptions(batch_size=50, augment=data.random_crop_flip,
                                                                       optimizer="sgd", weight_decay=5e-4,
                                                                       progress=False))
    table = runs.table
    assert sorted(table["method"]) == ["distilled", "scratch"] and set(table["seed"]) == {0}
    assert (table["errors"] == ((1 - table["accuracy"]) * N_TEST).round().astype(int)).all()
    assert (table["accuracy"] > 0.5).all(), f"students on the {STANDIN} after one epoch:\n{table}"
    # The teacher ran on every augmented batch and was handed back where and as it was.
    assert next(teacher.parameters()).device == home and not teacher.training

    models = {"teacher (ResNet-8)": teacher, "student, distilled": runs.students[("distilled", 0)],
              "student, scratch": runs.students[("scratch", 0)]}
    deployed = deploy.model_table(models, split, input_shape=(3, 32, 32), repeats=2, rounds=1, batch_sizes=(1,))
    assert list(deployed.index) == list(models)
    assert deployed.loc["teacher (ResNet-8)", "params"] == count_params(teacher)
    assert deployed.loc["student, distilled", "params"] < deployed.loc["teacher (ResNet-8)", "params"]
    assert deployed.loc["teacher (ResNet-8)", "errors"] == info["test_errors"]
    for method in ("distilled", "scratch"):
        assert deployed.loc[f"student, {method}", "errors"] == int(table.set_index("method").loc[method, "errors"])
    assert (deployed["latency_ms_b1"] > 0).all() and deployed.loc["teacher (ResNet-8)", "speedup_b1"] == 1.0
