"""Characters as ids and the next-character windows a language model trains on (split from generative.text).

Introduced in notebook 10_generative_kd: `CharVocab` (the character-level tokenizer), `split` (a contiguous
held-out tail), `sample_windows` (random training batches) and `iterate_windows` (teacher-forced evaluation).
`kd_lessons.generative.text` re-exports them beside the corpus they encode.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["CharVocab", "split", "sample_windows", "iterate_windows"]


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
