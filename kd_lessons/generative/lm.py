"""The one training loop for character language models: teachers, scratch students and (via loss_fn) KD students.

Introduced in notebook 10_generative_kd. `train_lm` runs a fixed number of AdamW steps on random
next-character windows (or on batches from `batch_fn`, e.g. teacher-generated text for
sequence-level KD), with linear warm-up and cosine decay. `loss_fn(model, x, y) -> loss` replaces
the default next-character cross-entropy, which is how token-level KD and on-policy methods plug in
without new flags here. The model is trained on `device` and handed back on its own device and mode.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kd_lessons import config
from kd_lessons.generative.text import sample_windows
from kd_lessons.generative.transformer import bits_per_char

__all__ = ["train_lm", "cross_entropy_loss", "lr_at"]


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Next-character cross-entropy (nats) averaged over every position: training from the text alone."""
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Learning rate at 0-based `step`: linear warm-up over `warmup` steps, cosine decay to lr/10 at the end."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_lm(model: nn.Module, data: torch.Tensor | None, steps: int, lr: float = 3e-3, batch_size: int = 64,
             context: int | None = None, seed: int = 0, loss_fn=None, batch_fn=None,
             val_data: torch.Tensor | None = None, eval_every: int | None = None, eval_chars: int | None = 50_000,
             weight_decay: float = 0.01, warmup: int | None = None, grad_clip: float = 1.0, device=None,
             progress: bool = True, on_step=None, desc: str = "train_lm") -> dict:
    """Train a language model for `steps` AdamW steps; return its history. Notebook 10_generative_kd.

    Batches: `sample_windows(data, context, batch_size)` (context defaults to the model's) or, if
    given, `batch_fn(generator) -> (x, y)`. Loss: `loss_fn(model, x, y)`, default
    `cross_entropy_loss`. With `val_data`, held-out bits/char (on its first `eval_chars`
    characters) every `eval_every` steps and at the end. `on_step(step, steps, loss)` is called
    after each step (the app's progress). History (plain data): step, train_loss (nats, mean over
    each logging interval), val_step, val_bpc, lr, seconds (total), steps_per_second.
    """
    if steps < 1 or not lr > 0 or batch_size < 1:
        raise ValueError(f"steps={steps!r}, lr={lr!r}, batch_size={batch_size!r}: use steps >= 1, lr > 0, "
                         f"batch_size >= 1")
    if data is None and batch_fn is None:
        raise ValueError("pass data (1-D ids such as Corpus.train) or batch_fn(generator) -> (x, y)")
    context = context or getattr(model, "context", None)
    if batch_fn is None and not context:
        raise ValueError("context is needed: pass context=... (the model has no .context attribute)")
    loss_fn = loss_fn or cross_entropy_loss
    device = torch.device(device) if device is not None else config.get_device()
    home, was_training = next(model.parameters()).device, model.training
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout masks
    warmup = max(1, steps // 20) if warmup is None else warmup
    log_every = max(1, steps // 100)
    eval_every = eval_every or max(1, steps // 10)
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99))
    history = {"step": [], "train_loss": [], "val_step": [], "val_bpc": [], "lr": [], "seconds": 0.0,
               "steps_per_second": float("nan")}
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    running, n_run = 0.0, 0
    start = time.perf_counter()
    try:
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, lr, warmup)
            if batch_fn is not None:
                x, y = batch_fn(generator)
            else:
                x, y = sample_windows(data, context, batch_size, generator=generator)
            loss = loss_fn(model, x.to(device), y.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step + 1}; lower lr (now {lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            running, n_run = running + loss.item(), n_run + 1
            if (step + 1) % log_every == 0 or step + 1 == steps:
                history["step"].append(step + 1)
                history["train_loss"].append(running / n_run)
                history["lr"].append(opt.param_groups[0]["lr"])
                bar.set_postfix(loss=f"{running / n_run:.3f}")
                running, n_run = 0.0, 0
            if val_data is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
                history["val_step"].append(step + 1)
                history["val_bpc"].append(bits_per_char(model, val_data, context, max_chars=eval_chars))
                model.train()
            bar.update(1)
            if on_step is not None:
                on_step(step + 1, steps, loss.item())
    finally:
        bar.close()
        history["seconds"] = time.perf_counter() - start
        history["steps_per_second"] = (history["step"][-1] if history["step"] else 0) / history["seconds"]
        model.to(home).train(was_training)
    return history
