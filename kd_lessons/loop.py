"""The one optimisation loop under every trainer: images (fit, distill), LMs (train_lm), mutual learning.

Introduced in notebook 04_distill_mnist (and used again in 10_generative_kd and 11_methods_tour). A
trainer hands `run_loop` a `Learner` plug-in (what one batch costs and what to record), epochs of
batches, and `LoopSettings` (a `Schedule` plug-in, AMP, gradient clipping, progress, on_step). The
loop owns the step order that every trainer shares: schedule, loss under autocast, zero_grad,
backward (GradScaler on fp16), clip, optimiser step(s), schedule, record, progress bar, on_step.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from kd_lessons.config import amp_dtype

__all__ = ["Learner", "Schedule", "OneCycle", "WarmupCosine", "LoopSettings", "run_loop", "lr_at", "amp_context",
           "make_optimizer", "on_device_if_small", "seeded_augment"]


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Learning rate at 0-based `step`: linear warm-up, cosine decay to lr/10. Notebook 10_generative_kd."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Schedule:
    """A learning-rate schedule plug-in: `before(step)` sets the rate, `after(step)` advances it; default constant."""

    def start(self, optimizers: list) -> None:
        """Attach to the optimisers once, before the first step."""
        self.optimizers = optimizers

    def before(self, step: int) -> None:
        """Called before step `step` (0-based) computes its loss."""

    def after(self, step: int) -> None:
        """Called after the optimisers stepped."""


class OneCycle(Schedule):
    """torch's OneCycleLR peaking at lr after 25% of `total` steps; under 10 steps lr stays constant. Notebook 04."""

    def __init__(self, lr: float, total: int):
        self.lr, self.total, self.scheds = lr, total, []

    def start(self, optimizers: list) -> None:
        """One OneCycleLR per optimiser (mutual learning has two)."""
        super().start(optimizers)
        if self.total >= 10:  # OneCycle needs a few steps to warm up and anneal
            self.scheds = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=self.lr, total_steps=self.total,
                                                               pct_start=0.25) for o in optimizers]

    def after(self, step: int) -> None:
        """Advance every OneCycleLR, never past its last step."""
        for s in self.scheds:
            if s.last_epoch < s.total_steps - 1:
                s.step()


class WarmupCosine(Schedule):
    """`lr_at`: linear warm-up over `warmup` steps, cosine decay to lr/10 by `steps`. Notebook 10_generative_kd."""

    def __init__(self, lr: float, steps: int, warmup: int):
        self.lr, self.steps, self.warmup = lr, steps, warmup

    def before(self, step: int) -> None:
        """Set every parameter group's rate for this step."""
        for o in self.optimizers:
            for group in o.param_groups:
                group["lr"] = lr_at(step, self.steps, self.lr, self.warmup)


class Learner:
    """The plug-in the loop trains: its optimisers, the loss of one batch, and what it records. Notebook 04.

    Subclasses set `optimizers` (a list) and `clip_params` (parameters for grad clipping), and implement
    `loss(batch, step)`; `record(step, loss)` runs after each step, `end_epoch(epoch, step)` after each
    epoch (return True to stop). Setting `postfix` (a dict) updates the progress bar.
    """

    optimizers: list = []
    postfix: dict | None = None

    def start_epoch(self, epoch: int) -> None:
        """Before the first batch of `epoch` (1-based): e.g. models to train mode."""

    def loss(self, batch, step: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError("a Learner computes the loss of one batch in loss(batch, step)")

    def clip_params(self) -> list:
        """The parameters whose gradient norm `LoopSettings.grad_clip` bounds."""
        return [p for o in self.optimizers for g in o.param_groups for p in g["params"]]

    def record(self, step: int, loss: torch.Tensor) -> None:
        """After optimiser step number `step` (1-based)."""

    def end_epoch(self, epoch: int, step: int) -> bool:
        """After an epoch; True stops training."""
        return False


@dataclass
class LoopSettings:
    """How the loop steps: total steps, schedule plug-in, autocast + GradScaler, clipping, progress. Notebook 04.

    on_step(done, total) runs after each step (the app's progress); progress=False hides the tqdm bar.
    """

    total: int
    schedule: Schedule
    autocast: Callable = contextlib.nullcontext
    scaler: object = None
    grad_clip: float | None = None
    progress: bool = True
    desc: str = "train"
    on_step: Callable | None = None


def run_loop(learner: Learner, epochs: Iterable[Iterable], settings: LoopSettings) -> int:
    """Train `learner` on epochs of batches for at most settings.total steps; return the steps done. Notebook 04."""
    opts, scaler, schedule = learner.optimizers, settings.scaler, settings.schedule
    schedule.start(opts)
    bar = tqdm(total=settings.total, desc=settings.desc, disable=not settings.progress, leave=False)
    step = 0
    try:
        for epoch, batches in enumerate(epochs, start=1):
            learner.start_epoch(epoch)
            for batch in batches:
                schedule.before(step)
                with settings.autocast():
                    loss = learner.loss(batch, step)
                for o in opts:
                    o.zero_grad(set_to_none=True)
                _backward_and_step(loss, opts, scaler, settings.grad_clip, learner)
                schedule.after(step)
                step += 1
                learner.record(step, loss)
                _show(bar, learner)
                bar.update(1)
                if settings.on_step is not None:
                    settings.on_step(step, settings.total)
                if step >= settings.total:
                    break
            stop = learner.end_epoch(epoch, step)
            _show(bar, learner)
            if stop or step >= settings.total:
                break
    finally:
        bar.close()
    return step


def amp_context(device: torch.device, precision: str | None, inference: bool = False):
    """(autocast factory, GradScaler or None); CPU inference stays fp32 (exact cached logits). Notebook 04."""
    dtype = amp_dtype(device, precision)
    if dtype is None or (inference and device.type != "cuda"):
        return contextlib.nullcontext, None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def make_optimizer(name: str, params: list, lr: float, weight_decay: float):
    """AdamW or SGD+Nesterov, fused kernels (~2x faster CPU steps) where torch has them. Notebook 04_distill_mnist."""
    if name == "adamw":
        cls, kwargs = torch.optim.AdamW, {}
    elif name == "sgd":
        cls, kwargs = torch.optim.SGD, {"momentum": 0.9, "nesterov": True}
    else:
        raise ValueError(f"optimizer={name!r}: use 'adamw' or 'sgd'")
    try:
        return cls(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
    except (TypeError, RuntimeError, ValueError):  # older torch or a device without fused kernels
        return cls(params, lr=lr, weight_decay=weight_decay, **kwargs)


def on_device_if_small(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """Put a whole dataset on the GPU once when it fits easily (< 2 GB); per batch otherwise. Notebook 04."""
    if t is None or device.type == "cpu" or t.numel() * t.element_size() > 2 * 1024**3:
        return t
    return t.to(device)


def seeded_augment(augment, generator):
    """Give an augmentation that takes `generator=` the run's generator, so a seed fixes it. Notebook 04."""
    if augment is None or not callable(augment):
        if augment is not None:
            raise ValueError(f"augment={augment!r}: pass a function xb -> xb such as data.random_shift, or None")
        return None
    if isinstance(augment, functools.partial) and "generator" in augment.keywords:
        return augment  # the caller seeded it already
    try:
        takes_gen = "generator" in inspect.signature(augment).parameters
    except (TypeError, ValueError):
        takes_gen = False
    return functools.partial(augment, generator=generator) if takes_gen else augment


def _backward_and_step(loss: torch.Tensor, opts: list, scaler, grad_clip: float | None, learner: Learner) -> None:
    """Backward (scaled on fp16), optional gradient-norm clipping, then every optimiser steps."""
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip:
            for o in opts:
                scaler.unscale_(o)
    else:
        loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(learner.clip_params(), grad_clip)
    for o in opts:
        if scaler is not None:
            scaler.step(o)
        else:
            o.step()
    if scaler is not None:
        scaler.update()


def _show(bar, learner: Learner) -> None:
    """Put the learner's latest numbers on the progress bar."""
    if learner.postfix:
        bar.set_postfix(learner.postfix)
        learner.postfix = None
