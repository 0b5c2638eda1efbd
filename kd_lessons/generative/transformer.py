"""A character-level causal Transformer (GPT-style, attention in plain PyTorch), sampling and its measures.

Introduced in notebook 10_generative_kd. `CharTransformer(idx)` returns next-character logits
[B, L, V]: position t sees positions <= t only (the causal mask). `generate` samples text (T, top-k,
greedy), `bits_per_char` is the held-out teacher-forced cross-entropy in bits, `token_log_probs`
scores given sequences (e.g. a teacher scoring a student's samples), `tokens_per_second` times
generation. Each leaves the caller's model on its device and in its train/eval mode.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.generative.text import iterate_windows

__all__ = ["CharTransformer", "generate", "bits_per_char", "token_log_probs", "tokens_per_second"]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position attends only to itself and earlier positions."""

    def __init__(self, d_model: int, n_heads: int, context: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("mask", torch.tril(torch.ones(context, context, dtype=torch.bool)), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, L, D = h.shape
        q, k, v = self.qkv(h).split(D, dim=2)
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))  # [B, H, L, d]
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.n_heads)                          # [B, H, L, L]
        scores = scores.masked_fill(~self.mask[:L, :L], float("-inf"))  # no peeking at later characters
        weights = self.drop(F.softmax(scores, dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(B, L, D)
        return self.drop(self.proj(out))


class Block(nn.Module):
    """Pre-norm Transformer block: h + attention(norm(h)), then h + MLP(norm(h))."""

    def __init__(self, d_model: int, n_heads: int, context: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, context, dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model),
                                 nn.Dropout(dropout))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.ln1(h))
        return h + self.mlp(self.ln2(h))


class CharTransformer(nn.Module):
    """Token + position embeddings, n_layers causal blocks, a final norm, a linear head. Notebook 10_generative_kd."""

    def __init__(self, vocab_size: int, d_model: int = 128, n_layers: int = 4, n_heads: int = 4, context: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        if min(vocab_size, d_model, n_layers, n_heads, context) < 1 or d_model % n_heads:
            raise ValueError(f"vocab_size={vocab_size}, d_model={d_model}, n_layers={n_layers}, n_heads={n_heads}, "
                             f"context={context}: all must be >= 1 and d_model divisible by n_heads")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r}: use a probability in [0, 1)")
        self.hparams = dict(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                            context=context, dropout=dropout)
        self.vocab_size, self.context = vocab_size, context
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, context, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, return_features: bool = False):
        """Logits [B, L, vocab_size] for ids [B, L] (L <= context); with return_features also each block's output."""
        if idx.dim() != 2 or idx.shape[1] > self.context or idx.is_floating_point():
            raise ValueError(f"idx must be integer ids [batch, length <= {self.context}], got "
                             f"{idx.dtype} {tuple(idx.shape)}; crop to the last {self.context} ids")
        h = self.drop(self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device)))
        features = []
        for block in self.blocks:
            h = block(h)
            features.append(h)
        logits = self.head(self.ln_f(h))
        return (logits, features) if return_features else logits


class _evaluating:
    """Eval mode and no grad inside; the caller's train/eval mode restored after."""

    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.grad = torch.no_grad()
        self.grad.__enter__()
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        self.grad.__exit__(*exc)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def generate(model: CharTransformer, prompt_idx: torch.Tensor, num_tokens: int, T: float = 1.0,
             top_k: int | None = None, greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Prompt + `num_tokens` sampled ids ([L] -> [L + n], [B, L] -> [B, L + n]). Notebook 10_generative_kd.

    Samples from softmax(logits / T), restricted to the top_k ids if given; greedy takes the argmax.
    Only the last `model.context` ids are fed back. Same generator seed, same text.
    """
    if not T > 0 or num_tokens < 0:
        raise ValueError(f"T={T!r}, num_tokens={num_tokens!r}: use T > 0 (1.0 = the model's distribution) and n >= 0")
    if top_k is not None and not 1 <= top_k <= model.vocab_size:
        raise ValueError(f"top_k={top_k!r}: use None or an integer in 1..{model.vocab_size}")
    one = prompt_idx.dim() == 1
    idx = (prompt_idx[None] if one else prompt_idx).to(_device(model))
    if idx.shape[1] < 1:
        raise ValueError("prompt_idx is empty; pass at least one id (e.g. the id of '\\n')")
    with _evaluating(model):
        for _ in range(num_tokens):
            logits = model(idx[:, -model.context:])[:, -1, :] / T
            if greedy:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                if top_k is not None:
                    kth = logits.topk(top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits.float(), dim=-1)
                where = generator.device if generator is not None else probs.device
                nxt = torch.multinomial(probs.to(where), 1, generator=generator).to(idx.device)
            idx = torch.cat([idx, nxt], dim=1)
    idx = idx.to(prompt_idx.device)
    return idx[0] if one else idx


def token_log_probs(model: CharTransformer, idx: torch.Tensor) -> torch.Tensor:
    """log p(idx[:, t+1] | idx[:, :t+1]) for each t: [B, L-1] (L <= context + 1). Notebook 10_generative_kd."""
    if idx.dim() != 2 or idx.shape[1] < 2:
        raise ValueError(f"idx must be ids [batch, length >= 2], got {tuple(idx.shape)}")
    with _evaluating(model):
        x, y = idx[:, :-1].to(_device(model)), idx[:, 1:].to(_device(model))
        logp = F.log_softmax(model(x).float(), dim=-1)
        return logp.gather(-1, y[..., None])[..., 0].cpu()


def bits_per_char(model: CharTransformer, data: torch.Tensor, context: int | None = None, batch_size: int = 64,
                  max_chars: int | None = None) -> float:
    """Teacher-forced cross-entropy on `data` in bits per character (lower is better). Notebook 10_generative_kd.

    `data` (1-D ids, e.g. Corpus.val) is cut into consecutive windows of `context` (default the
    model's); every character after the first is predicted once. `max_chars` evaluates a prefix only.
    """
    context = context or model.context
    windows = None if max_chars is None else max(1, max_chars // context)
    total, count = 0.0, 0
    with _evaluating(model):
        for x, y in iterate_windows(data, context, batch_size, windows, device=_device(model)):
            logits = model(x).float()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    return total / count / math.log(2)


def tokens_per_second(model: CharTransformer, num_tokens: int = 200, batch_size: int = 1, prompt_idx=None,
                      seed: int = 0) -> float:
    """Measured sampling speed: generated ids per second (batch_size sequences at once), after a warm-up."""
    prompt = torch.zeros(batch_size, 1, dtype=torch.long) if prompt_idx is None else prompt_idx
    generator = torch.Generator(device=_device(model)).manual_seed(seed)
    generate(model, prompt, min(8, num_tokens), generator=generator)  # warm-up (allocations, kernels)
    if _device(model).type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    generate(model, prompt, num_tokens, generator=generator)
    if _device(model).type == "cuda":
        torch.cuda.synchronize()
    return prompt.shape[0] * num_tokens / (time.perf_counter() - start)
