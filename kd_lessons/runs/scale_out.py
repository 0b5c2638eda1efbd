"""Scale out: distil an MNIST student from a teacher on N processes with torchrun and DDP (README, "Scale out").

`torchrun --nproc_per_node 2 -m kd_lessons.runs.scale_out`
runs the same `train.distill` in every process: `distributed.start()` joins the process group (gloo on the
CPU, nccl on CUDA), the student is wrapped in DistributedDataParallel and each rank trains on its half of
every global batch; rank 0 alone shows progress, prints and saves. `python -m kd_lessons.runs.scale_out`
(one process) trains the same student on the whole batches, which is how tests/test_ddp.py checks the two agree.
"""
from __future__ import annotations

import argparse
import json

import torch

from kd_lessons import distributed
from kd_lessons.data import load_tensors, stratified_subset
from kd_lessons.models import MLPStudent
from kd_lessons.objectives import HintonKD
from kd_lessons.teachers import get_teacher
from kd_lessons.train import TrainOptions, distill, evaluate

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kd_lessons.runs.scale_out", description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=10_000, help="class-balanced MNIST training images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=256, help="the global batch, split over the processes")
    p.add_argument("--hidden", type=int, default=256, help="width of the MLP student's hidden layer")
    p.add_argument("--T", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default=None, help="fp32 for exact comparisons (default: KD_PRECISION)")
    p.add_argument("--teacher", default="cnn", help="a teachers.get_teacher arch (cnn, mlp) or a torch.save'd model")
    p.add_argument("--out", default=None, help="rank 0 saves {'student': state_dict, 'history': ...} here")
    return p


def _teacher(spec: str) -> torch.nn.Module:
    """The cached MNIST teacher of that arch (trained once), or a whole model saved with torch.save."""
    if spec in ("cnn", "mlp", "ensemble"):
        return get_teacher("mnist", spec)[0]
    return torch.load(spec, weights_only=False)


def main(argv=None) -> dict:
    """Distil a small MLP student from the teacher, data-parallel under torchrun (README, "Scale out")."""
    args = _parser().parse_args(argv)
    teacher = _teacher(args.teacher).eval()  # before the process group: a cached teacher trains once, alone
    device = distributed.start()
    try:
        x, y = load_tensors("mnist", train=True)
        x, y = stratified_subset(x, y, args.n_train, seed=0)
        torch.manual_seed(args.seed)
        student = MLPStudent((args.hidden,))
        options = TrainOptions(batch_size=args.batch_size, seed=args.seed, device=device, precision=args.precision,
                               progress=distributed.is_main())
        history = distill(student, x, y, teacher, HintonKD(args.T, args.alpha), num_epochs=args.epochs, lr=args.lr,
                          options=options)
        summary = {"world_size": distributed.world_size(), "steps": history["step"][-1],
                   "train_loss": history["train_loss"][-1]}
        if distributed.is_main():
            x_test, y_test = load_tensors("mnist", train=False)
            summary["test_accuracy"] = evaluate(student, x_test, y_test, device=device)["accuracy"]
            print(json.dumps(summary))
            if args.out:
                torch.save({"student": {k: v.cpu() for k, v in student.state_dict().items()}, "history": history,
                            "summary": summary}, args.out)
        return summary
    finally:
        distributed.stop()


if __name__ == "__main__":
    main()
