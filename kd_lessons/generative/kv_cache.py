"""Generation with a key/value cache: each new token runs the model on one position, not on the whole prefix.

Introduced in notebook 13_reasoning_distillation, where teachers write thousands of traces and every
student is scored by writing its own: `transformer.generate` re-reads the whole prefix for each new
token (simple, quadratic); `cached_generate` keeps each layer's keys and values and reads only the new
token, with the same result (greedy: the same ids; tests/test_generative_kv_cache.py checks it against
`generate`). It uses CharTransformer's parts (tok, pos, blocks, ln_f, head) and no dropout (eval mode).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kd_lessons.generative.transformer import CharTransformer, _device, _evaluating

__all__ = ["cached_generate", "cached_positions", "uncached_positions"]


def _attend(attn, h: torch.Tensor, cache: list, layer: int) -> torch.Tensor:
    """The attention of new positions h [B, n, D] over the cached ones and themselves (causal inside h)."""
    B, n, D = h.shape
    heads, size = attn.n_heads, D // attn.n_heads
    q, k, v = (t.view(B, n, heads, size).transpose(1, 2) for t in attn.qkv(h).split(D, dim=2))
    if cache[layer] is not None:
        k, v = torch.cat([cache[layer][0], k], dim=2), torch.cat([cache[layer][1], v], dim=2)
    cache[layer] = (k, v)
    scores = q @ k.transpose(-2, -1) / math.sqrt(size)  # [B, H, n, past + n]
    past = k.shape[2] - n
    allowed = torch.ones(n, past + n, dtype=torch.bool, device=h.device).tril(diagonal=past)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, n, D)
    return attn.proj(out)


def _step(model: CharTransformer, idx: torch.Tensor, start: int, cache: list) -> torch.Tensor:
    """Logits of the last position after feeding ids idx [B, n] at positions start.. start + n - 1."""
    h = model.tok(idx) + model.pos(torch.arange(start, start + idx.shape[1], device=idx.device))
    for layer, block in enumerate(model.blocks):
        h = h + _attend(block.attn, block.ln1(h), cache, layer)
        h = h + block.mlp(block.ln2(h))
    return model.head(model.ln_f(h[:, -1]))


def cached_generate(model: CharTransformer, prompt_idx: torch.Tensor, num_tokens: int, T: float = 1.0,
                    greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Prompt + `num_tokens` new ids, like `generate` but with a key/value cache. Notebook 13_reasoning_distillation.

    prompt_idx is [B, L] or [L]; the whole text must fit the model's context (no cropping, unlike
    `generate`; the last new id is never fed back, so prompt + num_tokens may reach context + 1). Greedy takes the
    argmax; otherwise samples from softmax(logits / T).
    """
    if not isinstance(model, CharTransformer):
        raise ValueError(f"cached_generate needs a CharTransformer (it reuses its layers), got {type(model).__name__}")
    if not T > 0 or num_tokens < 0:
        raise ValueError(f"T={T!r}, num_tokens={num_tokens!r}: use T > 0 (1.0 = the model's distribution) and n >= 0")
    one = prompt_idx.dim() == 1
    idx = (prompt_idx[None] if one else prompt_idx).to(_device(model))
    if idx.shape[1] < 1 or idx.shape[1] + num_tokens > model.context + 1:  # the last new id is never fed back
        raise ValueError(f"prompt of {idx.shape[1]} ids + {num_tokens} new ones must be 1..{model.context + 1} "
                         "(the model's context, plus the last id, which is never fed back); shorten the prompt or use "
                         "transformer.generate, which crops")
    cache: list = [None] * len(model.blocks)
    with _evaluating(model):
        logits = _step(model, idx, 0, cache)
        for _ in range(num_tokens):
            if greedy:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = F.softmax(logits.float() / T, dim=-1)
                where = generator.device if generator is not None else probs.device
                nxt = torch.multinomial(probs.to(where), 1, generator=generator).to(idx.device)
            idx = torch.cat([idx, nxt], dim=1)
            if idx.shape[1] < prompt_idx.shape[-1] + num_tokens:  # the last token needs no logits
                logits = _step(model, nxt, idx.shape[1] - 1, cache)
    idx = idx.to(prompt_idx.device)
    return idx[0] if one else idx


def cached_positions(batch: int, prompt_len: int, num_tokens: int) -> int:
    """Forward positions `cached_generate` runs: the prompt once, then one per new token but the last. Notebook 10.

    Notebook 10_generative_kd's cost table puts this "with KV cache" count beside `uncached_positions`.
    """
    if batch < 0 or prompt_len < 1 or num_tokens < 0:
        raise ValueError(f"batch={batch!r}, prompt_len={prompt_len!r}, num_tokens={num_tokens!r}: use batch >= 0, "
                         "prompt_len >= 1, num_tokens >= 0")
    return batch * (prompt_len + max(num_tokens - 1, 0))


def uncached_positions(batch: int, prompt_len: int, num_tokens: int, context: int) -> int:
    """Forward positions `transformer.generate` runs: each new token re-reads its prefix, cropped to the context.

    Closed form of notebook 10_generative_kd's "no KV cache" cost: sum over i < num_tokens of min(prompt_len + i,
    context) per sequence.
    """
    if batch < 0 or prompt_len < 1 or num_tokens < 0 or context < 1:
        raise ValueError(f"batch={batch!r}, prompt_len={prompt_len!r}, num_tokens={num_tokens!r}, context={context!r}:"
                         " use batch >= 0, prompt_len >= 1, num_tokens >= 0, context >= 1")
    return batch * sum(min(prompt_len + i, context) for i in range(num_tokens))
