"""One MNIST epoch done the PyTorch-tutorial way vs the kd_lessons way, side by side on every device here.

(a) distilling the 784-800-800-10 MLP from TeacherCNN; (b) training TeacherCNN with labels.
Tutorial way: torchvision datasets.MNIST + ToTensor/Normalize + DataLoader(batch_size=64) (on CUDA
with the PyTorch MNIST example's num_workers=1, pin_memory=True), every batch moved to the device,
teacher forward under no_grad at every step, fp32, torch.optim.Adam. kd_lessons way: in-memory
normalised tensors, cached teacher logits indexed per batch, fused AdamW, autocast as
`config.amp_dtype` picks (bf16 on CUDA and on CPUs with AMX), channels_last CNNs; the MLP at the
batch size of the Hinton reproduction (`kd_lessons.runs.hinton2015.recipe()`), the CNN at the
TeacherCNN recipe's (`kd_lessons.teachers.recipe("mnist", "cnn")`). Extra rows take one ingredient
away at a time, so you can see where the speed-up comes from.

Devices: always the CPU, plus CUDA and MPS when torch has them; both ways run on the same device,
and each device gets its own table headed by the card or CPU that produced it. GPU work is
synchronised before every timer read.

    python bench/bench_epoch.py                  # full 60k-image epochs on every device
    python bench/bench_epoch.py --quick          # a 6k-image subset
    python bench/bench_epoch.py --device cuda    # one device only (repeatable)
"""
from __future__ import annotations

import argparse
import copy
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from kd_lessons import config, teachers
from kd_lessons.data import DATASETS, load_tensors
from kd_lessons.losses import distillation_loss
from kd_lessons.models import MLPStudent, TeacherCNN
from kd_lessons.objectives import HintonKD
from kd_lessons.runs import hinton2015
from kd_lessons.train import TrainOptions, distill, fit, predict_logits

TUTORIAL_BATCH = 64
KD_BATCH = 128
T, ALPHA, LR = 4.0, 0.9, 1e-3


def available_devices() -> list[torch.device]:
    """The CPU always, then CUDA and MPS where this torch build and machine have them."""
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(torch.device("mps"))
    return devices


def device_name(device: torch.device) -> str:
    """What produced a table: the GPU's name, or the CPU model (from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.processor() or platform.machine()})"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read covers the computation and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def tutorial_loader(n: int | None, device: torch.device, batch_size: int = TUTORIAL_BATCH) -> DataLoader:
    """The PyTorch MNIST example's input pipeline (PIL images decoded and transformed per sample)."""
    mean, std = DATASETS["mnist"].mean, DATASETS["mnist"].std
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    ds = datasets.MNIST(str(config.data_dir()), train=True, download=False, transform=tf)
    if n is not None:
        ds = Subset(ds, range(n))
    extra = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}  # the example's cuda_kwargs
    return DataLoader(ds, batch_size=batch_size, shuffle=True, **extra)


def tutorial_distill_epoch(student, teacher, loader, device: torch.device) -> float:
    """Seconds for one epoch with the teacher run under no_grad at every step, everything on `device`."""
    student, teacher = student.to(device).train(), teacher.to(device).eval()
    opt = torch.optim.Adam(student.parameters(), lr=LR)
    sync(device)
    start = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        with torch.no_grad():
            teacher_logits = teacher(xb)
        loss = distillation_loss(student(xb), teacher_logits, yb, T=T, alpha=ALPHA)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - start


def tutorial_fit_epoch(model, loader, device: torch.device) -> float:
    """Seconds for one supervised epoch, tutorial style, on `device`."""
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sync(device)
    start = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - start


def warm_up(device: torch.device, x, y, teacher, student0) -> None:
    """A few untimed steps of both ways, so neither pays the device's first-use costs (CUDA context, kernels)."""
    xs, ys = x[:512], y[:512]
    logits = predict_logits(teacher, xs, device=device)
    quiet = TrainOptions(progress=False)
    distill(_copy(student0), xs, ys, logits, HintonKD(T, ALPHA), num_epochs=1, lr=LR,
            options=replace(quiet, device=device))
    fit(_copy(teacher), xs, ys, num_epochs=1, lr=LR, options=replace(quiet, device=device))
    student, net = _copy(student0).to(device), _copy(teacher).to(device)
    opt = torch.optim.Adam(list(student.parameters()) + list(net.parameters()), lr=LR)
    xb, yb = xs[:TUTORIAL_BATCH].to(device), ys[:TUTORIAL_BATCH].to(device)
    for _ in range(3):
        loss = distillation_loss(student(xb), net(xb), yb, T=T, alpha=ALPHA)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(device)


def bench_device(device: torch.device, x, y, n: int | None, mlp_batch: int, cnn_batch: int) -> list[tuple]:
    """(what, tutorial seconds, kd_lessons seconds) rows for one device; both ways run on it."""
    torch.manual_seed(0)
    teacher = TeacherCNN().eval()  # untrained weights time the same as trained ones
    student0 = MLPStudent((800, 800))
    warm_up(device, x, y, teacher, student0)
    loader = tutorial_loader(n, device)
    rows = []

    def kd_epoch(batch_size: int, precision: str | None = None) -> float:
        # history["seconds"] is read after the epoch's losses are copied to the host, i.e. after the GPU is done
        h = distill(_copy(student0), x, y, cached, HintonKD(T, ALPHA), num_epochs=1, lr=LR,
                    options=TrainOptions(progress=False, precision=precision, batch_size=batch_size, device=device))
        return h["seconds"][0]

    # (a) distillation epoch
    tut = tutorial_distill_epoch(_copy(student0), _copy(teacher), loader, device)
    sync(device)
    start = time.perf_counter()
    cached = predict_logits(teacher, x, device=device)  # returned on the CPU, so the GPU is done when it returns
    cache_s = time.perf_counter() - start
    kd = kd_epoch(mlp_batch)
    rows.append(("distill epoch, 784-800-800-10 MLP, logits cached", tut, kd))
    rows.append(("  first epoch incl. caching teacher logits", tut, kd + cache_s))
    rows.append((f"  kd_lessons at batch {KD_BATCH} (fit/distill default)", tut, kd_epoch(KD_BATCH)))
    rows.append(("  kd_lessons in fp32 (precision='fp32')", tut, kd_epoch(mlp_batch, "fp32")))
    tut_same = tutorial_distill_epoch(_copy(student0), _copy(teacher), tutorial_loader(n, device, mlp_batch), device)
    rows.append((f"  both at batch {mlp_batch}", tut_same, kd))

    # (b) teacher training epoch (no augmentation either way)
    torch.manual_seed(0)
    t0 = TeacherCNN()
    tut = tutorial_fit_epoch(_copy(t0), loader, device)
    for label, precision in (("TeacherCNN training epoch", None), ("  kd_lessons in fp32 (precision='fp32')", "fp32")):
        h = fit(_copy(t0), x, y, num_epochs=1, lr=LR,
                options=TrainOptions(progress=False, precision=precision, batch_size=cnn_batch, device=device))
        rows.append((label, tut, h["seconds"][0]))
    return rows


def print_table(device: torch.device, rows: list[tuple]) -> None:
    """One table per device, headed by the card or CPU that produced it."""
    print(f"\n== {device.type}: {device_name(device)} ==")
    print(config.describe(device))
    print(f"{'what':52s} {'tutorial s':>11s} {'kd_lessons s':>13s} {'speed-up':>9s}")
    for what, a, b in rows:
        print(f"{what:52s} {a:11.2f} {b:13.2f} {a / b:8.1f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6000-image subset instead of all 60000")
    parser.add_argument("--device", action="append", default=None, metavar="NAME",
                        help="bench only this device (cpu, cuda, cuda:1, mps); repeatable; default: every one here")
    args = parser.parse_args()
    n = 6000 if args.quick else None
    devices = available_devices() if not args.device else [torch.device(config.get_device(d)) for d in args.device]
    # run it through `make bench`, which sets OMP_WAIT_POLICY=PASSIVE (README, Settings)
    print("devices:", ", ".join(f"{d} ({device_name(d)})" for d in devices))

    start = time.perf_counter()
    x, y = load_tensors("mnist", train=True)
    load_s = time.perf_counter() - start
    if n is not None:
        x, y = x[:n], y[:n]
    mlp_batch, cnn_batch = hinton2015.recipe().batch_size, teachers.recipe("mnist", "cnn").batch_size
    print(f"images per epoch: {len(x)}; tutorial batch {TUTORIAL_BATCH}; kd_lessons batch {mlp_batch} (MLP), "
          f"{cnn_batch} (CNN); kd_lessons load_tensors (verified cache): {load_s:.2f} s (once per process)")

    for device in devices:
        print_table(device, bench_device(device, x, y, n, mlp_batch, cnn_batch))
    print("\nTargets (first row of each part, CPU): distillation epoch >= 10x, teacher epoch >= 1.3x. Wall times "
          "on a shared machine vary with load; compare the ratios from one run, and devices only by their own rows.")


def _copy(model):
    """A fresh copy with the same weights, so both ways start from the same model."""
    return copy.deepcopy(model)


if __name__ == "__main__":
    main()
