"""The teacher's logits as data: what storing them costs, and a real on-disk top-k store with a rest bucket.

Introduced for lesson 16 (part 3). The arithmetic (bytes per position for the full vocabulary or for top-k values +
ids + one rest value, and per corpus) is kd_lessons.generative.logit_memory's, re-exported here.
The store: shards of raw little-endian arrays (`shard-NNNNN.bin`: ids, values, rest; `tokens-NNNNN.bin`: the
windows they belong to), each written atomically with a sha256 sidecar (kd_lessons.cache), and a manifest written
last. `write_store` skips shards that already verify, so a crash or a corrupt shard costs that shard only;
`read_store` verifies every shard and names the bad one and how to rewrite it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kd_lessons import cache
from kd_lessons.generative.divergences import check_mask
from kd_lessons.generative.logit_memory import (
    INDEX_BYTES,
    VALUE_BYTES,
    corpus_bytes,
    full_bytes_per_position,
    human_bytes,
    index_dtype_for,
    memory_table,
    topk_bytes_per_position,
)
from kd_lessons.generative.transfer_data import teacher_logits

__all__ = ["VALUE_BYTES", "INDEX_BYTES", "index_dtype_for", "full_bytes_per_position", "topk_bytes_per_position",
           "corpus_bytes", "human_bytes", "memory_table", "StoreLayout", "encode_topk", "CorruptShardError",
           "write_store", "read_store", "verify_store", "store_bytes", "stored_kd_loss"]

_NP_VALUE = {"fp32": np.float32, "fp16": np.float16, "bf16": np.uint16}  # bf16: its raw 16 bits (numpy has none)
_NP_INDEX = {"uint8": np.uint8, "uint16": np.uint16, "int32": np.int32}
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StoreLayout:
    """What one stored position holds: top-k ids and log-probs in the given dtypes, and the rest bucket or not."""

    k: int
    vocab_size: int
    value_dtype: str = "fp16"
    index_dtype: str | None = None  # None: the narrowest that fits (index_dtype_for)
    rest: bool = True

    def __post_init__(self):
        if self.index_dtype is None:
            object.__setattr__(self, "index_dtype", index_dtype_for(self.vocab_size))
        topk_bytes_per_position(self.k, self.vocab_size, self.value_dtype, self.index_dtype, self.rest)

    @property
    def bytes_per_position(self) -> int:
        return topk_bytes_per_position(self.k, self.vocab_size, self.value_dtype, self.index_dtype, self.rest)


def encode_topk(teacher_logits: torch.Tensor, k: int, T: float = 1.0):
    """(ids int64 [..., k], log-probs [..., k], rest log-prob [...]) of logits: what the store keeps. Notebook 16.

    The rest is log(1 - sum of the k probabilities), taken as the log of the sum of the other probabilities, so it
    never suffers the cancellation of 1 - sum (it is -inf at k = V, where nothing is left).
    """
    log_p = F.log_softmax(teacher_logits.detach().float() / T, dim=-1)
    values, ids = log_p.topk(k, dim=-1)
    rest = log_p.exp().scatter_(-1, ids, 0.0).sum(-1).log()
    return ids, values, rest


class CorruptShardError(cache.CorruptFileError):
    """A shard of a top-k store is missing, truncated or changed; the message names it and what to do."""


def _to_numpy(t: torch.Tensor, dtype: str, table: dict) -> np.ndarray:
    if dtype == "bf16":
        return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)
    return t.numpy().astype(table[dtype])


def _write_file(file: Path, data: bytes, meta: dict) -> None:
    cache.atomic_write_bytes(file, data)
    record = {"sha256": cache.sha256_bytes(data), "bytes": len(data), **meta}
    cache.atomic_write_bytes(cache.sidecar(file), json.dumps(record, indent=1).encode())


def _problem(file: Path, meta: dict) -> str | None:
    """Why `file` is unusable (missing, unreadable sidecar, wrong size or sha256, another store's), or None."""
    side = cache.sidecar(file)
    if not file.exists() or not side.exists():
        return f"{file} (or its checksum file) is missing"
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        return f"{side} is unreadable ({exc})"
    if (size := file.stat().st_size) != record.get("bytes"):
        return f"{file} has {size:,} bytes but was written with {record.get('bytes'):,} (truncated or appended to)"
    if cache.file_digest(file) != record.get("sha256"):
        return f"{file} does not match its recorded sha256 (corrupt or changed)"
    wrong = {key: record.get(key) for key, value in meta.items() if record.get(key) != value}
    return f"{file} belongs to another store ({wrong})" if wrong else None


def _check_file(file: Path, meta: dict) -> None:
    """Raise CorruptShardError, saying what to do, unless `file` verifies."""
    if (problem := _problem(file, meta)) is not None:
        raise CorruptShardError(f"{problem}; run write_store again with the same teacher and windows: it rewrites "
                                f"only this shard and keeps the others (or delete {file.name} and "
                                f"{cache.sidecar(file).name} now and rewrite later)")


def _shard_meta(layout: StoreLayout, rows: int, context: int, meta: dict) -> dict:
    return {"kind": "kd_lessons.topk_shard", "rows": rows, "context": context, **asdict(layout), **meta}


def _logits(teacher, x: torch.Tensor, rows: slice) -> torch.Tensor:
    if isinstance(teacher, torch.Tensor):  # the logits themselves, [n, context, V]
        return teacher[rows]
    return teacher_logits(teacher, x) if isinstance(teacher, torch.nn.Module) else teacher(x)


def write_store(directory, windows: torch.Tensor, teacher, layout: StoreLayout, shard_windows: int = 256,
                T: float = 1.0, meta: dict | None = None) -> dict:
    """Write the teacher's top-k (+ rest) at every position of `windows` [n, context + 1] in shards. Notebook 16.

    `teacher(x)` returns logits [rows, context, V] (a module runs in eval mode, without a graph), or `teacher` is
    those logits for all the windows (a tensor [n, context, V], e.g. to write several k). Shards that already
    verify are kept, so rerunning after a crash or a corrupt shard redoes only that shard. Returns the manifest
    (written last, atomically: layout, shards, rows, positions, meta) and shards_written.
    """
    directory, meta = Path(directory), dict(meta or {})
    if windows.dim() != 2 or windows.shape[1] < 2 or len(windows) < 1:
        raise ValueError(f"windows must be int ids [n, context + 1], got shape {list(windows.shape)}")
    context, shards, written = windows.shape[1] - 1, [], 0
    for i, start in enumerate(range(0, len(windows), shard_windows)):
        rows = windows[start:start + shard_windows]
        shard, tokens = directory / f"shard-{i:05d}.bin", directory / f"tokens-{i:05d}.bin"
        shard_meta = _shard_meta(layout, len(rows), context, meta)
        shards.append({"shard": shard.name, "tokens": tokens.name, "rows": len(rows)})
        if _problem(shard, shard_meta) is None and _problem(tokens, shard_meta) is None:
            continue  # already there and intact
        ids, values, rest = encode_topk(_logits(teacher, rows[:, :-1], slice(start, start + len(rows))), layout.k, T)
        parts = [_to_numpy(ids, layout.index_dtype, _NP_INDEX), _to_numpy(values, layout.value_dtype, _NP_VALUE)]
        parts += [_to_numpy(rest, layout.value_dtype, _NP_VALUE)] if layout.rest else []
        _write_file(shard, b"".join(p.tobytes() for p in parts), shard_meta)
        _write_file(tokens, _to_numpy(rows, layout.index_dtype, _NP_INDEX).tobytes(), shard_meta)
        written += 1
    manifest = {"kind": "kd_lessons.topk_store", "layout": asdict(layout), "context": context, "T": T,
                "rows": len(windows), "positions": len(windows) * context, "shards": shards, "meta": meta}
    cache.atomic_write_bytes(directory / MANIFEST, json.dumps(manifest, indent=1).encode())
    return {**manifest, "shards_written": written}


def _manifest(directory: Path) -> tuple[dict, StoreLayout]:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} holds no {MANIFEST}: the store was never finished; run write_store "
                                "(it keeps the shards already written)") from None
    except ValueError as exc:
        raise cache.CorruptFileError(f"{directory / MANIFEST} is unreadable ({exc}); delete it and run "
                                     "write_store again (the shards are kept)") from exc
    return manifest, StoreLayout(**manifest["layout"])


def verify_store(directory) -> list[str]:
    """The problems of a store, one line per bad file (empty when every shard verifies). Notebook 16."""
    (manifest, layout), problems = _manifest(Path(directory)), []
    for entry in manifest["shards"]:
        for name in (entry["shard"], entry["tokens"]):
            try:
                _check_file(Path(directory) / name, _shard_meta(layout, entry["rows"], manifest["context"],
                                                                manifest["meta"]))
            except CorruptShardError as exc:
                problems.append(str(exc))
    return problems


def _from_numpy(a: np.ndarray, dtype: str, shape) -> torch.Tensor:
    a = np.array(a).reshape(shape)  # a copy: the memmap is closed afterwards
    if dtype == "bf16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).float()
    return torch.from_numpy(a.astype(np.float32 if dtype in VALUE_BYTES else np.int64))


def read_store(directory, verify: bool = True) -> dict:
    """The whole store, verified shard by shard, as tensors (read through numpy memmap). Notebook 16.

    Returns {"tokens" int64 [n, context + 1], "ids" int64 [n, context, k], "logprobs" float32 [n, context, k],
    "rest" float32 [n, context] (None without a rest bucket), "layout", "manifest"}. A bad shard raises
    CorruptShardError naming it and saying how to rewrite it (the other shards are kept).
    """
    directory = Path(directory)
    manifest, layout = _manifest(directory)
    L = manifest["context"]
    if verify and (problems := verify_store(directory)):
        raise CorruptShardError(problems[0] + (f" ({len(problems) - 1} more bad files)" if len(problems) > 1 else ""))
    k, out = layout.k, {"tokens": [], "ids": [], "logprobs": [], "rest": []}
    ib, vb = INDEX_BYTES[layout.index_dtype], VALUE_BYTES[layout.value_dtype]
    ids_np, values_np = _NP_INDEX[layout.index_dtype], _NP_VALUE[layout.value_dtype]
    for entry in manifest["shards"]:
        n = entry["rows"]
        raw = np.memmap(directory / entry["shard"], dtype=np.uint8, mode="r")
        a, b = n * L * k * ib, n * L * k * (ib + vb)  # the ends of the ids and of the values
        out["ids"].append(_from_numpy(raw[:a].view(ids_np), layout.index_dtype, (n, L, k)))
        out["logprobs"].append(_from_numpy(raw[a:b].view(values_np), layout.value_dtype, (n, L, k)))
        if layout.rest:
            out["rest"].append(_from_numpy(raw[b:].view(values_np), layout.value_dtype, (n, L)))
        tokens = np.memmap(directory / entry["tokens"], dtype=ids_np, mode="r")
        out["tokens"].append(_from_numpy(tokens, layout.index_dtype, (n, L + 1)))
        del raw, tokens
    joined = {key: torch.cat(parts) if parts else None for key, parts in out.items()}
    return {**joined, "layout": layout, "manifest": manifest}


def store_bytes(directory) -> dict:
    """Bytes on disk, measured from the files: top-k shards, token files, sidecars + manifest, per position."""
    directory = Path(directory)
    manifest, layout = _manifest(directory)
    size = {"shards": 0, "tokens": 0, "overhead": (directory / MANIFEST).stat().st_size}
    for entry in manifest["shards"]:
        for key, name in (("shards", entry["shard"]), ("tokens", entry["tokens"])):
            size[key] += (directory / name).stat().st_size
            size["overhead"] += cache.sidecar(directory / name).stat().st_size
    positions = manifest["positions"]
    return {**size, "positions": positions, "topk_bytes_per_position": size["shards"] / positions,
            "all_bytes_per_position": sum(size.values()) / positions,
            "arithmetic_bytes_per_position": layout.bytes_per_position}


def stored_kd_loss(student_logits: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor,
                   rest: torch.Tensor | None = None, renormalize: bool = False, mask=None) -> torch.Tensor:
    """Forward KL from stored top-k: over the k + 1 outcomes (rest bucket), or renormalised over the k. Notebook 16.

    The teacher's stored values (k, plus the rest unless renormalize) are normalised together, since fp16 rounding
    leaves their exps a little off 1; the student's rest is the logsumexp of its other log-probs, so nothing is
    computed as 1 - sum. Mean over the positions of `mask` (all when None).
    """
    if rest is None and not renormalize:
        raise ValueError("the rest bucket needs the stored rest log-probs (read_store(...)['rest']); pass them, "
                         "or renormalize=True for the top-k alone")
    mask = check_mask(mask, student_logits.shape[:-1])
    log_q_all = F.log_softmax(student_logits.float(), dim=-1)
    log_q, log_p = log_q_all.gather(-1, ids), logprobs.detach().float()
    if not renormalize:
        fill = torch.finfo(log_q_all.dtype).min / 2  # finite, so the gradient stays finite when k = V
        log_q = torch.cat([log_q, torch.logsumexp(log_q_all.scatter(-1, ids, fill), -1, keepdim=True)], -1)
        log_p = torch.cat([log_p, rest.detach().float()[..., None]], -1)
    log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
    per_position = torch.where(log_p > float("-inf"), log_p.exp() * (log_p - log_q), 0.0).sum(-1)
    return per_position.mean() if mask is None else per_position[mask].mean()
