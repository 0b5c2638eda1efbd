"""The character-level teacher, trained once and cached as a verified checkpoint, and the students it teaches.

Introduced in notebook 10_generative_kd. `get_text_teacher(corpus)` returns `(teacher, info)`: a
`CharTransformer` in eval mode and its measured held-out bits per character, sampling speed,
parameters and training time. The checkpoint is cache kind "teachers", named
`text-<corpus>-<quick|full>-<recipe key>.pt` (sha256 sidecar), built once by `cache.build_once`
(check, lock, check, build, save); a corrupt or foreign file is warned about, deleted and
retrained, never used. `make_text_student` builds the (at least 8x smaller) students;
`text_model_table` puts teacher and students side by side.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kd_lessons import cache, config
from kd_lessons.generative.lm import LMOptions, train_lm
from kd_lessons.generative.text import TEXT_CORPORA, load_corpus
from kd_lessons.generative.transformer import CharTransformer, bits_per_char, generate, tokens_per_second
from kd_lessons.models import count_params
from kd_lessons.recipes import Recipe, check_recipe, pick

__all__ = ["TextTeacherRecipe", "text_recipe", "STUDENT_SIZES", "student_sizes", "build_text_model",
           "text_checkpoint_path", "get_text_teacher", "make_text_student", "text_model_table", "SAMPLE_PROMPT"]

SAMPLE_PROMPT = "HAMLET.\n"
# Students: (d_model, n_layers, n_heads); full mode and quick mode (both at least 8x smaller than that mode's teacher).
STUDENT_SIZES = {"full": {"tiny": (32, 1, 2), "small": (48, 2, 2)},
                 "quick": {"tiny": (8, 1, 2), "small": (16, 1, 2)}}


def _corpus(corpus: str) -> str:
    if corpus not in TEXT_CORPORA:
        raise ValueError(f"corpus={corpus!r} is not a text corpus; use one of {list(TEXT_CORPORA)}")
    return corpus


@dataclass(frozen=True)
class TextTeacherRecipe(Recipe):
    """The text teacher's architecture and training budget in the current mode. Notebook 10_generative_kd."""

    corpus: str = "shakespeare"
    corpus_sha256: str | None = None  # None: the pinned checksum of `corpus`
    arch: str = "CharTransformer"
    d_model: int = pick(128, 64)
    n_layers: int = pick(4, 2)
    n_heads: int = pick(4, 2)
    context: int = pick(64, 32)
    dropout: float = 0.0
    steps: int = pick(800, 60)
    batch_size: int = pick(64, 32)
    lr: float = 3e-3
    weight_decay: float = 0.01
    val_fraction: float = 0.1
    eval_chars: int | None = pick(None, 20_000)
    seed: int = 0

    def __post_init__(self):
        if self.corpus_sha256 is None:
            object.__setattr__(self, "corpus_sha256", TEXT_CORPORA[_corpus(self.corpus)].sha256)
        super().__post_init__()

    def _check(self) -> None:
        self._positive("d_model", "n_layers", "n_heads", "context", "steps", "batch_size", "lr", "eval_chars")
        self._between("dropout", 0.0, 0.9)
        self._between("weight_decay", 0.0, 1.0)
        self._between("val_fraction", 0.01, 0.5)
        if self.d_model % self.n_heads:
            self._fail("n_heads", f"must divide d_model={self.d_model}")


def text_recipe(corpus: str = "shakespeare", **overrides) -> TextTeacherRecipe:
    """The teacher's architecture and training budget in the current mode. Notebook 10_generative_kd.

    Full mode: 4 layers of width 128, 64-character context, 800 AdamW steps of 64 windows (3.3M
    characters, about two passes over the training text). Quick mode: a 2-layer width-64 model and
    60 steps (seconds; smoke tests only).
    """
    return TextTeacherRecipe(corpus=_corpus(corpus), **check_recipe(TextTeacherRecipe, overrides))


def student_sizes() -> dict:
    """The student sizes of the current mode: name -> (d_model, n_layers, n_heads)."""
    return dict(STUDENT_SIZES[config.mode()])


def build_text_model(rec: TextTeacherRecipe, vocab_size: int) -> CharTransformer:
    """An untrained CharTransformer as a recipe describes it."""
    return CharTransformer(vocab_size, rec.d_model, rec.n_layers, rec.n_heads, rec.context, rec.dropout)


def text_checkpoint_path(corpus: str = "shakespeare", rec: TextTeacherRecipe | None = None) -> Path:
    """Where the text teacher of `corpus` (and this recipe) is cached."""
    rec = rec if rec is not None else text_recipe(corpus)
    return cache.path("teachers", f"text-{rec.corpus}-{config.mode()}-{rec.key}.pt")


def _meta(rec: TextTeacherRecipe) -> dict:
    return {"recipe_hash": rec.key, "corpus": rec.corpus, "kind": "kd_lessons.text_teacher"}


def _load(path: Path, rec: TextTeacherRecipe) -> tuple[CharTransformer, dict]:
    """(teacher, info) from a verified checkpoint; raises FileNotFoundError or one of cache.UNUSABLE if unusable."""
    return cache.load_checkpoint(path, _meta(rec), lambda info: build_text_model(rec, len(info["vocab"])))


def _train(rec: TextTeacherRecipe, device, progress: bool) -> tuple[CharTransformer, dict]:
    """Train the teacher from its recipe and measure it on the held-out text."""
    corpus = load_corpus(rec.corpus, rec.val_fraction)  # DataUnavailableError when missing
    torch.manual_seed(rec.seed)
    teacher = build_text_model(rec, corpus.vocab_size)
    cpu_start = time.process_time()
    history = train_lm(teacher, corpus.train, rec.steps, lr=rec.lr, batch_size=rec.batch_size,
                       options=LMOptions(context=rec.context, seed=rec.seed, weight_decay=rec.weight_decay,
                                         val_data=corpus.val, eval_chars=rec.eval_chars or 50_000, device=device,
                                         progress=progress, desc=f"text teacher ({config.mode()})"))
    cpu_seconds = time.process_time() - cpu_start
    teacher.to(device).eval()
    generator = torch.Generator().manual_seed(rec.seed)
    prompt = corpus.vocab.encode(SAMPLE_PROMPT)
    sample = corpus.vocab.decode(generate(teacher, prompt, config.pick(300, 60), generator=generator))
    info = {"corpus": rec.corpus, "label": TEXT_CORPORA[rec.corpus].label, "vocab": corpus.vocab.chars,
            "params": count_params(teacher),
            "val_bpc": bits_per_char(teacher, corpus.val, rec.context, max_chars=rec.eval_chars),
            "val_chars": len(corpus.val) if rec.eval_chars is None else min(len(corpus.val), rec.eval_chars),
            "tokens_per_second": tokens_per_second(teacher, config.pick(200, 20)),
            "train_seconds": round(history["seconds"], 1), "train_cpu_seconds": round(cpu_seconds, 1),
            "steps": rec.steps, "steps_per_second": history["steps_per_second"],
            "train_chars": rec.steps * rec.batch_size * rec.context, "device": str(device),
            "threads": torch.get_num_threads(), "sample": sample,
            "history": {k: history[k] for k in ("step", "train_loss", "val_step", "val_bpc")}, "recipe": rec.asdict()}
    return teacher, info


def get_text_teacher(corpus: str = "shakespeare", device=None, retrain: bool = False,
                     recipe_override: dict | None = None, progress: bool = True) -> tuple[CharTransformer, dict]:
    """(teacher in eval mode, info), from the verified cache or trained now. Notebook 10_generative_kd.

    info: corpus, vocab (its characters), params, val_bpc (held-out bits/char), tokens_per_second,
    train_seconds, steps, sample (generated text), history and recipe. `recipe_override` replaces
    recipe keys (tests use tiny ones); `progress` shows a tqdm bar if it trains.
    """
    device = config.resolve_device(device)
    rec = text_recipe(corpus, **(recipe_override or {}))
    path = text_checkpoint_path(corpus, rec)

    def save(built, file):
        cache.save_checkpoint(*built, file, {**_meta(rec), "val_bpc": built[1]["val_bpc"],
                                             "train_seconds": built[1]["train_seconds"]})

    teacher, info = cache.build_once(path, _meta(rec), lambda: _train(rec, device, progress),
                                     f"the {corpus} text teacher", save=save, load=lambda file: _load(file, rec),
                                     refresh=retrain)
    return teacher.to(device).eval(), info


def make_text_student(vocab_size: int, size: str = "small", seed: int = 0, context: int | None = None,
                      corpus: str = "shakespeare") -> CharTransformer:
    """An untrained student (see student_sizes()), seeded, with the teacher recipe's context. Notebook 10."""
    sizes = student_sizes()
    if size not in sizes:
        raise ValueError(f"size={size!r}: use one of {list(sizes)} (d_model, n_layers, n_heads: {sizes})")
    d_model, n_layers, n_heads = sizes[size]
    context = context or text_recipe(corpus).context
    torch.manual_seed(seed)
    return CharTransformer(vocab_size, d_model, n_layers, n_heads, context, dropout=0.0)


def text_model_table(models: dict, val_data: torch.Tensor, context: int | None = None, max_chars: int | None = None,
                     num_tokens: int | None = None) -> pd.DataFrame:
    """Params, held-out bits/char and sampling speed of each model, side by side. Notebook 10_generative_kd.

    `models`: name -> model (the first is the reference for the 'x fewer params' column). tokens/s
    is measured now (batch 1, `num_tokens` ids), so it depends on the machine and its load.
    """
    if not models:
        raise ValueError("models is empty; pass e.g. {'teacher': teacher, 'student': student}")
    num_tokens = num_tokens or config.pick(200, 20)
    rows, ref = [], None
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise ValueError(f"models[{name!r}] is a {type(model).__name__}; pass CharTransformer models")
        params = count_params(model)
        ref = ref or params
        rows.append({"model": name, "params": params, "x fewer params": ref / params,
                     "val_bpc": bits_per_char(model, val_data, context or model.context, max_chars=max_chars),
                     "tokens_per_s": tokens_per_second(model, num_tokens)})
    return pd.DataFrame(rows)
