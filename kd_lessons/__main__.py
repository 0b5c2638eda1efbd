"""Command line: `python -m kd_lessons data` prepares the datasets offline-first.

Introduced in notebook 00_start_here. Each subcommand is a `_cmd_<name>(args) -> exit code` function
registered in `build_parser()`, so others (e.g. `teacher`) can be added the same way.
"""
from __future__ import annotations

import argparse
import os
import sys


def _cmd_data(args: argparse.Namespace) -> int:
    """Fetch, verify and cache every dataset; exit 0 when at least MNIST is ready."""
    if args.offline:
        os.environ["KD_OFFLINE"] = "1"
    from kd_lessons import config, data

    print(f"data folder:  {config.data_dir()}\ncache folder: {config.cache_dir() / 'tensors'}")
    report = data.prepare_all(args.only or None, progress=not args.quiet)
    for name, row in report.items():
        if row["ok"]:
            print(f"[ok]     {name}: {row['train']} train / {row['test']} test images (from {row['source']})")
        else:
            print(f"[failed] {name}:\n{row['error']}")
    failed = [name for name, row in report.items() if not row["ok"]]
    if failed:
        print(f"\nNot available: {', '.join(failed)} (see the reasons and fixes above).")
    if "mnist" in report:  # the course's core lessons need only MNIST
        return 0 if report["mnist"]["ok"] else 1
    return 1 if failed else 0


def _cmd_teacher(args: argparse.Namespace) -> int:
    """Train (or load from the verified cache) a dataset's teacher and print its measured test accuracy."""
    from kd_lessons import config, zoo

    print(config.describe())
    teacher = zoo.get_teacher(args.dataset, retrain=args.retrain, progress=not args.quiet)
    info = teacher.info
    print(f"{args.dataset} teacher: {info['test_accuracy']:.2%} test accuracy ({info['test_errors']} errors of "
          f"{info['n_test']}), {info['params']} parameters, trained in {info['train_seconds']} s on "
          f"{info['device']}\ncheckpoint: {zoo.checkpoint_path(args.dataset)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; add a subparser and a `_cmd_*` function for each new command."""
    parser = argparse.ArgumentParser(prog="python -m kd_lessons", description="kd-lessons utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="download/copy, verify and cache the datasets (MNIST, Fashion-MNIST, CIFAR-10)")
    p.add_argument("--only", nargs="+", choices=["mnist", "fashion_mnist", "cifar10"], help="just these datasets")
    p.add_argument("--offline", action="store_true", help="skip torchvision downloads (same as KD_OFFLINE=1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data)
    p = sub.add_parser("teacher", help="train (once) and cache a teacher; prints its test accuracy")
    p.add_argument("dataset", choices=["mnist", "fashion_mnist", "cifar10"])
    p.add_argument("--retrain", action="store_true", help="ignore the cached checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_teacher)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m kd_lessons`."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
