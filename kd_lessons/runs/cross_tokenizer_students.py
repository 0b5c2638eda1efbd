"""Cross-tokenizer KD side by side: a character teacher, BPE students, one budget, several seeds.

Introduced in lesson 16 (cross-tokenizer KD). `run(rec, teacher, corpus, seeds)` trains, per seed (each seed
redraws the student's init and its batch order): a BPE student from the text alone ("scratch"); a character
student of the same width and depth from the text alone ("char scratch") and distilled by per-token forward KL
("same-tokenizer KD": what KD gives when the tokenizers match); and BPE students distilled across tokenizers with
kd_lessons.generative.cross_tokenizer's losses ("index-matched KL", the silent failure; "ULD"; "alignment"), each
mixed with cross-entropy by alpha. All are scored on the same held-out characters in bits per CHARACTER (the
tokenizer-independent scale), and every BPE student on one fixed held-out batch by all three cross-tokenizer
losses (does each method lower its own loss?). The KD-term curves of the training runs are kept. The result
(plain data) is cached (kind "sweeps") by recipe, seeds, mode, corpus and the teacher's weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from kd_lessons import cache, config
from kd_lessons.generative import cross_tokenizer as xt
from kd_lessons.generative.lm import LMOptions, cross_entropy_loss, train_lm
from kd_lessons.generative.lm_objectives import TokenKD
from kd_lessons.generative.subword import SubwordCorpus, bits_per_character, load_subword_corpus
from kd_lessons.generative.text import Corpus, iterate_windows
from kd_lessons.generative.transformer import bits_per_char
from kd_lessons.generative.zoo import make_text_student
from kd_lessons.models import count_params
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs import seeds as by_seed
from kd_lessons.stats import paired, verdict

__all__ = ["METHODS", "CHAR_METHODS", "CrossTokenizerRecipe", "recipe", "held_out_losses", "train_method", "run",
           "cached_run", "summarize", "versus_scratch", "kd_curve"]

CHAR_METHODS = ("char scratch", "same-tokenizer KD")  # character students; every other method trains a BPE student
METHODS = ("scratch", *CHAR_METHODS, *xt.KINDS)


@dataclass(frozen=True)
class CrossTokenizerRecipe(Recipe):
    """The comparison's budget in the current mode (students: zoo.student_sizes()). Notebook 16."""

    size: str = "small"
    bpe_vocab: int = 512
    token_context: int = pick(32, 16)  # BPE tokens: about the teacher's context in characters (1.9 chars a token)
    steps: int = pick(200, 12)
    batch_size: int = 16
    lr: float = 3e-3
    T: float = 1.0
    alpha: float = 0.5  # weight of the KD term; 1 - alpha on cross-entropy (ULD's paper mixes both)
    eval_chars: int = pick(20_000, 1_500)
    held_out_windows: int = pick(64, 8)
    methods: tuple[str, ...] = METHODS
    threads: int | None = 1

    def _check(self) -> None:
        self._one_of("size", ("tiny", "small"))
        self._positive("bpe_vocab", "token_context", "steps", "batch_size", "lr", "T", "eval_chars",
                       "held_out_windows", "threads")
        self._between("alpha", 0.0, 1.0)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or "scratch" not in self.methods:
            raise ValueError(f"methods={self.methods!r}: use names of {METHODS}, scratch included (the baseline)")


def recipe(**overrides) -> CrossTokenizerRecipe:
    """The comparison's recipe in the current mode; overrides replace fields. Notebook 16."""
    return CrossTokenizerRecipe(**check_recipe(CrossTokenizerRecipe, overrides))


def held_out_losses(student, teacher, align: xt.CharAlignment, windows: torch.Tensor) -> dict:
    """The three cross-tokenizer KD losses of a BPE student on fixed held-out windows [N, L] (alpha = 1)."""
    was = student.training
    student.eval()
    with torch.no_grad():
        logits = student(windows)
        out = {f"held-out {kind}": xt.CrossTokenizerKD(kind, teacher, align).kd(logits, windows).item()
               for kind in xt.KINDS}
    student.train(was)
    return out


def _plugin(method, teacher, align, rec, memo=None):
    if method in ("scratch", "char scratch"):
        return cross_entropy_loss
    if method == "same-tokenizer KD":
        return TokenKD(teacher, T=rec.T, alpha=rec.alpha)
    return xt.CrossTokenizerKD(method, teacher, align, alpha=rec.alpha, T=rec.T, memo=memo)


def train_method(method: str, teacher, sub: SubwordCorpus, align: xt.CharAlignment, rec: CrossTokenizerRecipe,
                 seed: int, held_out: torch.Tensor, memo: dict | None = None) -> tuple[dict, dict | None]:
    """One student's row (bits/char, params, seconds, held-out KD losses) and its KD-term log (None: no KD term).

    memo: the seed's teacher logits per window, shared by its cross-tokenizer runs (same windows, same numbers).
    """
    corpus = sub.corpus
    char = method in CHAR_METHODS
    context = teacher.context if char else rec.token_context
    student = make_text_student(corpus.vocab_size if char else sub.vocab_size, rec.size, seed=seed, context=context)
    loss_fn = _plugin(method, teacher, align, rec, memo)
    history = train_lm(student, corpus.train if char else sub.train, rec.steps, lr=rec.lr, batch_size=rec.batch_size,
                       loss_fn=loss_fn, options=LMOptions(context=context, seed=seed, progress=False, desc=method))
    if char:
        bpc = bits_per_char(student, corpus.val[:rec.eval_chars], context)
    else:
        bpc = bits_per_character(student, sub.val_prefix(rec.eval_chars), sub.vocab, context)
    row = {"method": method, "seed": seed, "tokenizer": "char" if char else f"BPE-{sub.vocab_size}", "val_bpc": bpc,
           "params": count_params(student), "seconds": history["seconds"]}
    if not char:
        row.update(held_out_losses(student, teacher, align, held_out))
    return row, getattr(loss_fn, "log", None)


def run(rec: CrossTokenizerRecipe, teacher, corpus: Corpus, seeds=(0, 1, 2), progress: bool = True) -> dict:
    """Every method x seed: rows, KD-term logs, the teacher's bits/char, the tokenizer's numbers. Notebook 16."""
    if not seeds:
        raise ValueError("seeds is empty; pass e.g. seeds=(0, 1, 2)")
    threads = torch.get_num_threads()
    if rec.threads:
        torch.set_num_threads(rec.threads)  # tiny models: extra threads only add overhead on a busy CPU
    try:
        sub = load_subword_corpus(corpus, rec.bpe_vocab)
        align = xt.CharAlignment(sub.vocab, corpus.vocab)
        held_out = torch.cat([x for x, _ in iterate_windows(sub.val, rec.token_context, rec.held_out_windows,
                                                            rec.held_out_windows)])
        rows, logs, memo = [], {}, {}
        plan = [(m, s) for s in seeds for m in rec.methods]
        for method, seed in tqdm(plan, desc="cross-tokenizer students", disable=not progress):
            if method == rec.methods[0]:
                memo = {}  # a new seed: new windows
            row, log = train_method(method, teacher, sub, align, rec, seed, held_out, memo)
            rows.append(row)
            if log is not None:
                logs.setdefault(method, {})[seed] = log
        mapped = align.single_char_ids
        return {"table": rows, "logs": logs, "recipe": rec.asdict(), "seeds": list(seeds),
                "teacher_bpc": bits_per_char(teacher, corpus.val[:rec.eval_chars], teacher.context),
                "chars_per_token": sub.chars_per_token(), "bpe_vocab": sub.vocab_size, "char_vocab": corpus.vocab_size,
                "single_char_tokens": int((mapped >= 0).sum()),
                "same_index": int((mapped == torch.arange(len(mapped))).sum())}
    finally:
        torch.set_num_threads(threads)


def cached_run(rec: CrossTokenizerRecipe, teacher, corpus: Corpus, seeds=(0, 1, 2), progress: bool = True,
               refresh: bool = False) -> dict:
    """`run`, cached (cache.build_once) by recipe, seeds, mode, corpus and teacher weights. Notebook 16."""
    blob_key = cache.key({"recipe": rec.asdict(), "seeds": list(seeds), "mode": config.mode(), "corpus": corpus.name,
                          "text": cache.sha256_bytes(corpus.text.encode()), "teacher": cache.state_digest(teacher),
                          "version": 1})
    path = cache.path("sweeps", f"cross-tokenizer-{config.mode()}-{blob_key}.pt")
    meta = {"key": blob_key, "kind": "kd_lessons.cross_tokenizer_runs"}
    return cache.build_once(path, meta, lambda: run(rec, teacher, corpus, seeds, progress),
                            "the cross-tokenizer KD comparison", refresh=refresh)


def summarize(result: dict) -> pd.DataFrame:
    """Mean and sample std of bits/char (and seconds) per method. Notebook 16."""
    return by_seed.summarize(result["table"], ("val_bpc", "seconds"))


def versus_scratch(result: dict, baseline: str = "scratch") -> pd.DataFrame:
    """Each method minus `baseline` in held-out bits/char: paired per seed, 95% t-interval, verdict. Notebook 16."""
    table = pd.DataFrame(result["table"])
    wide = table.pivot_table(index="seed", columns="method", values="val_bpc", aggfunc="first")
    rows = []
    for method in [m for m in table["method"].unique() if m != baseline]:
        d = paired(wide[method], wide[baseline])
        rows.append({"method": method, "minus": baseline, "mean": d.mean, "low": d.low, "high": d.high, "n": d.n,
                     "verdict": verdict(d, higher_is_better=False)})
    return pd.DataFrame(rows).set_index("method")


def kd_curve(result: dict, method: str = "index-matched KL", share: float = 0.1) -> dict:
    """Per seed, the KD term's mean over the first and the last `share` of the steps (does it fall?). Notebook 16."""
    if method not in result["logs"]:
        raise ValueError(f"no KD log for {method!r}; have {sorted(result['logs'])}")
    out = {}
    for seed, log in result["logs"][method].items():
        kd = log["kd"]
        n = max(1, round(share * len(kd)))
        out[seed] = {"first": sum(kd[:n]) / n, "last": sum(kd[-n:]) / n}
    return out
