"""What storing a teacher's next-token distributions costs: bytes per position and per corpus, by hand.

Introduced for lesson 16 (part 3); re-exported by kd_lessons.generative.logit_store. Full vocabulary: V values
per position in fp32 / fp16 / bf16. Top-k: k values + k token ids in the narrowest id dtype that fits the
vocabulary (uint8 up to 256 tokens, uint16 up to 65,536, else int32) + one rest value (the mass outside the top k).
"""
from __future__ import annotations

__all__ = ["VALUE_BYTES", "INDEX_BYTES", "INDEX_LIMIT", "index_dtype_for", "full_bytes_per_position",
           "topk_bytes_per_position", "corpus_bytes", "human_bytes", "memory_table"]

VALUE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
INDEX_BYTES = {"uint8": 1, "uint16": 2, "int32": 4}
INDEX_LIMIT = {"uint8": 2 ** 8, "uint16": 2 ** 16, "int32": 2 ** 31}


def _check_choice(name: str, value, table: dict) -> str:
    if value not in table:
        raise ValueError(f"{name}={value!r}: use one of {list(table)}")
    return value


def index_dtype_for(vocab_size: int) -> str:
    """The narrowest token-id dtype that holds every id of the vocabulary (uint8 <= 256 <= uint16 <= 65,536)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size!r}: a vocabulary has a positive whole number of tokens")
    return next(name for name, limit in INDEX_LIMIT.items() if vocab_size <= limit)


def full_bytes_per_position(vocab_size: int, dtype: str = "fp16") -> int:
    """Bytes of one position's full next-token distribution (one value per vocabulary entry)."""
    index_dtype_for(vocab_size)
    return vocab_size * VALUE_BYTES[_check_choice("dtype", dtype, VALUE_BYTES)]


def topk_bytes_per_position(k: int, vocab_size: int, value_dtype: str = "fp16", index_dtype: str | None = None,
                            rest: bool = True) -> int:
    """Bytes of one position's top-k: k values + k token ids (+ one rest value). Notebook 16."""
    index_dtype = index_dtype or index_dtype_for(vocab_size)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab_size:
        raise ValueError(f"k={k!r}: use a whole number in [1, vocab_size={vocab_size}]")
    if vocab_size > INDEX_LIMIT[_check_choice("index_dtype", index_dtype, INDEX_BYTES)]:
        raise ValueError(f"index_dtype={index_dtype} holds ids below {INDEX_LIMIT[index_dtype]:,}, but the "
                         f"vocabulary has {vocab_size:,} tokens; use {index_dtype_for(vocab_size)} or int32")
    value = VALUE_BYTES[_check_choice("value_dtype", value_dtype, VALUE_BYTES)]
    return k * (value + INDEX_BYTES[index_dtype]) + (value if rest else 0)


def corpus_bytes(bytes_per_position: int, tokens: int = 10 ** 9) -> int:
    """Bytes for a whole corpus: one stored distribution per token position (1B tokens by default)."""
    return int(bytes_per_position) * int(tokens)


def human_bytes(n: float) -> str:
    """A byte count in binary units, e.g. 98,304 -> '96.0 KiB'."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def memory_table(vocab_size: int, ks=(1, 5, 20, 100), tokens: int = 10 ** 9, value_dtype: str = "fp16") -> list[dict]:
    """What storing the teacher costs per position and per corpus: full fp32/fp16/bf16, then top-k. Notebook 16."""
    ids = index_dtype_for(vocab_size)
    rows = [(f"full vocabulary, {d}", full_bytes_per_position(vocab_size, d)) for d in VALUE_BYTES]
    rows += [(f"top-{k}, {value_dtype} values + {ids} ids" + (" + rest" if rest else ""),
              topk_bytes_per_position(k, vocab_size, value_dtype, ids, rest))
             for k in ks if k <= vocab_size for rest in (False, True)]
    return [{"layout": name, "bytes_per_position": b, "corpus_bytes": corpus_bytes(b, tokens),
             "corpus": human_bytes(corpus_bytes(b, tokens))} for name, b in rows]
