"""What a language-model student writes, measured: the teacher's and its own bits/char, distinct-2, known words.

Introduced in notebook 10_generative_kd (runs.lm_students measures every student and reference text with these).
The teacher's bits/char of a student's samples, E_q[-log2 p], is a cross-entropy: a sharpened or collapsed
student lowers it without getting closer to the teacher. The student's own bits/char on the same samples,
E_q[-log2 q] (its entropy rate at the sampling temperature), subtracted from it gives E_q[log2 q - log2 p]: a
Monte-Carlo estimate of the reverse KL(student || teacher) per character, which is 0 only for a student that
samples like the teacher and grows when it sharpens away from it.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from kd_lessons.generative.text import Corpus
from kd_lessons.generative.transformer import generate, token_log_probs

__all__ = ["word_set", "text_measures", "sample_log_probs", "sample_measures"]

_WORD = re.compile(r"[A-Za-z]+")
LN2 = math.log(2.0)


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
    """distinct-2 (unique word bigrams / all bigrams, pooled over the continuations) and the share of known words.

    Bigrams are taken inside each continuation and pooled: a bigram repeated across continuations counts as a
    repeat. With a few hundred bigrams distinct-2 has little power; the sample entropy (sample_measures) does.
    """
    bigrams, words = [], []
    for p, c in zip(prompts, continuations):
        w = _inner_words(p, c)
        words += w
        bigrams += list(zip(w, w[1:]))
    return {"distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else float("nan"),
            "word_share": sum(w in vocabulary for w in words) / len(words) if words else float("nan"),
            "words": len(words)}


def sample_log_probs(model, texts: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """log q_T(text[t+1] | text[:t+1]) [B, L-1] under softmax(logits / T): what the sampler at T assigned."""
    if not T > 0:
        raise ValueError(f"T={T!r}: the sampling temperature must be > 0 (1.0 = the model's own distribution)")
    if T == 1.0:
        return token_log_probs(model, texts)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            x, y = texts[:, :-1].to(device), texts[:, 1:].to(device)
            logq = F.log_softmax(model(x).float() / T, dim=-1)
            return logq.gather(-1, y[..., None])[..., 0].cpu()
    finally:
        model.train(was)


def sample_measures(model, teacher, prompts: torch.Tensor, num_tokens: int, corpus: Corpus, vocabulary: frozenset,
                    seed: int = 0, texts: torch.Tensor | None = None, T: float = 1.0) -> dict:
    """What a model writes from the prompts at temperature T: teacher's and own bits/char, reverse KL, words.

    teacher_bpc_of_samples = E_q[-log2 p] (gameable by sharpening), own_bpc_of_samples = E_q[-log2 q_T] (the
    sampler's entropy rate), reverse_kl_bpc = their difference (Monte-Carlo reverse KL per character, bits).
    `texts` (ids [n, prompt + num_tokens]) measures given text instead of sampling (e.g. the real continuations);
    with model=None the own and reverse-KL columns are NaN (no sampler to ask). Notebook 10_generative_kd.
    """
    if texts is None:
        if model is None:
            raise ValueError("pass a model to sample from, or texts= (ids [n, prompt + num_tokens]) to measure")
        texts = generate(model, prompts, num_tokens, T=T, generator=torch.Generator().manual_seed(seed))
    P = prompts.shape[1]
    logp = token_log_probs(teacher, texts)[:, P - 1:]  # the teacher scores the continuation only
    decode = corpus.vocab.decode
    out = text_measures([decode(t[:P]) for t in texts], [decode(t[P:]) for t in texts], vocabulary)
    out["teacher_bpc_of_samples"] = float(-logp.mean() / LN2)
    if model is None:
        out["own_bpc_of_samples"] = out["reverse_kl_bpc"] = float("nan")
    else:
        logq = sample_log_probs(model, texts, T)[:, P - 1:]
        out["own_bpc_of_samples"] = float(-logq.mean() / LN2)
        out["reverse_kl_bpc"] = float((logq - logp).mean() / LN2)
    out["example"] = decode(texts[0])
    return out
