"""Distilled drafts for speculative decoding: acceptance and real speed of drafts of one size, per seed.

Introduced in lesson 16 (DistillSpec, Zhou et al., 2024). The target is the course's text teacher; every draft
is a zoo "tiny" student with the seed's init and the same step budget: "scratch" (cross-entropy), "token KD"
(forward KL on corpus windows: off-policy), "on-policy FKL" (DistillSpec: the draft samples, the target scores
every sampled position), "on-policy TVD" (the same data with total variation, since the acceptance rate is
1 - TV) and WARM_START (token KD for half the steps, then on-policy TVD: DistillSpec distils a trained draft).
Measured per draft and seed: the exact alpha = mean 1 - TV(p, q) on held-out text and on the target's own
samples (the contexts decoding sees), bits/char, and per gamma the counts and tokens/s of real speculative runs
beside target-only decoding timed in the same loop, by wall clock and by CPU time (this thread's, which other
work on a shared machine does not enter), with the theoretical speedup from the measured alpha and cost ratio
c and a cost model that also counts the target's (gamma + 1)-position call. Each seed redraws init, batch
order and samples; held-out windows and prompts are fixed. Cached (kind "sweeps") by recipe, seeds, mode and
the teacher's weights.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from kd_lessons import cache, config, stats
from kd_lessons.generative import lm_objectives as gm
from kd_lessons.generative import speculative as sp
from kd_lessons.generative.kv_cache import cached_generate
from kd_lessons.generative.lm import LMOptions, train_lm
from kd_lessons.generative.text import Corpus, iterate_windows, sample_windows
from kd_lessons.generative.transformer import bits_per_char
from kd_lessons.generative.zoo import make_text_student
from kd_lessons.recipes import Recipe, check_recipe, pick

__all__ = ["DRAFTS", "WARM_START", "SpecDraftsRecipe", "recipe", "total_variation", "OnPolicyTVD", "train_draft", "run",
           "call_seconds", "timed_decode", "cached_run", "alpha_table", "speed_table", "paired_alpha"]

WARM_START = "token KD, then on-policy TVD"  # DistillSpec's order: a distilled draft first, then its own samples
DRAFTS = ("scratch", "token KD", "on-policy FKL", "on-policy TVD", WARM_START)


@dataclass(frozen=True)
class SpecDraftsRecipe(Recipe):
    """The drafts' budget and the measurement's sizes in the current mode. Notebook 16."""

    drafts: tuple[str, ...] = DRAFTS
    size: str = "tiny"  # a key of zoo.student_sizes()
    context: int = pick(64, 32)
    steps: int = pick(100, 8)
    batch_size: int = 16
    lr: float = 3e-3
    T: float = 1.0  # distillation, sampling and acceptance temperature
    onpolicy_prompt: int = pick(40, 16)  # corpus characters before the draft's own samples
    gammas: tuple[int, ...] = pick((1, 2, 3, 4, 5, 6, 7, 8), (1, 4))
    prompts: int = pick(2, 1)  # held-out prompts per timed run
    prompt_len: int = pick(16, 8)
    new_tokens: int = pick(48, 16)
    alpha_windows: int = pick(32, 4)  # held-out windows for the exact alpha
    alpha_samples: int = pick(16, 2)  # target samples (per seed) for the exact alpha on the target's own text
    eval_chars: int = pick(10_000, 2_000)
    repeats: int = pick(2, 1)  # each timed decoding runs this often (same ids); the fastest counts
    timing_calls: int = pick(60, 10)  # single-position forward calls timed per model for the cost ratio c
    threads: int | None = 1  # torch threads while it runs; None: leave torch's setting

    def _check(self) -> None:
        self._positive("context", "steps", "batch_size", "lr", "T", "onpolicy_prompt", "prompts", "prompt_len",
                       "new_tokens", "alpha_windows", "alpha_samples", "eval_chars", "repeats",
                       "timing_calls", "threads")
        unknown = [d for d in self.drafts if d not in DRAFTS]
        if unknown or not self.drafts:
            raise ValueError(f"drafts={self.drafts!r}: use some of {DRAFTS}")
        if not self.gammas or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in self.gammas):
            raise ValueError(f"gammas={self.gammas!r}: draft lengths, integers >= 1")
        if self.prompt_len + self.new_tokens > self.context:
            raise ValueError(f"prompt_len + new_tokens = {self.prompt_len + self.new_tokens} exceeds the context "
                             f"of {self.context}; shorten one of them")
        if not self.onpolicy_prompt < self.context:
            self._fail("onpolicy_prompt", f"must be shorter than context={self.context}")


def recipe(**overrides) -> SpecDraftsRecipe:
    """The recipe in the current mode; overrides replace fields. Notebook 16."""
    return SpecDraftsRecipe(**check_recipe(SpecDraftsRecipe, overrides))


def total_variation(student_logits, teacher_logits, mask=None, T: float = 1.0) -> torch.Tensor:
    """Mean over (masked) positions of TV(p, q) = 0.5 sum_v |p_v - q_v|: 1 - acceptance rate. Notebook 16."""
    p = F.softmax(teacher_logits.detach().float() / T, dim=-1)
    tv = 0.5 * (p - F.softmax(student_logits.float() / T, dim=-1)).abs().sum(-1)
    return tv.mean() if mask is None else (tv * mask).sum() / mask.sum().clamp_min(1)


class OnPolicyTVD(gm.OnPolicyKD):
    """OnPolicyKD's data (the draft samples, the teacher scores) with total variation as the loss. Notebook 16."""

    def __init__(self, teacher, **kwargs):
        super().__init__(teacher, divergence="forward", **kwargs)
        self.divergence = "tvd"

    def _divergence(self, student_logits, teacher_logits, mask):
        return total_variation(student_logits, teacher_logits, mask)


def _loss(name: str, teacher, rec: SpecDraftsRecipe, seed: int):
    if name == "scratch":
        return gm.scratch_loss
    if name == "token KD":
        return gm.TokenKD(teacher, T=rec.T)
    kwargs = {"lam": 1.0, "prompt_len": rec.onpolicy_prompt, "T_sample": rec.T, "seed": seed}
    return gm.OnPolicyKD(teacher, "forward", **kwargs) if name == "on-policy FKL" else OnPolicyTVD(teacher, **kwargs)


def train_draft(name: str, teacher, corpus: Corpus, rec: SpecDraftsRecipe, seed: int):
    """(draft, wall seconds, CPU seconds): a zoo student trained by one of DRAFTS (one init per seed for all)."""
    if name not in DRAFTS:
        raise ValueError(f"draft {name!r}: use one of {DRAFTS}")
    draft = make_text_student(corpus.vocab_size, rec.size, seed=seed, context=rec.context)
    cpu_start, seconds = time.thread_time(), 0.0
    warm = min(rec.steps - 1, max(1, rec.steps // 2))
    phases = [("token KD", warm), ("on-policy TVD", rec.steps - warm)] if name == WARM_START else [(name, rec.steps)]
    for phase, steps in phases:  # a warm start: a new warm-up and cosine schedule and fresh AdamW moments
        history = train_lm(draft, corpus.train, steps, lr=rec.lr, batch_size=rec.batch_size,
                           loss_fn=_loss(phase, teacher, rec, seed),
                           options=LMOptions(context=rec.context, seed=seed, progress=False, desc=name))
        seconds += history["seconds"]
    return draft.eval(), seconds, time.thread_time() - cpu_start


def call_seconds(model, prompt: torch.Tensor, calls: int, width: int = 1) -> float:
    """Median CPU seconds (this thread's) of one cached forward call on `width` new positions after the prompt.

    width 1 is the per-id cost; CPU time, not wall time, so other processes on the cores do not enter c.
    """
    runner, seq, times = sp._Cached(model), prompt.tolist() + [0] * width, []
    with sp._inference(model):
        runner.feed(seq, len(seq) - width)
        for _ in range(calls):
            start = time.thread_time()
            runner.feed(seq, len(seq))
            times.append(time.thread_time() - start)
            runner.rollback(len(seq) - width)
    return float(torch.tensor(times).median())


def timed_decode(target, draft, prompts, rec: SpecDraftsRecipe, gamma: int, seed: int) -> dict:
    """Counts and seconds of speculative (draft given) or target-only (draft None) decoding of every prompt.

    The same ids rec.repeats times (the generator reseeded each time); seconds is the fastest repeat's wall
    time, the one least disturbed by other work on the machine, cpu_seconds its CPU time (this thread's).
    """
    times, cpu = [], []
    for _ in range(rec.repeats):
        g = torch.Generator().manual_seed(seed)
        total = {"proposed": 0, "accepted": 0, "rejected": 0, "target_calls": 0, "draft_calls": 0, "new_tokens": 0}
        start, cpu_start = time.perf_counter(), time.thread_time()
        for prompt in prompts:
            out = (sp.target_only(target, prompt, rec.new_tokens, rec.T, g) if draft is None else
                   sp.speculative_generate(target, draft, prompt, rec.new_tokens, gamma, rec.T, g))
            for k in total:
                total[k] += getattr(out, k)
        times.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - cpu_start)
    return {**total, "seconds": min(times), "cpu_seconds": min(cpu)}


def _seed_rows(teacher, corpus, rec, seed, fixed) -> tuple[list, list]:
    """One seed: train every draft, measure its alphas and cost ratio, then time every gamma side by side."""
    prompts, windows = fixed
    g = torch.Generator().manual_seed(10_000 + seed)
    samples = torch.stack([cached_generate(teacher, p, rec.context - rec.prompt_len, T=rec.T, generator=g)
                           for p in sample_windows(corpus.val, rec.prompt_len, rec.alpha_samples, generator=g)[0]])
    drafts, rows = {}, []
    target_call = call_seconds(teacher, prompts[0], rec.timing_calls)
    for name in rec.drafts:
        draft, seconds, cpu_seconds = train_draft(name, teacher, corpus, rec, seed)
        drafts[name] = draft
        draft_call = call_seconds(draft, prompts[0], rec.timing_calls)
        rows.append({"seed": seed, "draft": name, "train_seconds": seconds, "train_cpu_seconds": cpu_seconds,
                     "val_bpc": bits_per_char(draft, corpus.val, rec.context, max_chars=rec.eval_chars),
                     "alpha_heldout": sp.exact_alpha(teacher, draft, windows, rec.T),
                     "alpha_target": sp.exact_alpha(teacher, draft, samples[:, :-1], rec.T, rec.prompt_len - 1),
                     "draft_call_ms": 1e3 * draft_call, "target_call_ms": 1e3 * target_call,
                     "c": draft_call / target_call})
    speed = []
    for gamma in rec.gammas:  # the baseline is timed inside the same loop, right before the drafts
        verify_cost = call_seconds(teacher, prompts[0], rec.timing_calls, gamma + 1) / target_call
        base = timed_decode(teacher, None, prompts, rec, gamma, seed * 100 + gamma)
        for row in rows:
            out = timed_decode(teacher, drafts[row["draft"]], prompts, rec, gamma, seed * 100 + gamma)
            alpha = sp.alpha_from_counts(out["accepted"], out["rejected"])
            speed.append({"seed": seed, "draft": row["draft"], "gamma": gamma, **out, "alpha_hat": alpha,
                          "target_seconds": base["seconds"], "target_cpu_seconds": base["cpu_seconds"],
                          "tokens_per_s": out["new_tokens"] / out["seconds"],
                          "target_tokens_per_s": base["new_tokens"] / base["seconds"],
                          "speedup": base["seconds"] / out["seconds"],
                          "cpu_speedup": base["cpu_seconds"] / out["cpu_seconds"],
                          "tokens_per_call": out["new_tokens"] / out["target_calls"],
                          "expected_tokens_per_call": sp.expected_tokens_per_call(alpha, gamma),
                          "theoretical_speedup": sp.theoretical_speedup(alpha, gamma, row["c"]),
                          "verify_cost": verify_cost,  # a target call on gamma + 1 positions / on one
                          "cost_model_speedup": sp.expected_tokens_per_call(alpha, gamma)
                          / (gamma * row["c"] + verify_cost)})
    return rows, speed


def run(rec: SpecDraftsRecipe, teacher, corpus: Corpus, seeds=(0, 1, 2)) -> dict:
    """Every draft x seed: "drafts" rows (alphas, bits/char, c) and "speed" rows (per gamma). Notebook 16.

    Also "recipe", "seeds", "seconds" and "cpu_seconds" (this call's wall and process CPU time) and "threads".
    """
    if not seeds:
        raise ValueError("seeds is empty; pass e.g. seeds=(0, 1, 2)")
    if teacher.context < rec.context:
        raise ValueError(f"rec.context={rec.context} exceeds the teacher's context of {teacher.context}")
    threads, start, cpu_start = torch.get_num_threads(), time.perf_counter(), time.process_time()
    if rec.threads:
        torch.set_num_threads(rec.threads)  # batch-1 decoding of tiny models: extra threads only add overhead
    try:
        fixed_g = torch.Generator().manual_seed(1234)  # the test set: fixed prompts and windows
        prompts = sample_windows(corpus.val, rec.prompt_len, rec.prompts, generator=fixed_g)[0]
        windows = torch.cat([x for x, _ in iterate_windows(corpus.val, rec.context, rec.alpha_windows,
                                                           rec.alpha_windows)])
        drafts, speed = [], []
        for seed in seeds:
            d, s = _seed_rows(teacher, corpus, rec, seed, (prompts, windows))
            drafts, speed = drafts + d, speed + s
    finally:
        torch.set_num_threads(threads)
    return {"drafts": drafts, "speed": speed, "recipe": rec.asdict(), "seeds": list(seeds),
            "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
            "threads": rec.threads}


def cached_run(rec: SpecDraftsRecipe, teacher, corpus: Corpus, seeds=(0, 1, 2), refresh: bool = False) -> dict:
    """`run`, cached (cache.build_once) by recipe, seeds, mode, corpus and teacher weights. Notebook 16."""
    blob_key = cache.key({"recipe": rec.asdict(), "seeds": list(seeds), "mode": config.mode(), "corpus": corpus.name,
                          "teacher": cache.state_digest(teacher), "version": 1})
    path = cache.path("sweeps", f"speculative-{config.mode()}-{blob_key}.pt")
    return cache.build_once(path, {"key": blob_key, "kind": "kd_lessons.speculative_drafts"},
                            lambda: run(rec, teacher, corpus, seeds), "the speculative-decoding drafts",
                            refresh=refresh)


def _interval(values) -> stats.Interval:
    return stats.mean_interval(list(values))


def alpha_table(result: dict) -> pd.DataFrame:
    """Per draft: mean and 95% interval over seeds of each alpha, bits/char and c. Notebook 16."""
    df, speed = pd.DataFrame(result["drafts"]), pd.DataFrame(result["speed"])
    pooled = speed.groupby(["draft", "seed"])[["accepted", "rejected"]].sum()
    df = df.join((pooled["accepted"] / (pooled["accepted"] + pooled["rejected"])).rename("alpha_measured"),
                 on=["draft", "seed"])
    rows = []
    for name, group in df.groupby("draft", sort=False):
        row = {"draft": name, "seeds": len(group)}
        for col in ("alpha_heldout", "alpha_target", "alpha_measured", "val_bpc", "c"):
            iv = _interval(group[col])
            row.update({col: iv.mean, f"{col}_low": iv.low, f"{col}_high": iv.high})
        rows.append(row)
    return pd.DataFrame(rows)


def speed_table(result: dict) -> pd.DataFrame:
    """Per draft and gamma, means over seeds: tokens/s (wall, CPU) of target-only beside speculative, speedups.

    Notebook 16. speedup / cpu_speedup: target-only seconds over speculative seconds (wall clock / CPU time);
    theoretical_speedup: Leviathan et al.'s formula from the measured alpha and c; cost_model_speedup: the same
    with the measured cost of the target's (gamma + 1)-position call.
    """
    df = pd.DataFrame(result["speed"])
    df = df.assign(target_cpu_tokens_per_s=df["new_tokens"] / df["target_cpu_seconds"],
                   cpu_tokens_per_s=df["new_tokens"] / df["cpu_seconds"])
    cols = ["target_tokens_per_s", "tokens_per_s", "speedup", "target_cpu_tokens_per_s", "cpu_tokens_per_s",
            "cpu_speedup", "theoretical_speedup", "cost_model_speedup", "verify_cost", "tokens_per_call",
            "expected_tokens_per_call", "alpha_hat"]
    out = df.groupby(["draft", "gamma"], sort=False)[cols].mean().reset_index()
    spread = df.groupby(["draft", "gamma"], sort=False)["cpu_speedup"].apply(lambda v: _interval(v).half_width)
    return out.assign(cpu_speedup_half_width=spread.to_numpy())


def paired_alpha(result: dict, draft: str, baseline: str = "scratch", value: str = "alpha_target") -> stats.Interval:
    """Per-seed paired difference draft - baseline of one alpha column, with its 95% t-interval. Notebook 16."""
    df = pd.DataFrame(result["drafts"]).set_index(["draft", "seed"])[value]
    seeds = result["seeds"]
    return stats.paired([df[(draft, s)] for s in seeds], [df[(baseline, s)] for s in seeds])
