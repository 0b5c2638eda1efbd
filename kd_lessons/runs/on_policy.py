"""On-policy distillation against RL and SFT on lesson 13's scratchpad addition, with a compute ledger per arm.

Introduced in notebook 15_on_policy_distillation. `warm_start` teaches a small student by SFT on lesson
13's teacher's traces (not to the end: it must have room to improve). Every arm of ARMS continues from
that same student with the same prompts and the same number of sequences per round: more SFT on teacher
traces (off-policy distillation), REINFORCE with a baseline and GRPO on a 0/1 verifier reward, and
on-policy distillation (OPD: the student samples with the KV cache, the teacher scores every token, the
per-token reverse KL is the loss). Each arm keeps a `Ledger` (tokens sampled by student and teacher,
tokens the teacher scored, gradient steps, seconds); `run_arm` scores greedy exact match on the
validation problems as it goes, and `compare` runs every arm over seeds and scores the test problems.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from kd_lessons.generative import rl
from kd_lessons.generative import scratchpad as task
from kd_lessons.generative.kv_cache import cached_generate
from kd_lessons.generative.lm import LMOptions, train_lm
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs import trace_students as rr

__all__ = ["ARMS", "OnPolicyRecipe", "recipe", "problem_sets", "Ledger", "verify", "completion_mask",
           "sample_completions", "warm_start", "run_arm", "accuracy", "compare"]

ARMS = {"SFT": "more SFT on teacher traces (off-policy distillation)",
        "REINFORCE": "0/1 verifier reward, minus its group's mean",
        "GRPO": "0/1 verifier reward, group-normalised, clipped ratio, 2 steps per batch",
        "OPD": "on-policy distillation: per-token reverse KL to the teacher on the student's samples",
        "OPD full KL": "on-policy distillation, the exact reverse KL over the vocabulary at each sampled prefix"}


@dataclass(frozen=True)
class OnPolicyRecipe(Recipe):
    """The student, its warm start and the arms' budget in the current mode. Notebook 15_on_policy_distillation.

    The teacher is lesson 13's (trace_students.recipe(): full mode 1..3-digit sums). The student is
    smaller than lesson 13's and its warm start shorter, so that it is right on part of the 3-digit
    problems only: an arm that saturates at 100% cannot be compared.
    """

    student_arch: tuple[int, int, int] = pick((32, 2, 2), (20, 1, 2))
    warm_traces: int = pick(2000, 300)
    warm_steps: int = pick(250, 150)
    warm_batch: int = 64
    warm_lr: float = 1e-2
    rounds: int = pick(100, 15)  # sampling rounds of every arm
    sequences: int = pick(64, 32)  # sequences sampled (or teacher traces read) per round
    group: int = 4  # RL: completions per prompt, so sequences // group prompts per round
    grpo_epochs: int = 2  # GRPO's gradient steps per batch of samples (the clip matters from the second)
    clip: float = 0.2
    # AdamW's learning rate per arm, picked on the validation problems (2 seeds, 1e-4 / 3e-4 / 1e-3): at 1e-3
    # REINFORCE and GRPO collapse to 0% and sampled-token OPD falls from 70% to 20% before it recovers
    lr_sft: float = 1e-3
    lr_rl: float = 1e-4
    lr_opd: float = 1e-4
    lr_opd_full: float = 1e-3
    T: float = 1.0  # sampling temperature of student and teacher
    n_val: int = pick(300, 100)
    n_test: int = pick(500, 200)
    eval_every: int = pick(25, 5)
    threads: int | None = 1  # torch threads in compare (tiny models: a second thread on a busy CPU cost 100x)
    seed: int = 0

    def _check(self) -> None:
        self._positive("warm_traces", "warm_steps", "warm_batch", "warm_lr", "rounds", "sequences", "group",
                       "grpo_epochs", "lr_sft", "lr_rl", "lr_opd", "lr_opd_full", "T", "n_val", "n_test", "eval_every")
        self._between("clip", 0.01, 0.99)
        if self.sequences % self.group:
            self._fail("sequences", f"must be a multiple of group={self.group} (whole groups per round)")


def recipe(**overrides) -> OnPolicyRecipe:
    """The lesson's recipe in the current mode; overrides replace fields. Notebook 15_on_policy_distillation."""
    return OnPolicyRecipe(**check_recipe(OnPolicyRecipe, overrides))


def problem_sets(rec: OnPolicyRecipe, teacher_rec=None) -> dict:
    """Disjoint problems: warm (1..d digits), prompts (d digits, one per sequence), val, test. Notebook 15.

    None of them is among the teacher's training problems of lesson 13 (teacher_rec, its recipe).
    """
    teacher_rec = teacher_rec or rr.recipe()
    d, seen = teacher_rec.digits, set(rr.problem_sets(teacher_rec)["teacher_train"])
    out = {}
    for i, (name, n, digits) in enumerate((("warm", rec.warm_traces, list(range(1, d + 1))),
                                           ("prompts", rec.rounds * rec.sequences, d), ("val", rec.n_val, d),
                                           ("test", rec.n_test, d))):
        out[name] = task.make_problems(n, digits, seed=rec.seed + 100 + i, exclude=seen)
        seen |= set(out[name])
    return out


@dataclass
class Ledger:
    """What an arm has spent so far. Notebook 15_on_policy_distillation."""

    student_tokens: int = 0  # ids the student sampled
    teacher_sampled: int = 0  # ids the teacher sampled (its traces)
    teacher_scored: int = 0  # sampled ids the teacher gave a log-probability (one forward pass)
    grad_steps: int = 0
    seconds: float = 0.0

    def row(self) -> dict:
        return asdict(self)


def verify(texts, problems) -> tuple[torch.Tensor, dict]:
    """0/1 rewards (final answer exactly right) and the counts right / wrong / unparseable. Notebook 15.

    Malformed output (no '>', no digits after it, no text at all) is counted as unparseable with reward 0,
    never an error: a policy that writes garbage must be scored, not crash the loop.
    """
    if len(texts) != len(problems):
        raise ValueError(f"got {len(texts)} texts for {len(problems)} problems; pass one completion per problem")
    counts, rewards = {"right": 0, "wrong": 0, "unparseable": 0}, []
    for text, (a, b) in zip(texts, problems):
        answer = task.parse_answer(text) if isinstance(text, str) else None
        kind = "unparseable" if answer is None else "right" if answer == str(a + b) else "wrong"
        counts[kind] += 1
        rewards.append(float(kind == "right"))
    return torch.tensor(rewards), counts


def completion_mask(seq: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """[B, L-1] flags over the targets seq[:, 1:]: the completion, up to and including its first END. Notebook 15."""
    if not 1 <= prompt_len < seq.shape[1]:
        raise ValueError(f"prompt_len={prompt_len} must be in 1..{seq.shape[1] - 1} (the sequences' length - 1)")
    targets = seq[:, 1:]
    after = torch.arange(targets.shape[1]) >= prompt_len - 1
    is_end = (targets == task.VOCAB.index(task.END)) & after
    ended_before = (is_end.long().cumsum(1) - is_end.long()) > 0  # an END earlier in the completion
    return after & ~ended_before


def sample_completions(model, problems, rec: OnPolicyRecipe, generator: torch.Generator, repeat: int = 1):
    """(seq [B, P + N], mask [B, P + N - 1], texts): each problem's prompt sampled `repeat` times. Notebook 15."""
    prompts = [p for p in problems for _ in range(repeat)]
    ids = torch.stack([task.encode(task.prompt(a, b)) for a, b in prompts])
    digits = len(str(prompts[0][0]))
    seq = cached_generate(model, ids, task.completion_length(digits), T=rec.T, generator=generator)
    texts = [task.decode(row).split(task.END, 1)[0] + task.END if task.END in task.decode(row) else task.decode(row)
             for row in seq]
    return seq, completion_mask(seq, ids.shape[1]), texts


def accuracy(model, problems) -> float:
    """Greedy exact match with a trace. Notebook 15_on_policy_distillation."""
    return rr.accuracy(model, problems, with_trace=True)


def warm_start(teacher, sets: dict, rec: OnPolicyRecipe, seed: int, teacher_rec=None) -> tuple:
    """(student, ledger): a small student after rec.warm_steps of SFT on the teacher's traces. Notebook 15."""
    teacher_rec = teacher_rec or rr.recipe()
    torch.manual_seed(seed)
    student = rr._model(rec.student_arch, teacher_rec.context)
    rl.check_same_vocab(student.vocab_size, teacher.vocab_size)
    start = time.perf_counter()
    data = rr.teacher_data(teacher, sets["warm"], teacher_rec.replace(trace_T=rec.T), seed=seed)
    batches = task.TextBatches(data["texts"], rec.warm_batch)
    train_lm(student, None, rec.warm_steps, lr=rec.warm_lr, loss_fn=task.masked_cross_entropy, batch_fn=batches,
             options=LMOptions(seed=seed, progress=False, desc="warm start"))
    taught = sum(task.completion_length(len(str(a))) for a, _ in sets["warm"])
    return student.eval(), Ledger(teacher_sampled=taught, grad_steps=rec.warm_steps,
                                  seconds=time.perf_counter() - start)


def _step(opt, student, loss, ledger: Ledger) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    opt.step()
    ledger.grad_steps += 1


def _log_probs(model, seq: torch.Tensor) -> torch.Tensor:
    return rl.sampled_log_probs(model(seq[:, :-1]), seq[:, 1:])


def _round(arm: str, student, teacher, opt, problems, rec: OnPolicyRecipe, g: torch.Generator, ledger: Ledger):
    """One round of `arm` on `problems` (one per sequence; RL arms use the first sequences // group)."""
    if arm == "SFT":  # the teacher writes a trace per prompt, the student imitates it
        seq, mask, _ = sample_completions(teacher, problems, rec, g)
        ledger.teacher_sampled += seq.shape[0] * task.completion_length(len(str(problems[0][0])))
        student.train()
        logp = _log_probs(student, seq)
        return _step(opt, student, -(logp * mask).sum() / mask.sum(), ledger)
    if arm in ("OPD", "OPD full KL"):
        seq, mask, _ = sample_completions(student, problems, rec, g)
        ledger.student_tokens += seq.shape[0] * task.completion_length(len(str(problems[0][0])))
        with torch.no_grad():
            teacher_logits = teacher(seq[:, :-1])
        ledger.teacher_scored += int(mask.sum())
        student.train()
        logits = student(seq[:, :-1])
        if arm == "OPD full KL":
            return _step(opt, student, rl.reverse_kl_full(logits, teacher_logits, mask), ledger)
        reward = rl.reverse_kl_reward(logits, teacher_logits, seq[:, 1:], mask)
        logp = rl.sampled_log_probs(logits, seq[:, 1:])
        return _step(opt, student, rl.policy_gradient_loss(logp, reward, mask), ledger)
    prompts = problems[:rec.sequences // rec.group]  # RL: a group of completions per prompt
    seq, mask, texts = sample_completions(student, prompts, rec, g, repeat=rec.group)
    ledger.student_tokens += seq.shape[0] * task.completion_length(len(str(prompts[0][0])))
    rewards, _ = verify(texts, [p for p in prompts for _ in range(rec.group)])
    rewards = rewards.view(len(prompts), rec.group)
    student.train()
    if arm == "REINFORCE":
        advantage = rl.baseline_advantages(rewards).reshape(-1, 1).expand_as(mask)
        return _step(opt, student, rl.policy_gradient_loss(_log_probs(student, seq), advantage, mask), ledger)
    if arm != "GRPO":
        raise ValueError(f"arm={arm!r}: use one of {list(ARMS)}")
    advantage = rl.group_advantages(rewards).reshape(-1, 1).expand_as(mask)
    if not advantage.any():  # every group all right or all wrong: no signal, no step
        return None
    with torch.no_grad():
        old = _log_probs(student, seq)
    for _ in range(rec.grpo_epochs):
        _step(opt, student, -rl.clipped_objective(_log_probs(student, seq), old, advantage, mask, rec.clip), ledger)


def run_arm(arm: str, warm, teacher, sets: dict, rec: OnPolicyRecipe, seed: int, warm_ledger: Ledger | None = None,
            progress: bool = False) -> tuple:
    """(student, curve rows): `arm` continued from a copy of `warm`, val exact match every eval_every rounds.

    Each row: arm, seed, round, val, and the Ledger so far (the warm start's included if given). Prompts
    are the same for every arm of a seed, in a seed-shuffled order. Notebook 15_on_policy_distillation.
    """
    if arm not in ARMS:
        raise ValueError(f"arm={arm!r}: use one of {list(ARMS)}")
    rl.check_same_vocab(warm.vocab_size, teacher.vocab_size)
    student, ledger = copy.deepcopy(warm), copy.deepcopy(warm_ledger or Ledger())
    lr = {"SFT": rec.lr_sft, "OPD": rec.lr_opd, "OPD full KL": rec.lr_opd_full}.get(arm, rec.lr_rl)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(sets["prompts"]), generator=torch.Generator().manual_seed(seed)).tolist()
    rows = [{"arm": arm, "seed": seed, "round": 0, "val": accuracy(student, sets["val"]), **ledger.row()}]
    for r in tqdm(range(1, rec.rounds + 1), desc=arm, disable=not progress, leave=False):
        start = time.perf_counter()
        problems = [sets["prompts"][i] for i in order[(r - 1) * rec.sequences:r * rec.sequences]]
        _round(arm, student, teacher, opt, problems, rec, g, ledger)
        ledger.seconds += time.perf_counter() - start
        if r % rec.eval_every == 0 or r == rec.rounds:
            rows.append({"arm": arm, "seed": seed, "round": r, "val": accuracy(student, sets["val"]), **ledger.row()})
    return student.eval(), rows


def compare(teacher, sets: dict, rec: OnPolicyRecipe, seeds, arms=None, teacher_rec=None) -> tuple:
    """(curves, finals): every arm x seed from that seed's warm start. Notebook 15_on_policy_distillation.

    curves: run_arm's rows (the warm start as arm 'warm start'); finals: one row per arm and seed with
    the test exact match and the final ledger. students: {(arm, seed): the trained student}.
    """
    if not seeds:
        raise ValueError("seeds is empty; pass e.g. seeds=[0, 1, 2, 3, 4]")
    threads = torch.get_num_threads()
    if rec.threads:
        torch.set_num_threads(rec.threads)
    try:
        return _compare(teacher, sets, rec, seeds, list(arms or ARMS), teacher_rec)
    finally:
        torch.set_num_threads(threads)


def _compare(teacher, sets: dict, rec: OnPolicyRecipe, seeds, arms: list, teacher_rec) -> tuple:
    curves, finals, students = [], [], {}
    for seed in tqdm(seeds, desc="seeds"):
        warm, ledger = warm_start(teacher, sets, rec, seed, teacher_rec)
        finals.append({"arm": "warm start", "seed": seed, "test": accuracy(warm, sets["test"]), **ledger.row()})
        for arm in arms:
            student, rows = run_arm(arm, warm, teacher, sets, rec, seed, ledger)
            curves += rows
            students[(arm, seed)] = student
            finals.append({**rows[-1], "test": accuracy(student, sets["test"])})
        students[("warm start", seed)] = warm
    return pd.DataFrame(curves), pd.DataFrame(finals), students
