"""Writing and reading a top-k logit store (kd_lessons.generative.logit_store), positions per second, side by side.

For the course's 80-character vocabulary and for SmolLM2's 49,152 tokens, at a few k: write = top-k + rest from
the teacher's logits (log_softmax, topk, logsumexp of the rest), fp16 values and uint8 / uint16 ids, shards written
atomically with sha256 sidecars; read = every shard verified (sha256) and loaded through numpy memmap, and the
same without verification. The logits are random (the store's speed does not depend on what they say) and are
made before the timers start, so no teacher runs here. One table per run, headed by the CPU that produced it;
bytes on disk are measured from the files and shown beside the arithmetic.

    python bench/bench_logit_store.py            # 65,536 positions (80 characters), 1,024 (49,152 tokens)
    python bench/bench_logit_store.py --quick    # a sixteenth of that
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from kd_lessons.generative import logit_store as ls

CONTEXT = 64
CASES = ((80, (1, 5, 20, 80)), (49_152, (1, 20, 100)))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def best_of(fn, repeats: int = 3) -> float:
    """The fastest of a few runs, in seconds (the least disturbed by other work on the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_case(vocab_size: int, k: int, logits: torch.Tensor, windows: torch.Tensor, root: Path) -> tuple:
    """(vocab, k, arithmetic bytes, measured bytes, write, verified read, plain read) in positions/s."""
    layout, positions = ls.StoreLayout(k, vocab_size, "fp16"), windows.shape[0] * CONTEXT
    counter = iter(range(1000))

    def write():
        ls.write_store(root / f"V{vocab_size}-k{k}-{next(counter)}", windows, logits, layout, shard_windows=256)

    write_s = best_of(write)
    directory = root / f"V{vocab_size}-k{k}-0"
    verified = best_of(lambda: ls.read_store(directory, verify=True))
    plain = best_of(lambda: ls.read_store(directory, verify=False))
    size = ls.store_bytes(directory)
    return (vocab_size, k, layout.bytes_per_position, size["topk_bytes_per_position"], positions / write_s,
            positions / verified, positions / plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a sixteenth of the positions")
    args = parser.parse_args()
    scale = 16 if args.quick else 1
    g = torch.Generator().manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for vocab_size, ks in CASES:
            n = max(1, (1024 if vocab_size < 1000 else 16) // scale)  # 16 x 64 x 49,152 fp32 logits: 200 MB
            windows = torch.randint(0, vocab_size, (n, CONTEXT + 1), generator=g)
            logits = torch.randn(n, CONTEXT, vocab_size, generator=g) * 3
            rows += [bench_case(vocab_size, k, logits, windows, Path(tmp)) for k in ks]
    print(f"\n== cpu: {cpu_name()} ({torch.get_num_threads()} torch threads) ==")
    print(f"{'vocab':>7s} {'k':>4s} {'bytes/pos':>10s} {'on disk':>8s} {'write pos/s':>12s} "
          f"{'read pos/s (sha256)':>20s} {'read pos/s (no check)':>22s}")
    for vocab_size, k, arithmetic, measured, write, verified, plain in rows:
        print(f"{vocab_size:>7,d} {k:>4d} {arithmetic:>10d} {measured:>8.1f} {write:>12,.0f} {verified:>20,.0f} "
              f"{plain:>22,.0f}", flush=True)


if __name__ == "__main__":
    main()
