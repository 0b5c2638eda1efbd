"""The one training loop for character language models: teachers, scratch students and (via loss_fn) KD students.

Introduced in notebook 10_generative_kd. `train_lm` runs a fixed number of AdamW steps on random
next-character windows (or on batches from `batch_fn`, e.g. teacher-generated text for
sequence-level KD), with linear warm-up and cosine decay, as a plug-in of the one loop (kd_lessons.loop);
the rarely turned knobs are `LMOptions`. `loss_fn(model, x, y) -> loss` replaces
the default next-character cross-entropy, which is how token-level KD and on-policy methods plug in
without new flags here. The model is trained on `device` and handed back on its own device and mode.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons import config
from kd_lessons.generative.text import sample_windows
from kd_lessons.generative.transformer import bits_per_char
from kd_lessons.loop import Learner, LoopSettings, WarmupCosine, lr_at, run_loop

__all__ = ["LMOptions", "train_lm", "cross_entropy_loss", "lr_at"]


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Next-character cross-entropy (nats) averaged over every position: training from the text alone."""
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@dataclass(frozen=True)
class LMOptions:
    """The knobs of `train_lm` a lesson rarely turns. Notebook 10_generative_kd.

    context=None: the model's. val_data: held-out ids for bits/char on its first `eval_chars` characters
    every `eval_every` steps (None: steps // 10) and at the end. warmup=None: steps // 20.
    on_step(step, steps, loss) runs after each step (the app's progress).
    """

    context: int | None = None
    seed: int = 0
    val_data: torch.Tensor | None = None
    eval_every: int | None = None
    eval_chars: int | None = 50_000
    weight_decay: float = 0.01
    warmup: int | None = None
    grad_clip: float = 1.0
    device: torch.device | str | None = None
    progress: bool = True
    on_step: Callable | None = None
    desc: str = "train_lm"


class _LMLearner(Learner):
    """The LM plug-in of the loop: windows or batch_fn batches, loss_fn, interval-mean losses, bits/char evals."""

    def __init__(self, model: nn.Module, loss_fn, opt, steps: int, options: LMOptions, device: torch.device):
        self.model, self.loss_fn, self.optimizers, self.steps, self.options = model, loss_fn, [opt], steps, options
        self.device, self.running, self.n_run, self.last = device, 0.0, 0, float("nan")
        self.log_every, self.eval_every = max(1, steps // 100), options.eval_every or max(1, steps // 10)
        self.history = {"step": [], "train_loss": [], "val_step": [], "val_bpc": [], "lr": [], "seconds": 0.0,
                        "steps_per_second": float("nan")}

    def clip_params(self) -> list:
        return list(self.model.parameters())

    def loss(self, batch, step: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self.model, x.to(self.device), y.to(self.device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step + 1}; lower lr (now "
                                     f"{self.optimizers[0].defaults['lr']})")
        return loss

    def record(self, step: int, loss: torch.Tensor) -> None:
        history, options = self.history, self.options
        self.last = loss.item()
        self.running, self.n_run = self.running + self.last, self.n_run + 1
        if step % self.log_every == 0 or step == self.steps:
            history["step"].append(step)
            history["train_loss"].append(self.running / self.n_run)
            history["lr"].append(self.optimizers[0].param_groups[0]["lr"])
            self.postfix = {"loss": f"{self.running / self.n_run:.3f}"}
            self.running, self.n_run = 0.0, 0
        if options.val_data is not None and (step % self.eval_every == 0 or step == self.steps):
            history["val_step"].append(step)
            history["val_bpc"].append(bits_per_char(self.model, options.val_data, self.context,
                                                    max_chars=options.eval_chars))
            self.model.train()


def train_lm(model: nn.Module, data: torch.Tensor | None, steps: int, lr: float = 3e-3, batch_size: int = 64,
             loss_fn=None, batch_fn=None, options: LMOptions | None = None) -> dict:
    """Train a language model for `steps` AdamW steps; return its history. Notebook 10_generative_kd.

    Batches: `sample_windows(data, context, batch_size)` (context defaults to the model's) or, if
    given, `batch_fn(generator) -> (x, y)`. Loss: `loss_fn(model, x, y)`, default
    `cross_entropy_loss`. Seed, context, validation, warm-up, clipping, device, progress: `LMOptions`.
    History (plain data): step, train_loss (nats, mean over each logging interval), val_step, val_bpc,
    lr, seconds (total), steps_per_second.
    """
    options = options or LMOptions()
    if steps < 1 or not lr > 0 or batch_size < 1:
        raise ValueError(f"steps={steps!r}, lr={lr!r}, batch_size={batch_size!r}: use steps >= 1, lr > 0, "
                         f"batch_size >= 1")
    if data is None and batch_fn is None:
        raise ValueError("pass data (1-D ids such as Corpus.train) or batch_fn(generator) -> (x, y)")
    context = options.context or getattr(model, "context", None)
    if batch_fn is None and not context:
        raise ValueError("context is needed: pass LMOptions(context=...) (the model has no .context attribute)")
    device = config.resolve_device(options.device)
    home, was_training = next(model.parameters()).device, model.training
    generator = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)  # dropout masks
    warmup = max(1, steps // 20) if options.warmup is None else options.warmup
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": options.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99))
    learner = _LMLearner(model, loss_fn or cross_entropy_loss, opt, steps, options, device)
    learner.context = context
    batches = (batch_fn(generator) if batch_fn is not None else
               sample_windows(data, context, batch_size, generator=generator) for _ in range(steps))
    on_step = None if options.on_step is None else (lambda done, total: options.on_step(done, total, learner.last))
    settings = LoopSettings(steps, WarmupCosine(lr, steps, warmup), grad_clip=options.grad_clip,
                            progress=options.progress, desc=options.desc, on_step=on_step)
    start = time.perf_counter()
    try:
        run_loop(learner, [batches], settings)
    finally:
        history = learner.history
        history["seconds"] = time.perf_counter() - start
        history["steps_per_second"] = (history["step"][-1] if history["step"] else 0) / history["seconds"]
        model.to(home).train(was_training)
    return history
