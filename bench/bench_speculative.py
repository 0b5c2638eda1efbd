"""Target-only vs speculative decoding of the text teacher, with each draft of lesson 16, side by side in one run.

The target is the course's text teacher (zoo.get_text_teacher, cached); the drafts are the "tiny" students
of kd_lessons.runs.speculative_drafts (scratch, token KD, on-policy FKL, on-policy TVD), trained here with its
recipe's budget (seed 0). Every row decodes the same held-out prompts with the same seed, batch 1, one torch
thread, both models with their key/value cache; the target-only row is timed again right before each gamma's
drafts. Each decoding runs --repeats times (the same ids) and the fastest counts. Columns: tokens/s by wall
clock and by this thread's CPU time (on a shared machine other processes slow the first, not the second),
each as a ratio to target-only, the measured acceptance and ids per target call.

    python bench/bench_speculative.py                 # full-mode teacher and drafts, gamma 1, 2, 4, 8
    python bench/bench_speculative.py --quick         # quick-mode sizes (seconds)
    python bench/bench_speculative.py --gamma 3 --gamma 6 --tokens 48 --prompts 4
"""
from __future__ import annotations

import argparse
import os
import platform

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quick-mode teacher, drafts and sizes")
    parser.add_argument("--gamma", action="append", type=int, default=None, help="draft length (repeatable)")
    parser.add_argument("--tokens", type=int, default=None, help="new ids per prompt (prompt + ids <= context)")
    parser.add_argument("--prompts", type=int, default=None, help="held-out prompts per timed row")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row; the fastest counts")
    args = parser.parse_args()
    if args.quick:
        os.environ["KD_QUICK"] = "1"  # before kd_lessons reads its mode
    from kd_lessons import config
    from kd_lessons.generative.text import load_corpus, sample_windows
    from kd_lessons.generative.zoo import get_text_teacher
    from kd_lessons.runs import speculative_drafts as sd

    rec = sd.recipe(repeats=args.repeats, **{k: v for k, v in (("new_tokens", args.tokens), ("prompts", args.prompts))
                                             if v is not None})
    gammas = args.gamma or [1, 2, 4, 8]
    torch.set_num_threads(1)
    teacher, info = get_text_teacher("shakespeare", progress=False)
    corpus = load_corpus("shakespeare")
    print(f"mode {config.mode()}; {platform.processor() or platform.machine()}; torch {torch.__version__}, 1 thread")
    print(f"target: text teacher, {info['params']:,} params; {rec.prompts} prompts x {rec.new_tokens} ids, T={rec.T}")
    drafts = {}
    for name in rec.drafts:
        drafts[name], seconds, _ = sd.train_draft(name, teacher, corpus, rec, seed=0)
        print(f"trained draft {name!r} ({rec.steps} steps, {seconds:.1f} s)", flush=True)
    prompts = sample_windows(corpus.val, rec.prompt_len, rec.prompts, generator=torch.Generator().manual_seed(1234))[0]
    sd.timed_decode(teacher, drafts[rec.drafts[0]], prompts, rec, gammas[0], 0)  # warm-up
    print(f"\n{'decoding':<40s} {'gamma':>5s} {'tok/s wall':>11s} {'x':>6s} {'tok/s CPU':>10s} {'x':>6s} "
          f"{'alpha':>6s} {'ids/call':>8s}")
    for gamma in gammas:
        base = sd.timed_decode(teacher, None, prompts, rec, gamma, gamma)
        wall, cpu = base["new_tokens"] / base["seconds"], base["new_tokens"] / base["cpu_seconds"]
        print(f"{'target only':<40s} {'-':>5s} {wall:11.1f} {1.0:5.2f}x {cpu:10.1f} {1.0:5.2f}x {'':>6s} {1.0:8.2f}")
        for name, draft in drafts.items():
            out = sd.timed_decode(teacher, draft, prompts, rec, gamma, gamma)
            w, c = out["new_tokens"] / out["seconds"], out["new_tokens"] / out["cpu_seconds"]
            alpha = out["accepted"] / max(out["accepted"] + out["rejected"], 1)
            print(f"{'speculative, ' + name:<40s} {gamma:5d} {w:11.1f} {w / wall:5.2f}x {c:10.1f} {c / cpu:5.2f}x "
                  f"{alpha:6.3f} {out['new_tokens'] / out['target_calls']:8.2f}", flush=True)
    print("\nx: tokens/s over target-only's in the same gamma block. Speculative decoding pays when the draft is "
          "cheap next to the target and the target's (gamma + 1)-position call costs about what a 1-position "
          "call does (lesson 16 measures both).")


if __name__ == "__main__":
    main()
