"""Cached teacher logits must follow shuffled batches, or the student learns wrong targets: exercise 17.

Introduced in notebook 09_coding_exercises; caching is used in notebook 04_distill_mnist
(`data.iterate_batches` yields the positions idx for exactly this reason).
"""
from __future__ import annotations

import torch

from kd_lessons.exercises.core import Exercise, Incorrect, call


class FixCachedLogits(Exercise):
    """Exercise 17 of notebook 09_coding_exercises: cached logits taken by batch position after a shuffle."""

    number, key, title, fn_name = 17, "fix_cached_logits", "Fix: cached teacher logits", "aligned_batches"
    bug, other_mistakes = "misaligned", ("misaligned", "not_shuffled")
    hint_text = ("After shuffling, batch k no longer holds examples k*batch_size to (k+1)*batch_size - 1. "
                 "Which positions does it hold?")
    broken = '''def aligned_batches(x, y, teacher_logits, batch_size, generator):
    order = torch.randperm(len(x), generator=generator)
    for k, start in enumerate(range(0, len(x), batch_size)):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx], teacher_logits[k * batch_size:(k + 1) * batch_size]
'''
    solution_code = '''def aligned_batches(x, y, teacher_logits, batch_size, generator):
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx], teacher_logits[idx]  # the same positions as x and y
'''

    def _check(self, fn, N=10, C=4, batch_size=4):
        """fn(x, y, teacher_logits, batch_size, generator) must yield shuffled (xb, yb, tb) that line up."""
        x = torch.arange(N, dtype=torch.float32)[:, None].repeat(1, 3)  # row i is all i: xb reveals its rows
        y, teacher_logits = torch.randint(0, C, (N,)), torch.randn(N, C)
        batches = call(lambda *a: list(fn(*a)), x, y, teacher_logits, batch_size, torch.Generator().manual_seed(1))
        seen, start = [], 0
        for item in batches:
            if not (isinstance(item, (tuple, list)) and len(item) == 3
                    and all(isinstance(t, torch.Tensor) for t in item)):
                raise Incorrect("yield (xb, yb, tb) triples of tensors, one per batch.", None)
            xb, yb, tb = item
            idx = xb[:, 0].round().long()
            if not torch.equal(yb, y[idx]):
                raise Incorrect("yb does not line up with xb: index x and y with the same idx.", None)
            if not torch.equal(tb, teacher_logits[idx]):
                positional = teacher_logits[start:start + len(xb)]
                if tb.shape == positional.shape and torch.equal(tb, positional):
                    raise Incorrect("the teacher logits are taken by batch position, but the batches are "
                                    "shuffled, so batch k's cached logits belong to other images. Index them "
                                    "with the same positions as x: teacher_logits[idx].", "misaligned")
                raise Incorrect("tb is not teacher_logits for the rows in xb: use teacher_logits[idx].", None)
            seen += idx.tolist()
            start += len(xb)
        if sorted(seen) != list(range(N)):
            raise Incorrect("one epoch must visit every example exactly once.", None)
        if seen == list(range(N)):
            raise Incorrect("the batches come in order: keep the shuffle (it helps SGD) and index the cached "
                            "logits with idx instead.", "not_shuffled")
