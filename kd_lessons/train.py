"""One training loop for every objective: `fit` (labels), `distill` (a teacher), `evaluate`, `predict_logits`.

Introduced in notebook 04_distill_mnist. Data stay in memory as tensors, batched by
`kd_lessons.data.iterate_batches`; a fixed teacher's logits are computed once and indexed per
batch. What the student learns is an `Objective` (kd_lessons.objectives, kd_lessons.methods);
the loop never changes for a new method. Steps autocast to `config.amp_dtype` (bf16 on CUDA and on
AMX CPUs, fp16 with a GradScaler on older GPUs), optimisers use fused kernels where torch has them,
CNNs run channels_last. Library calls leave a caller's teacher on the device it was on.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from kd_lessons.config import amp_dtype, get_device, seed_everything
from kd_lessons.data import check_xy, iterate_batches
from kd_lessons.objectives import CrossEntropy, HintonKD, Objective

__all__ = ["TrainOptions", "fit", "distill", "evaluate", "predict_logits"]


@dataclass(frozen=True)
class TrainOptions:
    """The knobs a lesson rarely turns, kept out of the signatures. Notebook 04_distill_mnist.

    weight_decay=None: 5e-4 for `fit`, 0 for `distill`. precision=None follows KD_PRECISION.
    callback(epoch, history) runs after each epoch (True stops); on_step(done, total) after each step.
    """

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


def _amp(device: torch.device, precision: str | None, inference: bool = False):
    """(autocast context factory, GradScaler or None). CPU inference stays fp32: cached logits are exact."""
    dtype = amp_dtype(device, precision)
    if dtype is None or (inference and device.type != "cuda"):
        return contextlib.nullcontext, None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def _optimizer(name: str, params: list, lr: float, weight_decay: float):
    """AdamW or SGD+Nesterov; fused kernels (measured ~2x faster steps on CPU) where torch supports them."""
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


def _to_device(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """Put a whole dataset on the GPU once when it fits easily (< 2 GB); per batch otherwise."""
    if t is None or device.type == "cpu" or t.numel() * t.element_size() > 2 * 1024**3:
        return t
    return t.to(device)


def _seeded(augment, generator):
    """Give an augmentation that takes `generator=` the run's generator, so a seed fixes it too."""
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


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Logits for every row of x (eval mode), returned on the CPU: cache a teacher once. Notebook 04_distill_mnist.

    batch_size=None: 256 on the CPU (measured faster than 1024 there: activations stay in cache), 1024 on
    GPUs. The model is left on the device and in the mode it was in.
    """
    device = torch.device(device) if device is not None else get_device()
    batch_size = batch_size or (256 if device.type == "cpu" else 1024)
    autocast, _ = _amp(device, None, inference=True)
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


def _teacher_source(teacher, objective: Objective, x: torch.Tensor, augment, device: torch.device):
    """Turn `teacher` (None, cached logits or a model) into batch -> teacher output, and a cleanup stack."""
    stack = contextlib.ExitStack()
    if not objective.uses_teacher:
        return (lambda idx, xb: None), stack
    if teacher is None:
        raise ValueError(f"{type(objective).__name__} learns from a teacher: pass teacher=<model> or "
                         f"teacher=<its logits on x>, computed with predict_logits(teacher, x)")
    if isinstance(teacher, nn.Module) and augment is None and not objective.uses_features:
        teacher = predict_logits(teacher, x, device=device)  # once, instead of once per epoch
    if isinstance(teacher, torch.Tensor):
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
        return (lambda idx, xb: logits[idx.to(logits.device)]), stack
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


def _run(model, x, y, objective: Objective, teacher, *, num_epochs, lr, batch_size, augment, val, seed, device,
         options: TrainOptions, desc: str) -> dict:
    """The loop: optimiser + OneCycle schedule, AMP, history, tqdm, callback(epoch, history)."""
    check_xy(x, y)
    _labels(y)
    _check_run(num_epochs, lr, batch_size)
    if val is not None and (len(val) != 2 or check_xy(*val) < 1):
        raise ValueError("val must be a pair (x_val, y_val)")
    device = torch.device(device) if device is not None else get_device()
    generator = seed_everything(seed)
    augment = _seeded(augment, generator)
    teacher_out, cleanup = _teacher_source(teacher, objective, x, augment, device)
    cl = _prepare(model, device)
    objective.to(device).train()
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    opt = _optimizer(options.optimizer, params, lr, options.weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = num_epochs * steps_per_epoch if options.max_steps is None else min(options.max_steps,
                                                                               num_epochs * steps_per_epoch)
    sched = None  # OneCycle needs a few steps to warm up and anneal; tiny runs keep lr constant
    if total >= 10:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25)
    autocast, scaler = _amp(device, options.precision)
    x, y = _to_device(x, device), _to_device(y, device)
    history = {"epoch": [], "step": [], "train_loss": [], "train_accuracy": [], "val_accuracy": [], "val_errors": [],
               "val_step": [], "seconds": [], "lr": [], "step_loss": []}
    last_epoch = min(num_epochs, math.ceil(total / steps_per_epoch))
    val_every = max(1, math.ceil(last_epoch / 20))  # at most ~20 test-set evaluations per run
    bar = tqdm(total=total, desc=desc, disable=not options.progress, leave=False)
    step = 0
    with cleanup:
        for epoch in range(1, num_epochs + 1):
            model.train()
            start = time.perf_counter()
            losses, n_correct, n_seen = [], 0, 0
            for idx, xb, yb in iterate_batches(x, y, batch_size, shuffle=True, generator=generator,
                                               augment=augment, device=device):
                if cl and xb.dim() == 4:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with autocast():
                    t_out = teacher_out(idx, xb)
                    s_out = model(xb, return_features=True) if objective.uses_features else model(xb)
                    logits = s_out[0] if objective.uses_features else s_out
                    if step == 0:
                        objective.check(logits, t_out[0] if objective.uses_features else t_out, yb)
                    loss = objective(s_out, t_out, yb)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                if sched is not None and sched.last_epoch < sched.total_steps - 1:
                    sched.step()
                losses.append(loss.detach().float())
                labelled = yb >= 0  # UNLABELED rows (only the teacher labels them) do not count
                n_correct += ((logits.detach().argmax(1) == yb) & labelled).sum()
                n_seen += labelled.sum()
                step += 1
                bar.update(1)
                if options.on_step is not None:
                    options.on_step(step, total)
                if step >= total:
                    break
            step_losses = torch.stack(losses).cpu().tolist()
            history["epoch"].append(epoch)
            history["step"].append(step)
            history["seconds"].append(time.perf_counter() - start)
            history["step_loss"].extend(step_losses)
            history["train_loss"].append(sum(step_losses) / len(step_losses))
            history["train_accuracy"].append(float(n_correct) / int(n_seen) if int(n_seen) else float("nan"))
            history["lr"].append(opt.param_groups[0]["lr"])
            if val is not None and (epoch % val_every == 0 or step >= total or epoch == num_epochs):
                result = evaluate(model, *val, device=device)
                history["val_accuracy"].append(result["accuracy"])
                history["val_errors"].append(result["errors"])
                history["val_step"].append(step)
            bar.set_postfix(epoch=epoch, loss=f"{history['train_loss'][-1]:.4f}")
            stop = options.callback(epoch, history) if options.callback is not None else False
            if stop or step >= total:
                break
    bar.close()
    model.eval()
    return history


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_epochs: int, lr: float, batch_size: int = 128,
        augment=None, val=None, seed: int = 0, device=None, label_smoothing: float = 0.0,
        options: TrainOptions | None = None) -> dict:
    """Supervised training with cross-entropy: how teachers (and baselines) are made. Notebook 04_distill_mnist.

    AdamW (or SGD+Nesterov, see TrainOptions) with a OneCycle schedule peaking at `lr`; val=(x_val,
    y_val) adds val_accuracy (every epoch, or at ~20 evenly spaced epochs in long runs; val_step says
    when). Returns history, a dict of lists (epoch, step, train_loss, train_accuracy, val_accuracy,
    val_errors, val_step, seconds, lr, step_loss).
    """
    options = options or TrainOptions()
    options = replace(options, weight_decay=5e-4 if options.weight_decay is None else options.weight_decay)
    return _run(model, x, y, CrossEntropy(label_smoothing), None, num_epochs=num_epochs, lr=lr,
                batch_size=batch_size, augment=augment, val=val, seed=seed, device=device, options=options,
                desc="fit")


def distill(student: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher, objective: Objective | None = None,
            num_epochs: int = 10, lr: float = 1e-3, batch_size: int = 128, augment=None, val=None, seed: int = 0,
            device=None, options: TrainOptions | None = None) -> dict:
    """Train `student` to match `teacher` under `objective` (default HintonKD(T=4, alpha=0.9)). Notebook 04_distill_mnist.

    `teacher` is a model (kept in eval mode, never updated, left on its device) or its logits on x
    (one row per row of x, from predict_logits or teachers.cached_logits). Without augmentation a
    teacher model runs once over x and its logits are indexed by batch position; with augmentation,
    or an objective that uses features, it runs on every batch. Other objectives: kd_lessons.methods.
    """
    objective = HintonKD() if objective is None else objective
    if not isinstance(objective, Objective):
        raise ValueError(f"objective={objective!r}: pass an Objective such as HintonKD(T=4.0, alpha=0.9)")
    options = options or TrainOptions()
    options = replace(options, weight_decay=0.0 if options.weight_decay is None else options.weight_decay)
    return _run(student, x, y, objective, teacher, num_epochs=num_epochs, lr=lr, batch_size=batch_size,
                augment=augment, val=val, seed=seed, device=device, options=options, desc="distill")
