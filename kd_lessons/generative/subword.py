"""A real subword tokenizer for cross-tokenizer KD: GPT-2-style byte-level BPE (Hugging Face `tokenizers`).

Introduced in lesson 16 (cross-tokenizer KD). `load_subword_corpus(corpus)` trains a byte-level BPE of
`vocab_size` tokens (the 256 bytes, then the most frequent merges, GPT-2's pre-tokenizer regex) on the corpus's
training split only, encodes both splits, and caches tokenizer and ids once (cache kind "tensors", verified,
built under cache.lock). Training is deterministic (same text, same merges, same ids). Every token keeps its text
(`SubwordVocab.strings`), so any token sequence maps back to characters: `bits_per_character` measures a token
model on the tokenizer-independent scale (total nats / characters / ln 2), comparable with a character model's
`transformer.bits_per_char`. The byte alphabet gives single-character tokens other ids than CharVocab's
(`single_char_ids`), as real tokenizers of two model families do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from kd_lessons import cache
from kd_lessons.generative.text import CharVocab, Corpus, iterate_windows
from kd_lessons.generative.transformer import _evaluating

__all__ = ["BPE_VOCAB", "SubwordVocab", "SubwordCorpus", "train_bpe", "load_subword_corpus", "bits_per_character"]

BPE_VOCAB = 512  # 256 bytes + 256 merges


def _tokenizers():
    try:
        import tokenizers
    except ImportError as exc:  # a core dependency; an old environment may lack it
        raise ImportError("the cross-tokenizer lesson needs Hugging Face `tokenizers`: pip install 'tokenizers>=0.20'"
                          ) from exc
    return tokenizers


@dataclass(frozen=True)
class SubwordVocab:
    """A trained BPE tokenizer (its JSON) and each token's text: subword ids <-> text. Notebook 16."""

    tokenizer_json: str

    @cached_property
    def tokenizer(self):
        return _tokenizers().Tokenizer.from_str(self.tokenizer_json)

    @cached_property
    def strings(self) -> tuple[str, ...]:
        """The text of every token id (a lone non-ASCII byte decodes to U+FFFD; this corpus never uses one)."""
        return tuple(self.tokenizer.decode([i]) for i in range(self.size))

    @property
    def size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __len__(self) -> int:
        return self.size

    def encode(self, text: str) -> torch.Tensor:
        """int64 token ids of `text` (any text: bytes always have a token)."""
        return torch.tensor(self.tokenizer.encode(text).ids, dtype=torch.long)

    def decode(self, ids) -> str:
        """The text of a 1-D sequence of token ids: the tokens' strings joined."""
        ids = torch.as_tensor(ids).detach().cpu().reshape(-1).tolist()
        if any(not 0 <= i < self.size for i in ids):
            raise ValueError(f"ids outside 0..{self.size - 1}; decode ids made by this tokenizer")
        return "".join(self.strings[i] for i in ids)

    @cached_property
    def char_lengths(self) -> torch.Tensor:
        """Characters per token id, int64 [V]: what bits per character divides by."""
        return torch.tensor([len(s) for s in self.strings], dtype=torch.long)

    def char_table(self, chars: CharVocab) -> torch.Tensor:
        """[V, longest token] char ids of each token's text, -1 after its end or for a character `chars` lacks."""
        table = torch.full((self.size, int(self.char_lengths.max())), -1, dtype=torch.long)
        known = set(chars.chars)
        for i, s in enumerate(self.strings):
            if s and set(s) <= known:
                table[i, :len(s)] = chars.encode(s)
        return table

    def single_char_ids(self, chars: CharVocab) -> torch.Tensor:
        """For each char id of `chars`, the id of the one-character token with the same text (-1: none): the ids
        where the two vocabularies coincide (rarely the same numbers)."""
        where = {s: i for i, s in enumerate(self.strings) if len(s) == 1}
        return torch.tensor([where.get(c, -1) for c in chars.chars], dtype=torch.long)


def train_bpe(text: str, vocab_size: int = BPE_VOCAB) -> SubwordVocab:
    """A byte-level BPE of `vocab_size` tokens trained on `text` (deterministic). Notebook 16."""
    tk = _tokenizers()
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 257 <= vocab_size <= 65536:
        raise ValueError(f"vocab_size={vocab_size!r}: a byte-level BPE needs the 256 bytes plus at least one merge "
                         "(e.g. 512)")
    if not text:
        raise ValueError("text is empty; train the tokenizer on the corpus's training text")
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                     show_progress=False, special_tokens=[])
    tok.train_from_iterator([text], trainer)
    return SubwordVocab(tok.to_str())


@dataclass
class SubwordCorpus:
    """A character corpus re-encoded by a BPE trained on its training split: ids per split and their offsets."""

    corpus: Corpus
    vocab: SubwordVocab
    train: torch.Tensor
    val: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    def offsets(self, ids: torch.Tensor) -> torch.Tensor:
        """Character offset where each token starts, plus the end: int64 [len(ids) + 1]."""
        return F.pad(self.vocab.char_lengths[ids].cumsum(0), (1, 0))

    def chars_per_token(self) -> float:
        """Mean characters per training token (the tokenizer's compression)."""
        return len(self.corpus.train) / len(self.train)

    def val_prefix(self, max_chars: int | None) -> torch.Tensor:
        """The held-out tokens covering (at most) the first `max_chars` characters of Corpus.val."""
        if max_chars is None:
            return self.val
        return self.val[:int(torch.searchsorted(self.offsets(self.val), max_chars, right=True)) - 1]


def load_subword_corpus(corpus: Corpus, vocab_size: int = BPE_VOCAB) -> SubwordCorpus:
    """`corpus` re-encoded by a BPE trained on its training split, cached once (build_once). Notebook 16."""
    cut = len(corpus.train)
    train_text, val_text = corpus.text[:cut], corpus.text[cut:]
    version = _tokenizers().__version__
    name = cache.key({"train": cache.sha256_bytes(train_text.encode()), "val": len(val_text),
                      "vocab_size": vocab_size, "tokenizers": version, "version": 1})
    file = cache.path("tensors", f"bpe-{corpus.name}-{vocab_size}-{name}.pt")
    meta = {"kind": "kd_lessons.subword_corpus", "key": name}

    def build():
        vocab = train_bpe(train_text, vocab_size)
        return {"tokenizer": vocab.tokenizer_json, "train": vocab.encode(train_text), "val": vocab.encode(val_text)}

    blob = cache.build_once(file, meta, build, f"the {vocab_size}-token BPE of {corpus.name}")
    return SubwordCorpus(corpus, SubwordVocab(blob["tokenizer"]), blob["train"], blob["val"])


def bits_per_character(model, ids: torch.Tensor, vocab: SubwordVocab, context: int | None = None,
                       batch_size: int = 64) -> float:
    """Teacher-forced cross-entropy of a token model in bits per CHARACTER: nats / characters / ln 2. Notebook 16.

    `ids` (1-D token ids, e.g. SubwordCorpus.val_prefix(n)) is cut into consecutive windows of `context` tokens;
    every token after a window's first is predicted once, and the characters of those tokens are the divisor.
    """
    context = context or model.context
    total, chars = 0.0, 0
    device = next(model.parameters()).device
    with _evaluating(model):
        for x, y in iterate_windows(ids, context, batch_size, device=device):
            logits = model(x).float()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            chars += int(vocab.char_lengths[y.cpu()].sum())
    return total / chars / math.log(2)
