"""Training loops: supervised `fit`, Hinton-style `distill`, `evaluate` and `predict_logits`.

Introduced in notebook 04_distill_mnist. Data stay in memory as tensors and are batched by
`kd_lessons.data.iterate_batches`; a fixed teacher's logits are computed once and indexed per
batch. Training steps autocast to `config.amp_dtype` (bf16 on CUDA and on AMX CPUs, fp16 with a
GradScaler on older GPUs); optimisers use fused kernels where torch has them; CNNs run channels_last.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
import time
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from kd_lessons.config import amp_dtype, get_device, seed_everything
from kd_lessons.data import iterate_batches
from kd_lessons.losses import distillation_loss

__all__ = ["fit", "distill", "evaluate", "predict_logits"]


def _check_xy(x, y, what: str = "x, y") -> None:
    """Inputs must be a float tensor and matching int64 labels."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{what} must be torch tensors, got {type(x).__name__} and {type(y).__name__}; "
                         f"use kd_lessons.data.load_tensors(name)")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{what} have {len(x)} and {len(y)} rows: they must be equal and non-zero")
    if y.dtype != torch.int64:
        raise ValueError(f"labels have dtype {y.dtype}; pass class indices as int64 (y.long())")


def _check_run(num_epochs, lr, batch_size) -> None:
    """Reject nonsense hyper-parameters before any work starts."""
    if not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs={num_epochs!r}: pass a positive integer such as num_epochs=5")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r}: pass a positive learning rate such as lr=1e-3")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: pass a positive integer such as batch_size=128")


def _is_cnn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _prepare(model: nn.Module, device: torch.device) -> bool:
    """Move the model; CNNs go channels_last (faster on CUDA and, measured here, on CPU too)."""
    model.to(device)
    cl = _is_cnn(model)
    if cl:
        model.to(memory_format=torch.channels_last)
    return cl


def _amp(device: torch.device, inference: bool = False):
    """(autocast context factory, GradScaler or None). CPU inference stays fp32: cached logits are exact."""
    dtype = amp_dtype(device)
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
    """Logits for every row of x (eval mode, on the CPU): cache a teacher once. Notebook 04_distill_mnist.

    batch_size=None: 256 on the CPU (measured faster than 1024 there: activations stay in cache), 1024 on GPUs.
    """
    device = torch.device(device) if device is not None else get_device()
    batch_size = batch_size or (256 if device.type == "cpu" else 1024)
    was_training = model.training
    cl = _prepare(model, device)
    model.eval()
    autocast, _ = _amp(device, inference=True)
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        if cl and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast():
            out.append(model(xb).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None,
             device: torch.device | str | None = None) -> dict:
    """Accuracy, error count and per-class accuracy as plain numbers. Notebook 04_distill_mnist."""
    _check_xy(x, y)
    logits = predict_logits(model, x, batch_size, device)
    pred, y = logits.argmax(1), y.cpu()
    correct = pred == y
    num_classes = max(logits.shape[1], int(y.max()) + 1)
    per_class = [float(correct[y == c].float().mean()) if bool((y == c).any()) else float("nan")
                 for c in range(num_classes)]
    return {"accuracy": float(correct.float().mean()), "errors": int((~correct).sum()), "n": len(y),
            "per_class_accuracy": per_class}


def _run(model, x, y, batch_loss, *, num_epochs, lr, batch_size, augment, x_val, y_val, device, seed,
         progress, callback, optimizer, weight_decay, max_steps, extra_params=(), desc="fit") -> dict:
    """Shared loop: optimiser + OneCycle schedule, AMP, history, tqdm, callback(epoch, history)."""
    _check_xy(x, y)
    _check_run(num_epochs, lr, batch_size)
    if (x_val is None) != (y_val is None):
        raise ValueError("pass both x_val and y_val (or neither) to track validation accuracy")
    generator = seed_everything(seed)
    augment = _seeded(augment, generator)
    cl = _prepare(model, device)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params)
    opt = _optimizer(optimizer, params, lr, weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = num_epochs * steps_per_epoch if max_steps is None else min(max_steps, num_epochs * steps_per_epoch)
    sched = None  # OneCycle needs a few steps to warm up and anneal; tiny runs keep lr constant
    if total >= 10:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25)
    autocast, scaler = _amp(device)
    x, y = _to_device(x, device), _to_device(y, device)
    history = {"epoch": [], "train_loss": [], "train_accuracy": [], "val_accuracy": [], "val_errors": [],
               "seconds": [], "lr": [], "step_loss": []}
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    step = 0
    for epoch in range(1, num_epochs + 1):
        model.train()
        start = time.perf_counter()
        losses, n_correct, n_seen = [], 0, 0
        for idx, xb, yb in iterate_batches(x, y, batch_size, shuffle=True, generator=generator,
                                           augment=augment, device=device):
            if cl and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast():
                loss, logits = batch_loss(idx, xb, yb)
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
            n_correct += (logits.detach().argmax(1) == yb).sum()
            n_seen += len(yb)
            step += 1
            bar.update(1)
            if step >= total:
                break
        step_losses = torch.stack(losses).cpu().tolist()
        history["epoch"].append(epoch)
        history["seconds"].append(time.perf_counter() - start)
        history["step_loss"].extend(step_losses)
        history["train_loss"].append(sum(step_losses) / len(step_losses))
        history["train_accuracy"].append(float(n_correct) / n_seen)
        history["lr"].append(opt.param_groups[0]["lr"])
        if x_val is not None:
            result = evaluate(model, x_val, y_val, device=device)
            history["val_accuracy"].append(result["accuracy"])
            history["val_errors"].append(result["errors"])
        bar.set_postfix(epoch=epoch, loss=f"{history['train_loss'][-1]:.4f}",
                        **({"val_acc": f"{history['val_accuracy'][-1]:.4f}"} if x_val is not None else {}))
        stop = callback(epoch, history) if callback is not None else False
        if stop or step >= total:
            break
    bar.close()
    model.eval()
    return history


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_epochs: int, lr: float,
        batch_size: int = 128, augment=None, x_val=None, y_val=None, device=None, seed: int = 0,
        progress: bool = True, callback: Callable | None = None, optimizer: str = "adamw",
        weight_decay: float = 5e-4, label_smoothing: float = 0.0, max_steps: int | None = None) -> dict:
    """Supervised training with cross-entropy: how teachers (and baselines) are made. Notebook 04_distill_mnist.

    AdamW (or SGD+Nesterov) with a OneCycle schedule peaking at `lr`. Returns history, a dict of
    lists (epoch, train_loss, train_accuracy, val_accuracy, val_errors, seconds, lr, step_loss).
    callback(epoch, history) runs after each epoch; returning True stops training.
    """
    device = torch.device(device) if device is not None else get_device()

    def batch_loss(idx, xb, yb):
        logits = model(xb)
        return F.cross_entropy(logits, yb, label_smoothing=label_smoothing), logits

    return _run(model, x, y, batch_loss, num_epochs=num_epochs, lr=lr, batch_size=batch_size, augment=augment,
                x_val=x_val, y_val=y_val, device=device, seed=seed, progress=progress, callback=callback,
                optimizer=optimizer, weight_decay=weight_decay, max_steps=max_steps, desc="fit")


def distill(student: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher: nn.Module | None = None,
            teacher_logits: torch.Tensor | None = None, T: float = 4.0, alpha: float = 0.9,
            num_epochs: int = 10, lr: float = 1e-3, batch_size: int = 128, augment=None, x_val=None,
            y_val=None, device=None, seed: int = 0, progress: bool = True, callback: Callable | None = None,
            optimizer: str = "adamw", weight_decay: float = 0.0, max_steps: int | None = None,
            feature_loss: Callable | None = None, beta: float = 0.0) -> dict:
    """Train `student` on alpha * T^2 KL(teacher || student at T) + (1 - alpha) * CE. Notebook 04_distill_mnist.

    Give a `teacher` model (kept in eval mode, never updated) or precomputed `teacher_logits`
    (one row per row of x). Without augmentation the teacher runs once over x and its logits are
    indexed by batch position; with augmentation it runs on every augmented batch. Optional
    feature distillation (notebook 05_feature_distillation): loss += beta * feature_loss(
    student_features, teacher_features) with the feature lists from return_features=True; an
    nn.Module feature_loss (e.g. holding HintRegressors) is trained along with the student.
    """
    if (teacher is None) == (teacher_logits is None):
        raise ValueError("pass exactly one of teacher= (a model) or teacher_logits= (a tensor of shape "
                         f"[len(x), num_classes]); got teacher={type(teacher).__name__}, "
                         f"teacher_logits={type(teacher_logits).__name__}")
    if teacher_logits is not None and augment is not None:
        raise ValueError("teacher_logits were computed on the un-augmented x, so with augment they would "
                         "not match the augmented batches the student sees; pass teacher=<model> instead "
                         "(it is then run on every augmented batch) or set augment=None")
    if feature_loss is not None and teacher is None:
        raise ValueError("feature_loss needs the teacher's feature maps: pass teacher=<model>, not teacher_logits")
    device = torch.device(device) if device is not None else get_device()
    if teacher is not None:
        teacher_cl = _prepare(teacher, device)
        teacher.eval()
        if augment is None and feature_loss is None:
            teacher_logits = predict_logits(teacher, x, device=device)
            teacher = None
    if teacher_logits is not None:
        if teacher_logits.dim() != 2 or len(teacher_logits) != len(x):
            raise ValueError(f"teacher_logits has shape {list(teacher_logits.shape)} but x has {len(x)} rows; "
                             f"compute them with predict_logits(teacher, x) on the same x")
        teacher_logits = teacher_logits.to(device).float()
    extra = list(feature_loss.parameters()) if isinstance(feature_loss, nn.Module) else []
    if isinstance(feature_loss, nn.Module):
        feature_loss.to(device).train()

    def batch_loss(idx, xb, yb):
        if teacher is None:
            logits = student(xb)
            return distillation_loss(logits.float(), teacher_logits[idx.to(teacher_logits.device)], yb,
                                     T=T, alpha=alpha), logits
        with torch.inference_mode():
            t_in = xb.contiguous(memory_format=torch.channels_last) if teacher_cl and xb.dim() == 4 else xb
            t_out = teacher(t_in, return_features=feature_loss is not None)
        if feature_loss is None:
            logits = student(xb)
            return distillation_loss(logits.float(), t_out.float().clone(), yb, T=T, alpha=alpha), logits
        logits, s_feats = student(xb, return_features=True)
        t_logits, t_feats = t_out[0].float().clone(), [f.clone() for f in t_out[1]]
        loss = distillation_loss(logits.float(), t_logits, yb, T=T, alpha=alpha)
        return loss + beta * feature_loss(s_feats, t_feats), logits

    return _run(student, x, y, batch_loss, num_epochs=num_epochs, lr=lr, batch_size=batch_size, augment=augment,
                x_val=x_val, y_val=y_val, device=device, seed=seed, progress=progress, callback=callback,
                optimizer=optimizer, weight_decay=weight_decay, max_steps=max_steps, extra_params=extra,
                desc="distill")
