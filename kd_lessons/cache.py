"""Atomic, checksum-verified files and the one cache layout, so a crash never leaves half a file.

Introduced in notebook 00_start_here. Everything cached lives at `cache_dir()/<kind>/<name>` (`path`), named by
`key(...)` (a short hash of what the content depends on), written with `save_verified` (sha256 sidecar), read with
`load_verified` / `load_or_none`. Kinds: tensors (datasets, corpora), teachers (checkpoints), logits, sweeps.
Cached work is built by `build_once(file, meta, build, what)`: check, `lock(file, what)` (a file lock beside the
cache file, so two processes or threads never build the same thing twice: the second says it waits, waits, then
finds the file built), check again, build, save.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterator

import filelock
import torch

from kd_lessons import config

__all__ = ["CorruptFileError", "CacheWarning", "KINDS", "path", "key", "sidecar", "tensor_digest", "state_digest",
           "file_digest", "sha256_bytes", "atomic_path", "atomic_write_bytes", "save_verified", "load_verified",
           "load_or_none", "discard", "lock", "lock_path", "waiting", "LockTimeout", "build_once", "UNUSABLE",
           "save_checkpoint", "load_checkpoint"]

KINDS = ("tensors", "teachers", "logits", "sweeps")


class CorruptFileError(RuntimeError):
    """A file's content does not match its recorded checksum or cannot be decoded."""


class CacheWarning(UserWarning):
    """A cached file was corrupt or belonged to another setting; it was deleted and will be rebuilt."""


class LockTimeout(TimeoutError):
    """`lock(..., timeout=...)` gave up: another process kept building the same file for too long."""


def path(kind: str, name: str) -> Path:
    """The cache file `name` of one kind: the only place the cache layout is spelled out."""
    if kind not in KINDS:
        raise ValueError(f"cache kind {kind!r} is not known; use one of {list(KINDS)}")
    return config.cache_dir() / kind / name


def key(*parts: Any) -> str:
    """A 12-hex-digit name for whatever the content depends on (dicts, numbers, strings, recipe dataclasses)."""
    blob = parts[0] if len(parts) == 1 else parts
    return sha256_bytes(json.dumps(blob, sort_keys=True, default=_plain).encode())[:12]


def _plain(obj: Any):
    """A recipe (any dataclass) hashes as its dict, so cache.key(rec) == cache.key(rec.asdict()); else str(obj)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else str(obj)


def sidecar(file: str | os.PathLike) -> Path:
    """The checksum file written beside `file` by save_verified."""
    return Path(file).with_name(Path(file).name + ".sha256.json")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def file_digest(file: str | os.PathLike, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file (sha256 or md5, the latter for torchvision's CIFAR pins), read in chunks."""
    if algo not in ("sha256", "md5"):
        raise ValueError(f"algo={algo!r}: use 'sha256' or 'md5'")
    h = hashlib.new(algo)
    with open(file, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """16 hex digits naming a tensor's exact content (shape, dtype and bytes)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}{t.dtype}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def state_digest(model: torch.nn.Module) -> str:
    """16 hex digits naming a model's exact weights: cached logits are tied to the teacher that made them."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor_digest(tensor).encode())
    return h.hexdigest()[:16]


@contextmanager
def atomic_path(file: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `file`; rename it into place only if the block succeeds."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=file.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(file: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `file` atomically and return the path."""
    with atomic_path(file) as tmp:
        tmp.write_bytes(data)
    return Path(file)


def save_verified(obj: Any, file: str | os.PathLike, meta: dict | None = None) -> str:
    """torch.save `obj` atomically and record its sha256 (plus `meta`) in a sidecar; return the hash."""
    torch.save(obj, buf := io.BytesIO())
    data = buf.getvalue()
    digest = sha256_bytes(data)
    atomic_write_bytes(file, data)
    record = {"sha256": digest, "bytes": len(data), **(meta or {})}
    atomic_write_bytes(sidecar(file), json.dumps(record, indent=1).encode())
    return digest


def load_verified(file: str | os.PathLike, meta: dict | None = None) -> Any:
    """Load a file written by `save_verified`; raise CorruptFileError if hash or `meta` mismatch."""
    file = Path(file)
    side = sidecar(file)
    if not file.exists() or not side.exists():
        raise FileNotFoundError(f"{file} (or its checksum file {side.name}) does not exist")
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{side} is unreadable ({exc}); delete {file} and rebuild it") from exc
    data = file.read_bytes()
    if sha256_bytes(data) != record.get("sha256"):
        raise CorruptFileError(f"{file} does not match its recorded sha256: the file is corrupt or was "
                               f"changed; delete it and it will be rebuilt")
    for name, value in (meta or {}).items():
        if record.get(name) != value:
            raise CorruptFileError(f"{file} was saved with {name}={record.get(name)!r}, expected {value!r}: "
                                   f"it belongs to another configuration")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad pickles
        raise CorruptFileError(f"{file} matches its checksum but cannot be loaded ({exc})") from exc


def load_or_none(file: str | os.PathLike, meta: dict | None = None, what: str = "cache file") -> Any:
    """The verified content, or None when absent; a corrupt or foreign file is warned about and deleted."""
    try:
        return load_verified(file, meta)
    except FileNotFoundError:
        return None
    except CorruptFileError:  # a writer may be between its two renames: judge the file once it is done
        with lock(file, what):
            found = _judged(file, lambda f: load_verified(f, meta), what)
        return None if found is _ABSENT else found


def discard(file: str | os.PathLike, reason: Exception | str, what: str = "cache file") -> None:
    """Warn (CacheWarning) that a cached file is unusable and delete it with its sidecar, to be rebuilt."""
    warnings.warn(f"{what} {file} was unusable ({reason}); it was deleted and will be rebuilt",
                  CacheWarning, stacklevel=3)
    for p in (Path(file), sidecar(file)):
        p.unlink(missing_ok=True)


UNUSABLE = (CorruptFileError, RuntimeError, KeyError, TypeError)  # bad checksum/meta, weights that do not fit, ...
_ABSENT = object()


def _judged(file, load: Callable[[Any], Any], what: str) -> Any:
    """Inside the lock: the loaded value, or _ABSENT when there is none (an unusable file is warned about, deleted)."""
    try:
        return load(file)
    except FileNotFoundError:
        return _ABSENT
    except UNUSABLE as exc:  # the message names the error type when it is not a checksum or meta mismatch
        discard(file, exc if isinstance(exc, CorruptFileError) else f"{type(exc).__name__}: {exc}", what)
        return _ABSENT


def build_once(file: str | os.PathLike, meta: dict | None, build: Callable[[], Any], what: str = "cache file",
               save: Callable[[Any, Any], Any] | None = None, load: Callable[[Any], Any] | None = None,
               refresh: bool = False) -> Any:
    """The cached value of `build()`, built once however many processes ask. Introduced in notebook 00_start_here.

    Check (`load_verified(file, meta)` or `load(file)`), `lock(file, what)`, check again (the lock's last holder may
    have built it), build, save atomically with a sha256 sidecar (`save_verified(value, file, meta)` or `save`).
    A file whose load raises one of UNUSABLE (corrupt, another configuration, weights that do not fit) is warned
    about (CacheWarning), deleted and rebuilt; refresh=True rebuilds anyway. A failed build writes nothing.
    """
    load = load if load is not None else (lambda f: load_verified(f, meta))
    save = save if save is not None else (lambda value, f: save_verified(value, f, meta))
    if not refresh:
        with suppress(FileNotFoundError, *UNUSABLE):  # quiet: a file being written now is judged inside the lock
            return load(file)
    with lock(file, what):
        found = _ABSENT if refresh else _judged(file, load, what)
        if found is _ABSENT:
            found = build()
            save(found, file)
        return found


def save_checkpoint(model: torch.nn.Module, info: dict, file: str | os.PathLike, meta: dict | None = None) -> str:
    """Save a model's weights (on the CPU) and its info dict as a verified file: the teachers' checkpoint format."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_verified({"state_dict": state, "info": info}, file, meta)


def load_checkpoint(file: str | os.PathLike, meta: dict | None, make: Callable[[dict], torch.nn.Module]):
    """(model, info) from a `save_checkpoint` file: `make(info)` builds the untrained model the weights fill."""
    blob = load_verified(file, meta)
    (model := make(info := dict(blob["info"]))).load_state_dict(blob["state_dict"])
    return model, info


_THREAD = threading.local()        # this thread's FileLock per lock file: reentrant within the thread
_HELD: dict[str, int] = {}         # lock files held by some thread of this process (for the message)
_WAITING: dict[int, str] = {}      # thread id -> what it is waiting for (for `waiting()`)
_STATE = threading.Lock()


def lock_path(file: str | os.PathLike) -> Path:
    """The lock file beside a cache file: `<file>.lock`."""
    return Path(file).with_name(Path(file).name + ".lock")


def waiting() -> list[str]:
    """What this process's threads are waiting for now (the app can show it beside its progress bars)."""
    with _STATE:
        return list(_WAITING.values())


@contextmanager
def lock(file: str | os.PathLike, what: str, timeout: float | None = None) -> Iterator[Path]:
    """Hold the cross-process lock of a cache file while building it; yields the lock file's path.

    Introduced in notebook 00_start_here. Inside the block, check the cache again before building (the last holder
    may have just written it). When another process (or thread) holds it, says "waiting for another process that is
    building <what> (<lock file>)" once on stderr and waits; after `timeout` seconds (None: no limit) raises
    LockTimeout. Reentrant within one thread; the OS releases it when its holder exits.
    """
    path = lock_path(file)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.abspath(path)
    mine = _THREAD.__dict__.setdefault("locks", {})
    # One FileLock object per thread and file: reentrant here, exclusive against other threads' objects
    # (flock excludes other open files even in the same process) and against other processes.
    if (flock := mine.get(key)) is None:
        flock = mine[key] = filelock.FileLock(str(path))
    try:
        try:
            flock.acquire(timeout=0)
        except filelock.Timeout:
            with _STATE:
                who = "thread of this process" if _HELD.get(key) else "process"
                message = f"waiting for another {who} that is building {what} ({path})"
                _WAITING[threading.get_ident()] = message
            print(message, file=sys.stderr, flush=True)
            try:
                flock.acquire(timeout=-1 if timeout is None else timeout)
            except filelock.Timeout:
                raise LockTimeout(f"gave up after {timeout:g} s waiting for {path}, held by another process building "
                                  f"{what}. The OS releases a lock when its holder exits, so that process still runs: "
                                  f"let it finish or stop it (a hung notebook kernel: restart it). If none is left (a "
                                  f"network file system can keep a lock), it is stale: delete {path}, run again."
                                  ) from None
            finally:
                with _STATE:
                    _WAITING.pop(threading.get_ident(), None)
        with _STATE:
            _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield path
        finally:
            with _STATE:
                _HELD[key] -= 1
                if not _HELD[key]:
                    del _HELD[key]
            flock.release()
    finally:
        if not flock.is_locked:
            mine.pop(key, None)
