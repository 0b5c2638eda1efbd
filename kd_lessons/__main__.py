"""Command line: `python -m kd_lessons data|teacher|prepare-class|hinton|notebooks|app`, the course outside a notebook.

Introduced in notebook 00_start_here. Each subcommand is a `_cmd_<name>(args) -> exit code` function
registered in `build_parser()`, so others can be added the same way. Settings come from the
environment (README, "Settings"), read by `kd_lessons.config`.
"""
from __future__ import annotations

import argparse
import sys

from kd_lessons.datasets import DATASETS, DEFAULT

CLASSROOM = [name for name, info in DATASETS.items() if info.classroom]  # prepare-class builds their heatmaps


def _cmd_data(args: argparse.Namespace) -> int:
    """Fetch, verify and cache every dataset and text corpus; exit 0 when at least MNIST is ready."""
    from kd_lessons import cache, config, data
    from kd_lessons.generative import text

    print(f"data folder:  {config.data_dir()}\ncache folder: {cache.path('tensors', '')}")
    offline = True if args.offline else None
    images = [n for n in args.only if n in DATASETS] if args.only else None
    texts = [n for n in args.only if n in text.TEXT_CORPORA] if args.only else list(text.TEXT_CORPORA)
    report = data.prepare_all(images, progress=not args.quiet, offline=offline) if images != [] else {}
    for name, row in report.items():
        if row["ok"]:
            print(f"[ok]     {name}: {row['train']} train / {row['test']} test images (from {row['source']})")
        else:
            print(f"[failed] {name}:\n{row['error']}")
    text_report = text.prepare_text(texts, offline=offline) if texts else {}
    for name, row in text_report.items():  # the text corpora of notebook 10 (kd_lessons.generative.text)
        print(f"[ok]     {name}: {row['chars']:,} characters of text (from {row['source']})" if row["ok"]
              else f"[failed] {name}:\n{row['error']}")
    failed = [name for name, row in {**report, **text_report}.items() if not row["ok"]]
    if failed:
        print(f"\nNot available: {', '.join(failed)} (see the reasons and fixes above).")
    core = [name for name in report if DATASETS[name].core]  # the course's core lessons need only these (MNIST)
    if core:
        return 0 if all(report[name]["ok"] for name in core) else 1
    return 1 if failed else 0


def _cmd_teacher(args: argparse.Namespace) -> int:
    """Train (or load from the verified cache) a dataset's teacher and print its measured test accuracy."""
    from kd_lessons import config, teachers
    from kd_lessons.train import TrainOptions

    print(config.describe())
    _, info = teachers.get_teacher(args.dataset, args.arch, retrain=args.retrain,
                                   options=TrainOptions(progress=not args.quiet))
    for part in info.get("members", []) + [info]:
        name = part["recipe"]["arch"]
        print(f"{args.dataset} {name}: {part['test_accuracy']:.2%} test accuracy ({part['test_errors']} errors of "
              f"{part['n_test']}), {part['params']:,} parameters, trained in {part['train_seconds']} s on "
              f"{part['device']}")
    return 0


def _cmd_prepare_class(args: argparse.Namespace) -> int:
    """Train and cache everything the classroom app shows (teacher, heatmap, seed spread); print the time."""
    import time

    from kd_lessons import config, teachers
    from kd_lessons.runs import grid
    from kd_lessons.train import TrainOptions

    unknown = [d for d in args.datasets if d not in CLASSROOM]
    if unknown:
        print(f"prepare-class: no heatmap for {unknown}; use {' and/or '.join(CLASSROOM)}", file=sys.stderr)
        return 2
    print(config.describe())
    for dataset in args.datasets or [DEFAULT]:
        start = time.perf_counter()
        _, info = teachers.get_teacher(dataset, options=TrainOptions(progress=not args.quiet))
        teacher_s = time.perf_counter() - start
        rec = grid.recipe(dataset, student_width=args.width)
        Ts, alphas = grid.default_grid()
        table = grid.load_or_run(rec, Ts, alphas, progress=not args.quiet)
        spread = grid.spread(rec, grid.SPREAD_CELLS, progress=not args.quiet)
        total = time.perf_counter() - start
        span = 100 * (table["accuracy"].max() - table["accuracy"].min())
        noise = 100 * spread["accuracy_std"].max()
        print(f"{dataset}: teacher {info['test_errors']} test errors (ready in {teacher_s:.0f} s); heatmap "
              f"{len(Ts)} x {len(alphas)} spans {span:.2f} accuracy points, seed spread {noise:.2f} points "
              f"({span / noise:.1f}x); all cached in {total:.0f} s")
    return 0


def _cmd_hinton(args: argparse.Namespace) -> int:
    """Run the Hinton et al. (2015) reproduction and print the paper-vs-ours table (notebook 07)."""
    from kd_lessons import config
    from kd_lessons.runs import hinton2015

    s = hinton2015.recipe(**({"seeds": tuple(args.seeds)} if args.seeds else {}))
    print(config.describe())
    results = hinton2015.run_all(s)
    print(hinton2015.to_markdown(results["table"].drop(columns=["ours_mean", "ours_std"])))
    print(f"\nT sweep:\n{results['t_sweep'].to_string(index=False)}\nwall time: {results['wall_seconds']:.0f} s")
    return 0


def _cmd_notebooks(args: argparse.Namespace) -> int:
    """Copy the lessons to a folder of the learner's; edited copies there are kept unless --force."""
    from kd_lessons import course

    try:
        report = course.copy_notebooks(args.dest, force=args.force)
    except ValueError as exc:
        print(f"notebooks: {exc}", file=sys.stderr)
        return 1
    for what in ("copied", "overwritten", "unchanged"):
        if report[what]:
            print(f"{what} ({len(report[what])}): {', '.join(report[what])}")
    print(f"\nThe lessons are in {args.dest}. Open them with `jupyter lab {args.dest}` "
          f"(set KD_QUICK=1 for small, fast settings).")
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    """Start the classroom app (Streamlit) from wherever kd_lessons is installed; extra args go to streamlit."""
    import importlib.util
    import os
    import subprocess

    from kd_lessons import course

    if importlib.util.find_spec("streamlit") is None:
        print("app: Streamlit is not installed; install the app extra: pip install 'kd-lessons[app]' "
              "(from a clone: pip install -e '.[app]')", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "streamlit", "run", str(course.app_script()), *args.streamlit_args]
    print(" ".join(command), flush=True)
    if os.name == "posix":  # become the server: Ctrl-C and a stop signal reach Streamlit itself
        os.execv(sys.executable, command)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130


def _text_corpora() -> list[str]:
    from kd_lessons.generative.text import TEXT_CORPORA

    return list(TEXT_CORPORA)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; add a subparser and a `_cmd_*` function for each new command."""
    parser = argparse.ArgumentParser(prog="python -m kd_lessons", description="kd-lessons utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    names = sorted(DATASETS)
    p = sub.add_parser("data", help="download/copy, verify and cache the datasets (MNIST, Fashion-MNIST, CIFAR-10) "
                                    "and the Shakespeare text")
    p.add_argument("--only", nargs="+", choices=names + sorted(_text_corpora()), help="just these datasets/corpora")
    p.add_argument("--offline", action="store_true", help="skip torchvision downloads (as KD_OFFLINE=1 does)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data)
    p = sub.add_parser("teacher", help="train (once) and cache a teacher; prints its test accuracy")
    p.add_argument("dataset", choices=names)
    p.add_argument("--arch", help="cnn, mlp or ensemble (default: the course's teacher; see kd_lessons.teachers)")
    p.add_argument("--retrain", action="store_true", help="ignore the cached checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_teacher)
    p = sub.add_parser("prepare-class", help="before class: train and cache the teacher and the app's heatmap")
    p.add_argument("datasets", nargs="*", metavar="DATASET",  # argparse rejects an empty '*' list with choices
                   help=f"datasets to prepare, from {CLASSROOM} (default: {DEFAULT})")
    p.add_argument("--width", type=int, default=100, help="student width of the heatmap (the app's default: 100)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_prepare_class)
    p = sub.add_parser("hinton", help="the Hinton et al. (2015) MNIST reproduction (KD_QUICK=1: smoke-test sizes)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: 0 1 2 in full mode)")
    p.set_defaults(func=_cmd_hinton)
    p = sub.add_parser("notebooks", help="copy the lessons to a folder (keeps your edited copies unless --force)")
    p.add_argument("dest", metavar="DEST", help="folder to copy the lessons into (created if missing)")
    p.add_argument("--force", action="store_true", help="overwrite edited copies in DEST (your edits are lost)")
    p.set_defaults(func=_cmd_notebooks)
    p = sub.add_parser("app", help="start the classroom app (Streamlit); arguments after it go to `streamlit run`")
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, help="e.g. --server.port 8502")
    p.set_defaults(func=_cmd_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m kd_lessons`."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "app":  # only `app` passes unknown options on (to streamlit)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "app":
        args.streamlit_args = extra + args.streamlit_args
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
