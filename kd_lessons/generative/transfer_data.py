"""What a teacher prepares once for the generative KD plug-ins, and what everything costs (CostMeter).

Introduced in notebook 10_generative_kd. `transfer_corpus` (sequence-level KD: the teacher continues corpus
prompts, eval mode, no grad; `cached_transfer_corpus` writes it once) and `topk_pool` (an API's answer: the
teacher's top-k log-probs at every position) feed `lm_objectives.SequenceKD` and `lm_objectives.TopKKD`.
`CostMeter` counts teacher and student forward positions, generated characters and the positions that carry
a loss during the runs; the lesson checks these counts against the closed-form cost model (with and without a KV
cache), so a miscount in either one fails an assert.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kd_lessons import cache
from kd_lessons.generative.kv_cache import cached_generate, cached_positions
from kd_lessons.generative.text import sample_windows
from kd_lessons.generative.transformer import generate
from kd_lessons.losses import check_T

__all__ = ["CostMeter", "teacher_logits", "TransferSettings", "transfer_corpus", "cached_transfer_corpus",
           "topk_pool"]


@dataclasses.dataclass
class CostMeter:
    """What a method spent: forward positions of teacher and student, generated characters, trained positions."""

    trained_positions: int = 0            # positions whose loss the student trains on
    teacher_positions: int = 0            # teacher forward positions spent scoring (KD targets)
    teacher_generation_positions: int = 0  # teacher forward positions spent generating (as run: cached or not)
    teacher_generated: int = 0            # characters the teacher generated
    student_generation_positions: int = 0  # student forward positions spent sampling
    student_generated: int = 0            # characters the student generated
    sampled_batches: int = 0              # on-policy batches (student samples)
    corpus_batches: int = 0               # batches of corpus windows

    def add(self, other: "CostMeter") -> "CostMeter":
        """Counts of both meters added up (a run plus its share of a cache)."""
        return CostMeter(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _generation_positions(batch: int, prompt_len: int, num_tokens: int, context: int) -> int:
    """Forward positions `generate` computes (the prefix is re-run each step, cropped to the context)."""
    return batch * sum(min(prompt_len + i, context) for i in range(num_tokens))


def teacher_logits(teacher: nn.Module, x: torch.Tensor, meter: CostMeter | None = None) -> torch.Tensor:
    """The teacher's logits in eval mode without a graph; the teacher's own train/eval mode is restored."""
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            out = teacher(x)
    finally:
        teacher.train(was_training)
    if meter is not None:
        meter.teacher_positions += x.numel()
    return out


@dataclasses.dataclass(frozen=True)
class TransferSettings:
    """A transfer corpus: n_sequences corpus prompts of prompt_len ids continued to length + 1 at T. Notebook 10.

    kv_cache=True writes with `kv_cache.cached_generate` (the same distribution, a fraction of the positions).
    """

    n_sequences: int
    prompt_len: int
    length: int
    T: float = 1.0
    greedy: bool = False
    seed: int = 0
    kv_cache: bool = False

    def __post_init__(self):
        if not 1 <= self.prompt_len < self.length + 1 or self.n_sequences < 1:
            raise ValueError(f"n_sequences={self.n_sequences}, prompt_len={self.prompt_len}, length={self.length}: "
                             "need n >= 1 and 1 <= prompt_len <= length (the teacher writes the rest)")
        check_T(self.T)


def transfer_corpus(teacher: nn.Module, data: torch.Tensor, settings: TransferSettings, batch_size: int = 256,
                    progress: bool = True) -> dict:
    """Sequence-level KD data: the teacher continues n corpus prompts once (eval, no grad). Notebook 10_generative_kd.

    Returns {"ids": int64 [n, length + 1] (prompt_len real characters, then the teacher's), "prompt_len", "T",
    "greedy", "meter": CostMeter counts of the generation}. T = 1 samples the teacher's distribution; greedy=True
    takes its argmax (the beam-search-like mode, usually repetitive). The teacher's train/eval mode is restored.
    """
    if not isinstance(settings, TransferSettings):
        raise ValueError(f"settings must be a TransferSettings(n_sequences, prompt_len, length), not {settings!r}")
    n_sequences, prompt_len, length, T, greedy, seed, kv_cache = dataclasses.astuple(settings)
    generator = torch.Generator().manual_seed(seed)
    prompts, _ = sample_windows(data, prompt_len, n_sequences, generator=generator)
    num_tokens = length + 1 - prompt_len
    rows, meter = [], CostMeter()
    device = next(teacher.parameters()).device
    gen_device = torch.Generator(device=device).manual_seed(seed) if device.type != "cpu" else generator
    for start in tqdm(range(0, n_sequences, batch_size), desc="teacher writes the transfer corpus",
                      disable=not progress, leave=False):
        batch = prompts[start:start + batch_size]
        write = cached_generate if kv_cache else generate
        rows.append(write(teacher, batch, num_tokens, T=T, greedy=greedy, generator=gen_device).cpu())
        meter.teacher_generated += batch.shape[0] * num_tokens
        meter.teacher_generation_positions += (cached_positions(batch.shape[0], prompt_len, num_tokens) if kv_cache else
                                               _generation_positions(batch.shape[0], prompt_len, num_tokens,
                                                                     teacher.context))
    return {"ids": torch.cat(rows), "prompt_len": prompt_len, "T": T, "greedy": greedy, "meter": meter}


def cached_transfer_corpus(teacher: nn.Module, data: torch.Tensor, settings: TransferSettings,
                           progress: bool = True) -> dict:
    """`transfer_corpus` written once per teacher, data and settings (cache.build_once; "from_cache"). Notebook 10.

    The meter keeps the counts of the generation that made the file.
    """
    named = dict(zip(("n", "prompt_len", "length", "T", "greedy", "seed", "kv_cache"), dataclasses.astuple(settings)))
    if not named["kv_cache"]:
        del named["kv_cache"]  # the files written before the option keep their keys
    key = cache.key({"teacher": cache.state_digest(teacher), "data": cache.tensor_digest(data), **named})
    built = []

    def build() -> dict:
        built.append(transfer_corpus(teacher, data, settings, progress=progress))
        return {**built[0], "meter": built[0]["meter"].as_dict()}

    blob = cache.build_once(cache.path("tensors", f"transfer-corpus-{key}.pt"),
                            {"kind": "kd_lessons.transfer_corpus", "key": key}, build, "the teacher's transfer corpus")
    return {**built[0], "from_cache": False} if built else {**blob, "meter": CostMeter(**blob["meter"]),
                                                              "from_cache": True}


def topk_pool(teacher: nn.Module, data: torch.Tensor, n_windows: int, context: int, k: int, seed: int = 0,
              batch_size: int = 64, progress: bool = True) -> dict:
    """Corpus windows with the teacher's top-k log-probs at every position, computed once. Notebook 10_generative_kd.

    What an API would return for this text: {"x", "y" [n, context], "idx" int16 [n, context, k] (sorted,
    most likely first), "logprobs" float32 [n, context, k], "meter"}. Slice [..., :k'] for any k' <= k.
    """
    if n_windows < 1 or not 1 <= k <= teacher.vocab_size:
        raise ValueError(f"n_windows={n_windows}, k={k}: need n_windows >= 1 and 1 <= k <= {teacher.vocab_size}")
    x, y = sample_windows(data, context, n_windows, generator=torch.Generator().manual_seed(seed))
    idx, logprobs, meter = [], [], CostMeter()
    device = next(teacher.parameters()).device
    for start in tqdm(range(0, n_windows, batch_size), desc=f"teacher top-{k} log-probs", disable=not progress,
                      leave=False):
        xb = x[start:start + batch_size].to(device)
        values, ids = F.log_softmax(teacher_logits(teacher, xb, meter).float(), dim=-1).topk(k, dim=-1)
        idx.append(ids.to(torch.int16).cpu())
        logprobs.append(values.cpu())
    return {"x": x, "y": y, "idx": torch.cat(idx), "logprobs": torch.cat(logprobs), "meter": meter}
