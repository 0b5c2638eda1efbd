"""Atomic, checksum-verified files, so a crash or a bad download never leaves a half-written file.

Used by `kd_lessons.data` (downloads, decoded-tensor cache) and `kd_lessons.train` (teacher
checkpoints); introduced in notebook 00_start_here.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

__all__ = ["CorruptFileError", "sha256_file", "sha256_bytes", "atomic_path", "atomic_write_bytes",
           "save_verified", "load_verified"]


class CorruptFileError(RuntimeError):
    """A file's content does not match its recorded checksum or cannot be decoded."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so big files do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def save_verified(obj: Any, path: str | os.PathLike, meta: dict | None = None) -> str:
    """torch.save `obj` atomically and record its sha256 (plus `meta`) in a sidecar; return the hash."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    digest = sha256_bytes(data)
    atomic_write_bytes(path, data)
    record = {"sha256": digest, "bytes": len(data), **(meta or {})}
    atomic_write_bytes(_sidecar(path), json.dumps(record, indent=1).encode())
    return digest


def load_verified(path: str | os.PathLike, meta: dict | None = None) -> Any:
    """Load a file written by `save_verified`; raise CorruptFileError if hash or `meta` mismatch."""
    path = Path(path)
    side = _sidecar(path)
    if not path.exists() or not side.exists():
        raise FileNotFoundError(f"{path} (or its checksum file {side.name}) does not exist")
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{side} is unreadable ({exc}); delete {path} and rebuild it") from exc
    data = path.read_bytes()
    if sha256_bytes(data) != record.get("sha256"):
        raise CorruptFileError(f"{path} does not match its recorded sha256: the file is corrupt or was "
                               f"changed; delete it and it will be rebuilt")
    for key, value in (meta or {}).items():
        if record.get(key) != value:
            raise CorruptFileError(f"{path} was saved with {key}={record.get(key)!r}, expected {value!r}: "
                                   f"it belongs to another configuration")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad pickles
        raise CorruptFileError(f"{path} matches its checksum but cannot be loaded ({exc})") from exc
