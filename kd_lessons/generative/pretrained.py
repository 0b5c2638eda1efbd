"""A real pretrained LLM as teacher (optional): SmolLM2-135M-Instruct, distilled from its cached top-k log-probs.

Introduced in notebook 10_generative_kd (its optional full-mode cell). The teacher and its loading
(`load_smollm2`, `missing`, `LLMExtraMissing`: the optional extra `llm`) live in generative.smollm2 and are
re-exported here. `cache_topk` keeps only what an LLM API returns, the top-k log-probs per position, in a
verified cache file; `distill_from_topk` trains a student that shares the teacher's tokenizer on them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kd_lessons import cache, config
from kd_lessons.generative.divergences import topk_kd_loss
from kd_lessons.generative.lm import LMOptions, train_lm
from kd_lessons.generative.smollm2 import (
    GGUF_FILE,
    INSTALL_COMMAND,
    LLMExtraMissing,
    available,
    gguf_path,
    load_smollm2,
    missing,
    unavailable_reason,
)

__all__ = ["INSTALL_COMMAND", "GGUF_FILE", "LLMExtraMissing", "missing", "available", "unavailable_reason",
           "gguf_path", "load_smollm2", "cache_topk", "TopkKD", "distill_from_topk", "evaluate_topk", "TopkExperiment",
           "compare_topk_vs_hard"]

def _logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = teacher(x)
    return out.logits if hasattr(out, "logits") else out


def _windows(tokenizer, text: str, context: int, max_windows: int | None) -> torch.Tensor:
    ids = tokenizer.encode(text, add_special_tokens=False)
    n = len(ids) // (context + 1)
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError(f"the text gives {len(ids)} tokens, fewer than one window of context + 1 = {context + 1}; "
                         f"pass more text or a smaller context")
    return torch.as_tensor(ids[:n * (context + 1)], dtype=torch.long).view(n, context + 1)


def _chars(tokenizer, windows: torch.Tensor) -> torch.Tensor | None:
    """Characters spelled by each window's target tokens, if decoding is exact (ASCII text, byte BPE)."""
    chars = torch.tensor([len(tokenizer.decode(w[1:].tolist(), clean_up_tokenization_spaces=False))
                          for w in windows])
    whole = tokenizer.decode(windows[:, 1:].reshape(-1).tolist(), clean_up_tokenization_spaces=False)
    return chars if int(chars.sum()) == len(whole) else None  # tokens split a character: no honest bits/char


@torch.no_grad()
def cache_topk(teacher: nn.Module, tokenizer, texts: str, k: int = 20, context: int = 64,
               max_windows: int | None = None,
               batch_size: int = 16, progress: bool = True) -> dict:
    """The teacher's top-k next-token log-probs on `texts`, cached verified: all an LLM API gives. Notebook 10.

    `texts` is tokenised without special tokens and cut into consecutive windows of context + 1
    tokens (at most `max_windows`). Returns plain data: ids [N, context + 1] (inputs and next
    tokens), topk_idx [N, context, k], topk_logprobs (log-probs over the whole vocabulary, so their
    exps sum to the top-k mass), topk_mass, teacher_nll (the teacher's own -log p of the next token),
    chars (characters per window's targets, or None when they cannot be counted honestly), k,
    context, vocab_size, build_seconds, from_cache. Named by the teacher's weights and the token ids.
    """
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    if not isinstance(k, int) or k < 1 or not isinstance(context, int) or context < 1:
        raise ValueError(f"k={k!r}, context={context!r}: use positive integers (an API gives k = 5 or 20)")
    windows = torch.cat([_windows(tokenizer, t, context, max_windows) for t in texts])[:max_windows]
    path = cache.path("logits", f"llm_topk_{cache.state_digest(teacher)}_{cache.tensor_digest(windows)}_k{k}.pt")
    meta = {"kind": "kd_lessons.llm_topk", "k": k, "context": context, "windows": len(windows)}
    built = []
    found = cache.build_once(path, meta, lambda: built.append(1) or _build_topk(teacher, tokenizer, windows, k,
                                                                                 batch_size, progress),
                             f"the teacher's cached top-{k} log-probs on {len(windows)} windows")
    return {**found, "from_cache": not built}


def _build_topk(teacher, tokenizer, windows, k, batch_size, progress) -> dict:
    device, was_training = next(teacher.parameters()).device, teacher.training
    teacher.eval()
    idx, lps, nll = [], [], []
    start = time.perf_counter()
    try:
        for rows in tqdm(torch.arange(len(windows)).split(batch_size), desc="teacher top-k", disable=not progress,
                         leave=False):
            w = windows[rows].to(device)
            logp = F.log_softmax(_logits(teacher, w[:, :-1]).float(), dim=-1)
            values, top = logp.topk(k, dim=-1)
            idx.append(top.cpu())
            lps.append(values.cpu())
            nll.append(-logp.gather(-1, w[:, 1:, None])[..., 0].cpu())
    finally:
        teacher.train(was_training)
    seconds = time.perf_counter() - start
    topk_logprobs = torch.cat(lps)
    return {"ids": windows, "topk_idx": torch.cat(idx), "topk_logprobs": topk_logprobs,
            "topk_mass": topk_logprobs.exp().sum(-1), "teacher_nll": torch.cat(nll),
            "chars": _chars(tokenizer, windows),
            "k": int(topk_logprobs.shape[-1]), "context": int(windows.shape[1] - 1),
            "vocab_size": int(len(tokenizer)), "build_seconds": seconds}


def _check_cached(cached, name: str = "cached") -> None:
    needed = ("ids", "topk_idx", "topk_logprobs", "teacher_nll", "chars")
    if not isinstance(cached, dict) or any(key not in cached for key in needed):
        raise ValueError(f"{name} must be the dict cache_topk(...) returns (with {', '.join(needed)}), "
                         f"got {type(cached).__name__}")


@dataclass(frozen=True)
class TopkKD:
    """How a student learns from cached top-k log-probs (`distill_from_topk`). Notebook 10_generative_kd."""

    steps: int
    lr: float = 3e-3
    batch_size: int = 16
    alpha: float = 1.0          # 1: top-k KD only; 0: hard next tokens only (the baseline)
    renormalize: bool = False   # topk_kd_loss over the top-k alone instead of a rest bucket
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha!r}: use a weight in [0, 1] (0 = hard tokens only, 1 = top-k KD only)")


def distill_from_topk(student: nn.Module, cached: dict, kd: TopkKD, device=None, progress: bool = True) -> dict:
    """Train `student` on cached top-k log-probs (kd.alpha = 1), hard next tokens (0) or a mix. Notebook 10.

    loss = alpha * topk_kd_loss(renormalize) + (1 - alpha) * cross-entropy on the text's next tokens;
    alpha = 0 is the baseline that never sees the teacher. The student must share the teacher's
    tokenizer (its logits are [B, context, vocab_size]). Uses the one LM loop (train_lm); returns its
    history. The student is trained in place and handed back on its device and in its mode.
    """
    _check_cached(cached)
    if not isinstance(kd, TopkKD):
        raise ValueError(f"kd must be a TopkKD(steps=..., ...), got {type(kd).__name__}")
    alpha, batch_size = kd.alpha, kd.batch_size
    ids, top_idx, top_lp = cached["ids"], cached["topk_idx"].long(), cached["topk_logprobs"].float()
    state = {}

    def batch_fn(generator):
        state["rows"] = rows = torch.randint(len(ids), (batch_size,), generator=generator)
        return ids[rows, :-1], ids[rows, 1:]

    def loss_fn(model, x, y):
        student_logits = model(x)
        flat = student_logits.reshape(-1, student_logits.shape[-1])
        hard = F.cross_entropy(flat, y.reshape(-1)) if alpha < 1 else 0.0
        if alpha == 0:
            return hard
        rows = state["rows"]
        soft = topk_kd_loss(student_logits, top_idx[rows].to(x.device), top_lp[rows].to(x.device),
                            renormalize=kd.renormalize)
        return alpha * soft + (1 - alpha) * hard

    return train_lm(student, None, kd.steps, lr=kd.lr, batch_size=batch_size, loss_fn=loss_fn, batch_fn=batch_fn,
                    options=LMOptions(seed=kd.seed, device=device, progress=progress,
                                      desc="top-k KD" if alpha else "hard tokens"))


@torch.no_grad()
def evaluate_topk(student: nn.Module, cached: dict, batch_size: int = 32) -> dict:
    """Held-out teacher-forced cross-entropy in the teacher's tokens and top-1 agreement with it. Notebook 10.

    nats_per_token: mean -log q(next token); bits_per_char: the same total in bits over the
    characters those tokens spell (None when they cannot be counted); top1_agreement: share of
    positions where the student's argmax is the teacher's; teacher_* give the teacher's own numbers.
    """
    _check_cached(cached)
    device, was_training = next(student.parameters()).device, student.training
    student.eval()
    nll, agree = 0.0, 0
    try:
        for rows in torch.arange(len(cached["ids"])).split(batch_size):
            w = cached["ids"][rows].to(device)
            logits = student(w[:, :-1]).float()
            nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum").item()
            agree += int((logits.argmax(-1).cpu() == cached["topk_idx"][rows][..., 0]).sum())
    finally:
        student.train(was_training)
    tokens, chars = cached["ids"][:, 1:].numel(), cached["chars"]
    teacher_nll = float(cached["teacher_nll"].double().sum())
    per_char = None if chars is None else 1 / (int(chars.sum()) * math.log(2))
    return {"nats_per_token": nll / tokens, "bits_per_char": None if per_char is None else nll * per_char,
            "top1_agreement": agree / tokens, "tokens": tokens, "chars": None if chars is None else int(chars.sum()),
            "teacher_nats_per_token": teacher_nll / tokens,
            "teacher_bits_per_char": None if per_char is None else teacher_nll * per_char}


@dataclass(frozen=True)
class TopkExperiment:
    """The budget of `compare_topk_vs_hard`; None: the mode's default (steps 100 / 4, windows 256 / 8, 64 / 4)."""

    steps: int | None = None
    k: int = 20
    context: int = 64
    train_windows: int | None = None
    val_windows: int | None = None
    batch_size: int = 8
    lr: float = 3e-3
    d_model: int = 64
    n_layers: int = 2
    renormalize: bool = False


def compare_topk_vs_hard(teacher: nn.Module, tokenizer, seeds=(0, 1, 2), setup: TopkExperiment | None = None,
                         progress: bool = True) -> dict:
    """The real-LLM experiment: students on the teacher's cached top-k vs on hard tokens, per seed. Notebook 10.

    Text: the course corpus (load_text("shakespeare")), training windows from its first 90% and
    held-out windows from the last 10% (the plays the character models never train on). Each seed
    trains one CharTransformer(vocab_size = the teacher's) per method from the same initial weights
    and budget (`setup`); with 49,152 tokens its embedding and output layer hold almost all its parameters.
    Results (plain data, cached under sweeps): rows, per-method mean/std, paired KD - hard per seed,
    the teacher's own held-out numbers and top-k mass, parameter counts and measured seconds.
    """
    from kd_lessons.generative.text import load_text
    from kd_lessons.generative.transformer import CharTransformer

    e = setup or TopkExperiment()
    steps, k = e.steps or config.pick(100, 4), e.k
    text = load_text("shakespeare")
    cut = int(round(len(text) * 0.9))  # text.split's rule: the held-out tail
    timings = {"load_teacher_s": getattr(teacher, "load_seconds", None)}
    start = time.perf_counter()
    train = cache_topk(teacher, tokenizer, text[:cut], k, e.context, e.train_windows or config.pick(256, 8),
                       progress=progress)
    val = cache_topk(teacher, tokenizer, text[cut:], k, e.context, e.val_windows or config.pick(64, 4),
                     progress=progress)
    timings.update(cache_s=time.perf_counter() - start, cache_build_s=train["build_seconds"] + val["build_seconds"],
                   from_cache=train["from_cache"] and val["from_cache"])
    settings = dict(seeds=list(seeds), steps=steps, k=k, context=e.context, batch_size=e.batch_size, lr=e.lr,
                    d_model=e.d_model, n_layers=e.n_layers, renormalize=e.renormalize,
                    train=cache.tensor_digest(train["ids"]), val=cache.tensor_digest(val["ids"]),
                    teacher=cache.state_digest(teacher))

    def build() -> dict:
        rows = []
        for seed in seeds:
            for method, alpha in (("hard tokens", 0.0), (f"top-{k} KD", 1.0)):
                torch.manual_seed(seed)
                student = CharTransformer(len(tokenizer), e.d_model, e.n_layers, 4, e.context)
                history = distill_from_topk(student, train, TopkKD(steps, e.lr, e.batch_size, alpha, e.renormalize,
                                                                   seed), progress=progress)
                rows.append({"method": method, "seed": seed, **evaluate_topk(student, val),
                             "train_seconds": history["seconds"]})
        timings["results_from_cache"] = False
        return {"rows": rows, "settings": settings,
                "student": {"params": sum(p.numel() for p in student.parameters()),
                            "vocab_params": sum(p.numel() for p in student.parameters() if len(tokenizer) in p.shape)},
                "teacher": {"params": sum(p.numel() for p in teacher.parameters()),
                            "nats_per_token": rows[0]["teacher_nats_per_token"],
                            "bits_per_char": rows[0]["teacher_bits_per_char"],
                            "topk_mass_train": float(train["topk_mass"].mean()),
                            "topk_mass_val": float(val["topk_mass"].mean())}}

    timings["results_from_cache"] = True
    result = cache.build_once(cache.path("sweeps", f"llm_topk_vs_hard_{cache.key(settings)}.pt"),
                              {"kind": "kd_lessons.llm_topk_vs_hard"}, build, "the real-LLM distillation results")
    return {**result, "timings": timings, "summary": _summary(result["rows"])}


def _summary(rows: list[dict]) -> dict:
    """Per method mean and std over seeds, and the per-seed paired difference (KD - hard)."""
    metrics = ("nats_per_token", "bits_per_char", "top1_agreement", "train_seconds")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        out[method] = {m: _mean_std([r[m] for r in mine]) for m in metrics if mine[0][m] is not None}
    if len(methods) == 2:
        hard, kd = ([r for r in rows if r["method"] == m] for m in methods)
        out["paired (KD - hard)"] = {m: [b[m] - a[m] for a, b in zip(hard, kd)]
                                     for m in metrics[:3] if hard[0][m] is not None}
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(t) > 1 else 0.0
