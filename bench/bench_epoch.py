"""One MNIST epoch done the PyTorch-tutorial way vs the kd_lessons way, measured side by side.

(a) distilling the 784-800-800-10 MLP from TeacherCNN; (b) training TeacherCNN with labels.
Tutorial way: torchvision datasets.MNIST + ToTensor/Normalize + DataLoader(batch_size=64), teacher
forward under no_grad at every step, fp32, torch.optim.Adam. kd_lessons way: in-memory normalised
tensors, cached teacher logits indexed per batch, fused AdamW, autocast as `config.amp_dtype` picks
(bf16 on CPUs with AMX), channels_last CNNs; the MLP at the batch size of the Hinton reproduction
(`kd_lessons.runs.hinton2015.recipe()`), the CNN at the teacher recipe's (`kd_lessons.teachers.recipe`).
Extra rows take one ingredient away at a time, so you can see where the speed-up comes from.

    python bench/bench_epoch.py            # full 60k-image epochs
    python bench/bench_epoch.py --quick    # a 6k-image subset
"""
from __future__ import annotations

import argparse
import time

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


def tutorial_loader(n: int | None, batch_size: int = TUTORIAL_BATCH) -> DataLoader:
    """The PyTorch MNIST example's input pipeline (PIL images decoded and transformed per sample)."""
    mean, std = DATASETS["mnist"].mean, DATASETS["mnist"].std
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    ds = datasets.MNIST(str(config.data_dir()), train=True, download=False, transform=tf)
    if n is not None:
        ds = Subset(ds, range(n))
    return DataLoader(ds, batch_size=batch_size, shuffle=True)


def tutorial_distill_epoch(student, teacher, loader) -> float:
    """Seconds for one epoch with the teacher run under no_grad at every step."""
    opt = torch.optim.Adam(student.parameters(), lr=LR)
    teacher.eval()
    student.train()
    start = time.perf_counter()
    for xb, yb in loader:
        with torch.no_grad():
            teacher_logits = teacher(xb)
        loss = distillation_loss(student(xb), teacher_logits, yb, T=T, alpha=ALPHA)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def tutorial_fit_epoch(model, loader) -> float:
    """Seconds for one supervised epoch, tutorial style."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    start = time.perf_counter()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6000-image subset instead of all 60000")
    args = parser.parse_args()
    n = 6000 if args.quick else None
    device = torch.device("cpu")  # the tutorial pipeline is timed on the CPU; compare like with like
    print(config.describe(device))  # run it through `make bench`, which sets OMP_WAIT_POLICY=PASSIVE

    start = time.perf_counter()
    x, y = load_tensors("mnist", train=True)
    load_s = time.perf_counter() - start
    if n is not None:
        x, y = x[:n], y[:n]
    loader = tutorial_loader(n)
    mlp_batch, cnn_batch = hinton2015.recipe()["batch_size"], teachers.recipe("mnist")["batch_size"]
    print(f"images per epoch: {len(x)}; tutorial batch {TUTORIAL_BATCH}; kd_lessons batch {mlp_batch} (MLP), "
          f"{cnn_batch} (CNN); kd_lessons load_tensors (verified cache): {load_s:.2f} s (once per process)")

    torch.manual_seed(0)
    teacher = TeacherCNN().eval()  # untrained weights time the same as trained ones
    student0 = MLPStudent((800, 800))
    rows = []

    def kd_epoch(batch_size: int, precision: str | None = None) -> float:
        h = distill(_copy(student0), x, y, cached, HintonKD(T, ALPHA), num_epochs=1, lr=LR, batch_size=batch_size,
                    device=device, options=TrainOptions(progress=False, precision=precision))
        return h["seconds"][0]

    # (a) distillation epoch
    tut = tutorial_distill_epoch(_copy(student0), teacher, loader)
    start = time.perf_counter()
    cached = predict_logits(teacher, x, device=device)
    cache_s = time.perf_counter() - start
    kd = kd_epoch(mlp_batch)
    rows.append(("distill epoch, 784-800-800-10 MLP, logits cached", tut, kd))
    rows.append(("  first epoch incl. caching teacher logits", tut, kd + cache_s))
    rows.append((f"  kd_lessons at batch {KD_BATCH} (fit/distill default)", tut, kd_epoch(KD_BATCH)))
    rows.append(("  kd_lessons in fp32 (precision='fp32')", tut, kd_epoch(mlp_batch, "fp32")))
    tut_same = tutorial_distill_epoch(_copy(student0), teacher, tutorial_loader(n, mlp_batch))
    rows.append((f"  both at batch {mlp_batch}", tut_same, kd))

    # (b) teacher training epoch (no augmentation either way)
    torch.manual_seed(0)
    t0 = TeacherCNN()
    tut = tutorial_fit_epoch(_copy(t0), loader)
    h = fit(_copy(t0), x, y, num_epochs=1, lr=LR, batch_size=cnn_batch, device=device,
            options=TrainOptions(progress=False))
    rows.append(("TeacherCNN training epoch", tut, h["seconds"][0]))
    h = fit(_copy(t0), x, y, num_epochs=1, lr=LR, batch_size=cnn_batch, device=device,
            options=TrainOptions(progress=False, precision="fp32"))
    rows.append(("  kd_lessons in fp32 (precision='fp32')", tut, h["seconds"][0]))

    print(f"\n{'what':52s} {'tutorial s':>11s} {'kd_lessons s':>13s} {'speed-up':>9s}")
    for what, a, b in rows:
        print(f"{what:52s} {a:11.2f} {b:13.2f} {a / b:8.1f}x")
    print("\nTargets (first row of each part): distillation epoch >= 10x, teacher epoch >= 1.3x. Wall times "
          "on a shared machine vary with load; compare the ratios from one run.")


def _copy(model):
    """A fresh copy with the same weights, so both ways start from the same model."""
    import copy

    return copy.deepcopy(model)


if __name__ == "__main__":
    main()
