"""One training loop for every objective: `fit` (labels), `distill` (a teacher), `evaluate`, `predict_logits`.

Introduced in notebook 04_distill_mnist. Tensors in memory, batched by `data.iterate_batches`; a fixed
teacher's logits are computed once and indexed per batch. What the student learns is an `Objective`
(kd_lessons.objectives, kd_lessons.methods): the loop (kd_lessons.loop) never changes for a new method.
Under `torchrun` each rank trains a DDP student on its shard of every global batch (kd_lessons.distributed).
Steps autocast to `config.amp_dtype`, optimisers are fused where torch has them, CNNs run channels_last.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from kd_lessons import distributed, loop
from kd_lessons.config import resolve_device, seed_everything
from kd_lessons.data import check_xy, iterate_batches
from kd_lessons.loop import Learner, LoopSettings, OneCycle, run_loop
from kd_lessons.loop import make_optimizer as _optimizer
from kd_lessons.objectives import CrossEntropy, HintonKD, Objective

__all__ = ["TrainOptions", "fit", "distill", "evaluate", "predict_logits", "teacher_precomputable"]


@dataclass(frozen=True)
class TrainOptions:
    """The knobs a lesson rarely turns, kept out of the signatures. Notebook 04_distill_mnist.

    weight_decay=None: 5e-4 for `fit`, 0 for `distill`. precision=None follows KD_PRECISION.
    callback(epoch, history) runs after each epoch (True stops); on_step(done, total) after each step.
    augment: a function xb -> xb (e.g. data.random_shift); val: (x_val, y_val) for val_accuracy.
    """

    batch_size: int = 128
    augment: Callable | None = None
    val: tuple | None = None
    seed: int = 0
    device: torch.device | str | None = None
    optimizer: str = "adamw"
    weight_decay: float | None = None
    max_steps: int | None = None
    precision: str | None = None
    progress: bool = True
    callback: Callable | None = None
    on_step: Callable | None = None


def _check_run(num_epochs, lr, batch_size) -> None:
    """Reject nonsense hyper-parameters before any work starts."""
    if not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs={num_epochs!r}: pass a positive integer such as num_epochs=5")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r}: pass a positive learning rate such as lr=1e-3")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: pass a positive integer such as batch_size=128")


def _labels(y: torch.Tensor) -> None:
    if y.dtype != torch.int64:
        raise ValueError(f"labels have dtype {y.dtype}; pass class indices as int64 (y.long()), -1 for unlabelled")


def _prepare(model: nn.Module, device: torch.device) -> bool:
    """Move the model; CNNs go channels_last (faster on CUDA and, measured here, on CPU too)."""
    model.to(device)
    cl = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if cl:
        model.to(memory_format=torch.channels_last)
    return cl


@contextlib.contextmanager
def _borrowed(model: nn.Module, device: torch.device):
    """Use the caller's model on `device` in eval mode, then put it back where and how it was."""
    home = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    cl = _prepare(model, device)
    model.eval()
    try:
        yield cl
    finally:
        model.to(home).train(was_training)






@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Logits for every row of x (eval mode), returned on the CPU: cache a teacher once. Notebook 04_distill_mnist.

    batch_size=None: 256 on the CPU (measured faster than 1024 there: activations stay in cache), 1024 on
    GPUs. The model is left on the device and in the mode it was in.
    """
    device = resolve_device(device)
    batch_size = batch_size or (256 if device.type == "cpu" else 1024)
    autocast, _ = loop.amp_context(device, None, inference=True)
    out = []
    with _borrowed(model, device) as cl:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device, non_blocking=True)
            if cl and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast():
                out.append(model(xb).float().cpu())
    return torch.cat(out)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None,
             device: torch.device | str | None = None) -> dict:
    """Accuracy, error count and per-class accuracy as plain numbers. Notebook 04_distill_mnist."""
    check_xy(x, y)
    logits = predict_logits(model, x, batch_size, device)
    pred, y = logits.argmax(1), y.cpu()
    correct = pred == y
    num_classes = max(logits.shape[1], int(y.max()) + 1)
    per_class = [float(correct[y == c].float().mean()) if bool((y == c).any()) else float("nan")
                 for c in range(num_classes)]
    return {"accuracy": float(correct.float().mean()), "errors": int((~correct).sum()), "n": len(y),
            "per_class_accuracy": per_class}


def teacher_precomputable(objective: Objective, augment) -> bool:
    """May a teacher model's logits be computed once, before training? Notebook 04_distill_mnist.

    Yes unless the objective ignores the teacher, needs its feature maps, or the batches are augmented
    (then the teacher must see each augmented batch). `distill` and `runs.students` both ask this.
    """
    return objective.uses_teacher and not objective.uses_features and augment is None


def _logits_source(teacher: torch.Tensor, objective: Objective, x: torch.Tensor, augment, device: torch.device):
    """Batch positions -> rows of the teacher's precomputed logits, after checking they can stand in for it."""
    if augment is not None:
        raise ValueError("teacher logits were computed on the un-augmented x, so with augment they would not "
                         "match the augmented batches the student sees; pass the teacher model instead (it "
                         "then runs on every augmented batch) or set augment=None")
    if objective.uses_features:
        raise ValueError(f"{type(objective).__name__} needs the teacher's feature maps: pass teacher=<model>, "
                         "not its logits")
    if teacher.dim() != 2 or len(teacher) != len(x):
        raise ValueError(f"teacher logits have shape {list(teacher.shape)} but x has {len(x)} rows; compute "
                         f"them with predict_logits(teacher, x) on the same x")
    logits = teacher.to(device).float()
    return lambda idx, xb: logits[idx.to(logits.device)]


def _teacher_source(teacher, objective: Objective, x: torch.Tensor, augment, device: torch.device):
    """Turn `teacher` (None, cached logits or a model) into batch -> teacher output, and a cleanup stack."""
    stack = contextlib.ExitStack()
    if not objective.uses_teacher:
        return (lambda idx, xb: None), stack
    if teacher is None:
        raise ValueError(f"{type(objective).__name__} learns from a teacher: pass teacher=<model> or "
                         f"teacher=<its logits on x>, computed with predict_logits(teacher, x)")
    if isinstance(teacher, nn.Module) and teacher_precomputable(objective, augment):
        teacher = predict_logits(teacher, x, device=device)  # once, instead of once per epoch
    if isinstance(teacher, torch.Tensor):
        return _logits_source(teacher, objective, x, augment, device), stack
    if not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher must be an nn.Module or a tensor of its logits, got {type(teacher).__name__}")
    cl = stack.enter_context(_borrowed(teacher, device))

    def run_teacher(idx, xb):
        with torch.inference_mode():
            t_in = xb.contiguous(memory_format=torch.channels_last) if cl and xb.dim() == 4 else xb
            out = teacher(t_in, return_features=objective.uses_features)
        if objective.uses_features:  # clone: inference tensors cannot be saved for backward
            return out[0].float().clone(), [f.clone() for f in out[1]]
        return out.float().clone()

    return run_teacher, stack


class _ImageLearner(Learner):
    """The image plug-in of the loop: student (DDP-wrapped under torchrun) + objective, epoch history, val, callback."""

    def __init__(self, model: nn.Module, objective: Objective, teacher_out, opt, options: TrainOptions, total: int):
        self.model, self.objective, self.teacher_out, self.options = model, objective, teacher_out, options
        self.optimizers, self.total = [opt], total
        self.device, self.cl = options.device, any(isinstance(m, nn.Conv2d) for m in model.modules())
        self.net, self.loss_fn = distributed.wrap(model, self.device), distributed.wrap(objective, self.device)
        self.history = {"epoch": [], "step": [], "train_loss": [], "train_accuracy": [], "val_accuracy": [],
                        "val_errors": [], "val_step": [], "seconds": [], "lr": [], "step_loss": []}

    def start_epoch(self, epoch: int) -> None:
        self.model.train()
        self.start, self.losses, self.n_correct, self.n_seen = time.perf_counter(), [], 0, 0

    def loss(self, batch, step: int) -> torch.Tensor:
        idx, xb, yb = batch
        objective = self.objective
        if self.cl and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        t_out = self.teacher_out(idx, xb)
        s_out = self.net(xb, return_features=True) if objective.uses_features else self.net(xb)
        self.logits, self.yb = (s_out[0] if objective.uses_features else s_out), yb
        if step == 0:
            objective.check(self.logits, t_out[0] if objective.uses_features else t_out, yb)
        return self.loss_fn(s_out, t_out, yb)

    def record(self, step: int, loss: torch.Tensor) -> None:
        self.losses.append(loss.detach().float())
        labelled = self.yb >= 0  # UNLABELED rows (only the teacher labels them) do not count
        self.n_correct += ((self.logits.detach().argmax(1) == self.yb) & labelled).sum()
        self.n_seen += labelled.sum()

    def end_epoch(self, epoch: int, step: int) -> bool:
        history, options = self.history, self.options
        step_losses = torch.stack(self.losses).cpu().tolist()
        history["epoch"].append(epoch)
        history["step"].append(step)
        history["seconds"].append(time.perf_counter() - self.start)
        history["step_loss"].extend(step_losses)
        history["train_loss"].append(sum(step_losses) / len(step_losses))
        history["train_accuracy"].append(float(self.n_correct) / int(self.n_seen) if int(self.n_seen) else math.nan)
        history["lr"].append(self.optimizers[0].param_groups[0]["lr"])
        if options.val is not None and (epoch % self.val_every == 0 or step >= self.total or epoch == self.epochs):
            result = evaluate(self.model, *options.val, device=self.device)
            history["val_accuracy"].append(result["accuracy"])
            history["val_errors"].append(result["errors"])
            history["val_step"].append(step)
        self.postfix = {"epoch": epoch, "loss": f"{history['train_loss'][-1]:.4f}"}
        return bool(options.callback(epoch, history)) if options.callback is not None else False


def _run(model, x, y, objective: Objective, teacher, num_epochs, lr, options: TrainOptions) -> dict:
    """Set up the image plug-in (optimiser, OneCycle, AMP, teacher source, DDP shards) and run the one loop."""
    check_xy(x, y)
    _labels(y)
    _check_run(num_epochs, lr, options.batch_size)
    if options.val is not None and (not isinstance(options.val, (tuple, list)) or len(options.val) != 2
                                    or check_xy(*options.val) < 1):
        raise ValueError(f"val must be a pair (x_val, y_val), got {type(options.val).__name__}")
    device = resolve_device(options.device)
    generator = seed_everything(options.seed)
    augment = loop.seeded_augment(options.augment, generator)
    teacher_out, cleanup = _teacher_source(teacher, objective, x, augment, device)
    _prepare(model, device)
    objective.to(device).train()
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    opt = _optimizer(options.optimizer, params, lr, options.weight_decay)
    steps_per_epoch = math.ceil(len(x) / options.batch_size)
    total = num_epochs * steps_per_epoch if options.max_steps is None else min(options.max_steps,
                                                                               num_epochs * steps_per_epoch)
    autocast, scaler = loop.amp_context(device, options.precision)
    x, y = loop.on_device_if_small(x, device), loop.on_device_if_small(y, device)
    learner = _ImageLearner(model, objective, teacher_out, opt, replace(options, device=device), total)
    learner.epochs = num_epochs
    learner.val_every = max(1, math.ceil(min(num_epochs, math.ceil(total / steps_per_epoch)) / 20))  # ~20 evals
    epochs = (distributed.shard(iterate_batches(x, y, options.batch_size, shuffle=True, generator=generator,
                                                augment=augment, device=device)) for _ in range(num_epochs))
    settings = LoopSettings(total, OneCycle(lr, total), autocast, scaler, progress=options.progress
                            and distributed.is_main(), desc="distill" if objective.uses_teacher else "fit",
                            on_step=options.on_step)
    with cleanup:
        run_loop(learner, epochs, settings)
    model.eval()
    return learner.history


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_epochs: int, lr: float, label_smoothing: float = 0.0,
        options: TrainOptions | None = None) -> dict:
    """Supervised training with cross-entropy: how teachers (and baselines) are made. Notebook 04_distill_mnist.

    AdamW (or SGD+Nesterov, see TrainOptions) with a OneCycle schedule peaking at `lr`;
    options=TrainOptions(batch_size=..., augment=..., val=(x_val, y_val), seed=..., device=...). val adds
    val_accuracy (every epoch, or at ~20 evenly spaced epochs in long runs; val_step says when). Returns
    history, a dict of lists (epoch, step, train_loss, train_accuracy, val_accuracy, val_errors, val_step,
    seconds, lr, step_loss).
    """
    options = options or TrainOptions()
    options = replace(options, weight_decay=5e-4 if options.weight_decay is None else options.weight_decay)
    return _run(model, x, y, CrossEntropy(label_smoothing), None, num_epochs, lr, options)


def distill(student: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher, objective: Objective | None = None,
            num_epochs: int = 10, lr: float = 1e-3, options: TrainOptions | None = None) -> dict:
    """Train `student` to match `teacher` under `objective` (default HintonKD(T=4, alpha=0.9)). Notebook 04.

    `teacher` is a model (kept in eval mode, never updated, left on its device) or its logits on x
    (one row per row of x, from predict_logits or teachers.cached_logits). Without augmentation a
    teacher model runs once over x and its logits are indexed by batch position (`teacher_precomputable`);
    with options.augment, or an objective that uses features, it runs on every batch. Batch size, seed,
    device, val: `TrainOptions`. Other objectives: kd_lessons.methods.
    """
    objective = HintonKD() if objective is None else objective
    if not isinstance(objective, Objective):
        raise ValueError(f"objective={objective!r}: pass an Objective such as HintonKD(T=4.0, alpha=0.9)")
    options = options or TrainOptions()
    options = replace(options, weight_decay=0.0 if options.weight_decay is None else options.weight_decay)
    return _run(student, x, y, objective, teacher, num_epochs, lr, options)
