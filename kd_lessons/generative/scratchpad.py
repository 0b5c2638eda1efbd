"""A reasoning task made offline: multi-digit addition with a scratchpad of carries, its tokenizer and scoring.

Introduced in notebook 13_reasoning_distillation. A problem is a pair (a, b) of d-digit numbers. Its
*trace* works from the least significant digit up (the order in which carries flow, the known
"reversed digits" trick) and writes one step per digit, "digit + digit + carry = two-digit sum;":

    357+681|7+1+0=08;5+8+0=13;3+6+1=10;>1038$      (prompt "357+681|", trace, answer, end)
    357+681>1038$                                  (answers only: prompt "357+681>")
    357+681>8301$                                  (answers only, least significant digit first: reverse=True)

`encode_batch` turns texts into next-token training pairs with a mask over the positions a student
is taught (everything after the prompt, the end mark included); `solve` lets a model write
completions; `is_correct` / `filter_correct` score a completion by its final answer only; `TextBatches`
draws the training batches (and counts the target tokens a student was taught).
"""
from __future__ import annotations

import random
from typing import Sequence

import torch
import torch.nn.functional as F

from kd_lessons.generative.divergences import forward_kl
from kd_lessons.generative.kv_cache import cached_generate

__all__ = ["VOCAB", "PAD", "THINK", "STEP", "ANSWER", "END", "encode", "decode", "make_problems", "trace",
           "prompt", "example", "parse_answer", "is_correct", "exact_match", "filter_correct", "KINDS", "classify",
           "encode_batch", "masked_cross_entropy", "completion_length", "solve", "TextBatches"]

PAD, THINK, STEP, ANSWER, END = ".", "|", ";", ">", "$"
VOCAB = "0123456789+=" + THINK + STEP + ANSWER + END + PAD  # 17 tokens; PAD is last
_ID = {ch: i for i, ch in enumerate(VOCAB)}
IGNORE = -100  # target id that cross-entropy skips


def encode(text: str) -> torch.Tensor:
    """Character ids of `text` (int64 [len]). Introduced in notebook 13_reasoning_distillation."""
    if not isinstance(text, str):
        raise ValueError(f"encode expects a str such as '12+34|', got {type(text).__name__}")
    bad = sorted(set(text) - set(_ID))
    if bad:
        raise ValueError(f"text {text[:40]!r} has characters {bad} outside the vocabulary {VOCAB!r}; "
                         "write problems with digits and the markers + = | ; > $ only")
    return torch.tensor([_ID[ch] for ch in text], dtype=torch.long)


def decode(ids) -> str:
    """The text of a sequence of ids (tensor or list). Introduced in notebook 13_reasoning_distillation."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    if any(not 0 <= int(i) < len(VOCAB) for i in ids):
        raise ValueError(f"ids must lie in 0..{len(VOCAB) - 1} (the vocabulary {VOCAB!r}), got {ids[:20]}")
    return "".join(VOCAB[int(i)] for i in ids)


def _digits(digits) -> list[int]:
    values = [digits] if isinstance(digits, int) else list(digits)
    if not values or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in values):
        raise ValueError(f"digits={digits!r}: use an int >= 1 or a list of them, e.g. 4 or [1, 2, 3, 4]")
    return values


def make_problems(n: int, digits, seed: int = 0, exclude=()) -> list[tuple[int, int]]:
    """`n` distinct problems (a, b), both with d digits, d drawn from `digits`; none in `exclude`. Notebook 13.

    d = 1 allows 0..9; longer numbers have a non-zero first digit. Raises if `n` distinct problems do not
    exist (e.g. more than 100 one-digit problems).
    """
    values = _digits(digits)
    room = sum(81 * 100 ** (d - 1) if d > 1 else 100 for d in set(values))
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= room - len(exclude):
        raise ValueError(f"n={n!r}: use an int in 0..{room - len(exclude)} (distinct problems with {values} digits, "
                         f"minus {len(exclude)} excluded)")
    rng, taken, out = random.Random(seed), set(exclude), []
    while len(out) < n:
        d = rng.choice(values)
        low = 0 if d == 1 else 10 ** (d - 1)
        pair = (rng.randrange(low, 10 ** d), rng.randrange(low, 10 ** d))
        if pair not in taken:
            taken.add(pair)
            out.append(pair)
    return out


def _check_pair(a, b) -> tuple[str, str]:
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (a, b)):
        raise ValueError(f"a={a!r}, b={b!r}: use non-negative ints")
    sa, sb = str(a), str(b)
    if len(sa) != len(sb):
        raise ValueError(f"a={a} and b={b} have {len(sa)} and {len(sb)} digits; the task adds numbers of equal length")
    return sa, sb


def trace(a: int, b: int) -> str:
    """The scratchpad: per digit, least significant first, 'x+y+carry=ss;'. Notebook 13_reasoning_distillation."""
    sa, sb = _check_pair(a, b)
    steps, carry = [], 0
    for x, y in zip(reversed(sa), reversed(sb)):
        total = int(x) + int(y) + carry
        steps.append(f"{x}+{y}+{carry}={total:02d}{STEP}")
        carry = total // 10
    return "".join(steps)


def prompt(a: int, b: int, with_trace: bool = True) -> str:
    """What the model is given: 'a+b|' (then it writes its trace) or 'a+b>' (the answer directly). Notebook 13."""
    sa, sb = _check_pair(a, b)
    return f"{sa}+{sb}{THINK if with_trace else ANSWER}"


def example(a: int, b: int, with_trace: bool = True, answer: int | str | None = None, reverse: bool = False) -> str:
    """A whole training text: prompt, true trace (if with_trace), answer (true by default), END. Notebook 13.

    reverse=True writes the answer least significant digit first (Lee et al.'s "reverse" format).
    """
    answer = str(a + b if answer is None else answer)
    body = trace(a, b) + ANSWER if with_trace else ""
    return f"{prompt(a, b, with_trace)}{body}{answer[::-1] if reverse else answer}{END}"


def completion_length(digits: int, with_trace: bool = True) -> int:
    """Tokens after the prompt in a true text of d-digit operands (trace, '>', <= d+1 digits, '$'). Notebook 13."""
    return (9 * digits + 1 if with_trace else 0) + digits + 2


def parse_answer(text: str) -> str | None:
    """The final answer of a text: the digits after the last '>' before the first '$', else None. Notebook 13."""
    if not isinstance(text, str):
        raise ValueError(f"parse_answer expects the model's text (str), got {type(text).__name__}")
    text = text.split(END, 1)[0]  # whatever comes after the end mark is not part of the answer
    if ANSWER not in text:
        return None
    answer = text.rsplit(ANSWER, 1)[1]
    return answer if answer.isdigit() else None


def is_correct(text: str, a: int, b: int, reverse: bool = False) -> bool:
    """Exact match of the final answer (digits only, no leading zeros) with a + b (reversed if reverse). Notebook 13."""
    return parse_answer(text) == (str(a + b)[::-1] if reverse else str(a + b))


def exact_match(texts: Sequence[str], problems: Sequence[tuple[int, int]], reverse: bool = False) -> float:
    """Share of texts whose final answer is exactly right. Introduced in notebook 13_reasoning_distillation."""
    if len(texts) != len(problems) or not problems:
        raise ValueError(f"got {len(texts)} texts for {len(problems)} problems; pass one text per problem (>= 1)")
    return sum(is_correct(t, a, b, reverse) for t, (a, b) in zip(texts, problems)) / len(problems)


def filter_correct(texts: Sequence[str], problems: Sequence[tuple[int, int]]) -> tuple[list[str], list[tuple]]:
    """Rejection sampling: keep the texts (and their problems) whose final answer is right. Notebook 13."""
    if len(texts) != len(problems):
        raise ValueError(f"got {len(texts)} texts for {len(problems)} problems; pass one text per problem")
    kept = [(t, p) for t, p in zip(texts, problems) if is_correct(t, *p)]
    return [t for t, _ in kept], [p for _, p in kept]


KINDS = ("right", "right answer, a wrong step", "right steps, wrong answer", "wrong steps and answer", "no answer")


def classify(text: str, a: int, b: int) -> str:
    """Which kind of text this is (one of KINDS): what rejection sampling keeps and drops. Notebook 13."""
    answer_right = is_correct(text, a, b)
    if parse_answer(text) is None:
        return KINDS[4]
    steps_right = trace(a, b) + ANSWER in text
    if answer_right:
        return KINDS[0] if steps_right else KINDS[1]
    return KINDS[2] if steps_right else KINDS[3]


def _prompt_end(text: str) -> int:
    """Index of the prompt's last character (the first '|' or '>')."""
    marks = [i for i in (text.find(THINK), text.find(ANSWER)) if i >= 0]
    if not marks:
        raise ValueError(f"text {text[:40]!r} has no prompt mark '{THINK}' or '{ANSWER}'; build it with example()")
    return min(marks)


def encode_batch(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, mask) [B, L]: inputs, next-token targets (IGNORE where not taught) and the taught positions.

    Texts are right-padded with PAD. mask[i, t] is True when y[i, t] lies after the prompt, up to and
    including END (or the text's end): the trace and the answer. Notebook 13_reasoning_distillation.
    """
    if not texts:
        raise ValueError("texts is empty; pass at least one text such as example(12, 34)")
    length = max(len(t) for t in texts) - 1
    x = torch.full((len(texts), length), _ID[PAD], dtype=torch.long)
    y = torch.full((len(texts), length), IGNORE, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = encode(text)
        start, stop = _prompt_end(text), (text.index(END) if END in text else len(text) - 1)
        x[i, :len(ids) - 1] = ids[:-1]
        y[i, start:stop] = ids[start + 1:stop + 1]
    return x, y, y != IGNORE


def masked_cross_entropy(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the taught positions only (a `train_lm` loss_fn). Notebook 13."""
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


def solve(model, problems: Sequence[tuple[int, int]], with_trace: bool = True, T: float | None = None,
          generator: torch.Generator | None = None, batch_size: int = 512) -> list[str]:
    """The model's texts for `problems` (prompt + what it wrote, cut after '$'). Notebook 13_reasoning_distillation.

    Greedy when T is None, else sampled at temperature T. Problems are batched by digit count, so every
    prompt in a batch has the same length; each gets the tokens a true completion needs.
    """
    out: list[str | None] = [None] * len(problems)
    by_digits: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(problems):
        by_digits.setdefault(len(_check_pair(a, b)[0]), []).append(i)
    for d, rows in sorted(by_digits.items()):
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            ids = torch.stack([encode(prompt(*problems[i], with_trace)) for i in chunk])
            n_new = min(completion_length(d, with_trace), model.context - ids.shape[1])
            written = cached_generate(model, ids, n_new, T=T or 1.0, greedy=T is None, generator=generator)
            for i, row in zip(chunk, written):
                text = decode(row)
                out[i] = text.split(END, 1)[0] + END if END in text else text
    return out


class TextBatches:
    """batch_fn for train_lm: random batches of encoded texts, cut to their longest taught position. Notebook 13."""

    def __init__(self, texts, batch_size: int, teacher_logits: torch.Tensor | None = None):
        self.x, self.y, self.mask = encode_batch(texts)
        self.last = self.mask.cumsum(1).argmax(1)  # each row's last taught position
        self.batch_size, self.teacher_logits, self.idx, self.length = batch_size, teacher_logits, None, 0
        self.taught = 0  # target tokens handed out so far: the supervision a student got

    def __call__(self, generator: torch.Generator):
        self.idx = torch.randint(0, len(self.x), (self.batch_size,), generator=generator)
        self.length = int(self.last[self.idx].max()) + 1
        self.taught += int(self.mask[self.idx, :self.length].sum())
        return self.x[self.idx, :self.length], self.y[self.idx, :self.length]

    def soft_kd_loss(self, T: float):
        """loss_fn: T^2 * forward KL to the teacher's next-token distribution on the taught positions."""
        def loss_fn(model, x, y):
            teacher_logits = self.teacher_logits[self.idx, :self.length].to(x.device)
            return T**2 * forward_kl(model(x), teacher_logits, T=T, mask=y != IGNORE)
        return loss_fn
