"""Forgetting and recovery: fine-tune the student on a new operation, then distil the old skill back on-policy.

Introduced in notebook 15_on_policy_distillation, after Thinking Machines' IF-eval experiment (85 -> 79 -> 83).
The new skill is *carry-less* addition (each digit (x + y) mod 10), asked with the answer-only prompt 'a+b>',
so the old skill (traced addition after 'a+b|') and the new one have different prompts and could coexist.
`forget_and_recover` fine-tunes a copy of a student on it by SFT, then runs an on-policy distillation arm of
runs.on_policy with the old teacher on the old prompts, and scores both skills at the three points.
"""
from __future__ import annotations

import copy

import torch

from kd_lessons.generative import scratchpad as task
from kd_lessons.generative.lm import LMOptions, train_lm
from kd_lessons.runs import on_policy as op

__all__ = ["carryless", "new_skill_sets", "new_skill_accuracy", "forget_and_recover"]


def carryless(a: int, b: int) -> str:
    """Digit-wise (x + y) mod 10 of two equal-length numbers, leading zeros kept. Notebook 15_on_policy_distillation."""
    sa, sb = str(a), str(b)
    if len(sa) != len(sb):
        raise ValueError(f"a={a} and b={b} have {len(sa)} and {len(sb)} digits; use numbers of equal length")
    return "".join(str((int(x) + int(y)) % 10) for x, y in zip(sa, sb))


def new_skill_sets(sets: dict, digits: int, n_train: int = 3000, n_test: int = 200, seed: int = 0) -> dict:
    """Train and test problems of the new operation, disjoint from each other and from sets' test. Notebook 15."""
    train = task.make_problems(n_train, digits, seed=seed + 200, exclude=set(sets["test"]))
    return {"train": train, "test": task.make_problems(n_test, digits, seed=seed + 201, exclude=set(train))}


def new_skill_accuracy(model, problems) -> float:
    """Greedy exact match of carry-less sums after the prompt 'a+b>'. Notebook 15_on_policy_distillation."""
    texts = task.solve(model, problems, with_trace=False)
    return sum(task.parse_answer(t) == carryless(a, b) for t, (a, b) in zip(texts, problems)) / len(problems)


def forget_and_recover(student, teacher, sets: dict, new_sets: dict, rec, seed: int, steps: int = 100,
                       lr: float = 1e-3, arm: str = "OPD full KL") -> dict:
    """old/new skill before, after `steps` of SFT on the new operation, and after `arm` with the old teacher.

    Notebook 15_on_policy_distillation. Returns {"old_before", "old_after_ft", "old_after_opd", "new_before",
    "new_after_ft", "new_after_opd"} (greedy exact match on sets["test"] and new_sets["test"]).
    """
    if arm not in op.ARMS or arm in ("SFT", "REINFORCE", "GRPO"):
        raise ValueError(f"arm={arm!r}: recovery uses the old teacher on-policy, 'OPD' or 'OPD full KL'")
    threads = torch.get_num_threads()
    if rec.threads:
        torch.set_num_threads(rec.threads)  # tiny models: a second thread on a busy CPU only adds overhead
    try:
        return _forget_and_recover(student, teacher, sets, new_sets, rec, seed, steps, lr, arm)
    finally:
        torch.set_num_threads(threads)


def _forget_and_recover(student, teacher, sets, new_sets, rec, seed, steps, lr, arm) -> dict:
    out = {"old_before": op.accuracy(student, sets["test"]),
           "new_before": new_skill_accuracy(student, new_sets["test"])}
    tuned = copy.deepcopy(student)
    texts = [f"{task.prompt(a, b, with_trace=False)}{carryless(a, b)}{task.END}" for a, b in new_sets["train"]]
    torch.manual_seed(seed)
    train_lm(tuned, None, steps, lr=lr, loss_fn=task.masked_cross_entropy, batch_fn=task.TextBatches(texts, 64),
             options=LMOptions(seed=seed, progress=False, warmup=0, desc="new operation"))
    tuned.eval()
    out.update(old_after_ft=op.accuracy(tuned, sets["test"]), new_after_ft=new_skill_accuracy(tuned, new_sets["test"]))
    recovered, _ = op.run_arm(arm, tuned, teacher, sets, rec, seed)
    out.update(old_after_opd=op.accuracy(recovered, sets["test"]),
               new_after_opd=new_skill_accuracy(recovered, new_sets["test"]))
    return out
