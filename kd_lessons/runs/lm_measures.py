"""What a language-model student writes, measured: distinct word bigrams, known-word share, the teacher's bits/char.

Introduced in notebook 10_generative_kd (runs.lm_students measures every student and reference text with these).
"""
from __future__ import annotations

import re

import torch

from kd_lessons.generative.text import Corpus
from kd_lessons.generative.transformer import generate, token_log_probs

__all__ = ["word_set", "text_measures", "sample_measures"]

_WORD = re.compile(r"[A-Za-z]+")


def word_set(text: str) -> frozenset:
    """The lower-cased words (letters only) of a text: the 'dictionary' generated words are checked against."""
    return frozenset(w.lower() for w in _WORD.findall(text))


def _inner_words(prompt: str, continuation: str) -> list[str]:
    """Words wholly inside the continuation (a word cut by the prompt boundary or the end is dropped)."""
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(continuation)]
    if words and words[0][0] == 0 and prompt[-1:].isalpha():
        words = words[1:]
    if words and words[-1][1] == len(continuation):
        words = words[:-1]
    return [w for _, _, w in words]


def text_measures(prompts: list[str], continuations: list[str], vocabulary: frozenset) -> dict:
    """distinct-2 (unique word bigrams / all, per continuation) and the share of words in `vocabulary`."""
    bigrams, words = [], []
    for p, c in zip(prompts, continuations):
        w = _inner_words(p, c)
        words += w
        bigrams += list(zip(w, w[1:]))
    return {"distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else float("nan"),
            "word_share": sum(w in vocabulary for w in words) / len(words) if words else float("nan"),
            "words": len(words)}


def sample_measures(model, teacher, prompts: torch.Tensor, num_tokens: int, corpus: Corpus, vocabulary: frozenset,
                    seed: int = 0, texts: torch.Tensor | None = None) -> dict:
    """What a model writes from the prompts: the teacher's bits/char of it, distinct-2, known-word share.

    `texts` (ids [n, prompt + num_tokens]) measures given text instead of sampling (e.g. the real continuations).
    """
    if texts is None:
        texts = generate(model, prompts, num_tokens, generator=torch.Generator().manual_seed(seed))
    P = prompts.shape[1]
    logp = token_log_probs(teacher, texts)[:, P - 1:]  # the teacher scores the continuation only
    decode = corpus.vocab.decode
    out = text_measures([decode(t[:P]) for t in texts], [decode(t[P:]) for t in texts], vocabulary)
    out["teacher_bpc_of_samples"] = float(-logp.mean() / torch.log(torch.tensor(2.0)))
    out["example"] = decode(texts[0])
    return out
