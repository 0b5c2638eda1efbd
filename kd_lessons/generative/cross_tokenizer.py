"""Distilling across tokenizers: a character-level teacher, a BPE student, and three ways to compare them.

Introduced in lesson 16 (cross-tokenizer KD). Both models read the same text; their logits differ in length
(characters vs tokens) and in vocabulary (80 characters vs 512 byte-level BPE tokens, kd_lessons.generative.subword).

- `index_matched_kl`: the silent failure TRL #2215 / #4562 report: a KL over vocabulary *indices* as if they
  matched, the larger vocabulary truncated to the smaller, positions paired by index. Shapes fit, it trains, its
  loss falls, and it teaches the wrong thing (token 64 is not character 64; token j is not character j).
- `uld_loss`: ULD (Boizard et al., 2024): sort both probability vectors descending, zero-pad the shorter, L1
  (Wasserstein-1 between the sorted distributions). Tokenizer-agnostic because it ignores which token is which:
  it transfers the *shape* (confidence) of the teacher's distribution, not its content.
- `alignment_loss`: map the teacher's distribution onto the student's tokens through the shared text (GOLD-like).
  At each student token boundary the text so far is known to both; the teacher's next-character distribution
  p_T(c | text) is compared with the student's probability that its next token starts with c (the sum of its
  probabilities over tokens whose text starts with c): KL(p_T || q_first). This is exact where the boundary
  itself says nothing about the next character; BPE boundaries do carry a little (a token ended here because
  the merge with the next character is not in the vocabulary), so a perfect student need not reach zero.

Positions (`CharAlignment.teacher_view`): the teacher reads the text of the student's window from its first
character, so at student position j (the tokens x[0..j], ending at character e_j) the teacher row e_j - 1 predicts
the character that starts token x[j + 1]; the teacher's context is then exactly the student's, in characters.
`single_char_ids` is the vocabulary mapping where tokens coincide (one-character tokens).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.generative.divergences import _kl, _reduce, check_mask
from kd_lessons.generative.subword import SubwordVocab
from kd_lessons.generative.text import CharVocab
from kd_lessons.generative.transfer_data import teacher_logits
from kd_lessons.losses import check_float, check_T, check_unit_interval

__all__ = ["KINDS", "check_cross_pair", "index_matched_kl", "uld_loss", "first_char_marginal", "alignment_loss",
           "CharAlignment", "CrossTokenizerKD"]

KINDS = ("index-matched KL", "ULD", "alignment")


def check_cross_pair(student_logits, teacher_logits, same_positions: bool = True) -> None:
    """Finite float logits [..., V]; the same positions unless `same_positions` is False (index matching)."""
    check_float("student_logits", student_logits)
    check_float("teacher_logits", teacher_logits)
    s, t = list(student_logits.shape), list(teacher_logits.shape)
    if min(len(s), len(t)) < 1 or 0 in s or 0 in t:
        raise ValueError(f"student_logits {s} and teacher_logits {t} must be non-empty [..., vocab_size] tensors")
    if same_positions and s[:-1] != t[:-1]:
        raise ValueError(f"student_logits {s} and teacher_logits {t} must cover the same positions (all dims but the "
                         "last); align the teacher's rows to the student's tokens first (CharAlignment.teacher_view)")
    if not same_positions and (len(s) != 3 or len(t) != 3 or s[0] != t[0]):
        raise ValueError(f"index matching pairs [batch, length, vocab] logits of one batch; got {s} and {t}")


def index_matched_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T=1.0) -> torch.Tensor:
    """The silent failure: forward KL over truncated vocabularies, positions by index (TRL #2215, #4562). Notebook 16.

    student_logits [B, Ls, Vs], teacher_logits [B, Lt, Vt]: both cut to the first min(Ls, Lt) positions and the
    first min(Vs, Vt) vocabulary entries, then KL(softmax(teacher / T) || softmax(student / T)), mean per position.
    Never use it to train: it exists to show what goes wrong.
    """
    check_cross_pair(student_logits, teacher_logits, same_positions=False)
    T = check_T(T)
    L = min(student_logits.shape[1], teacher_logits.shape[1])
    V = min(student_logits.shape[-1], teacher_logits.shape[-1])
    log_q = F.log_softmax(student_logits[:, :L, :V] / T, dim=-1)
    log_p = F.log_softmax(teacher_logits[:, :L, :V].detach() / T, dim=-1)
    return _kl(log_p, log_q).mean()


def uld_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T=1.0, mask=None,
             reduction: str = "mean") -> torch.Tensor:
    """ULD (Boizard et al., 2024): L1 between sorted, zero-padded probability vectors per position. Notebook 16.

    p = softmax(teacher / T), q = softmax(student / T) over their own vocabularies; both sorted descending,
    the shorter padded with zeros to max(Vs, Vt); loss = sum_i |q_(i) - p_(i)| per position (reduced over
    positions by mask / reduction as in kd_lessons.generative.divergences). Invariant to permuting either vocabulary.
    """
    check_cross_pair(student_logits, teacher_logits)
    T = check_T(T)
    mask = check_mask(mask, student_logits.shape[:-1])
    q = F.softmax(student_logits / T, dim=-1).sort(dim=-1, descending=True).values
    p = F.softmax(teacher_logits.detach() / T, dim=-1).sort(dim=-1, descending=True).values
    V = max(q.shape[-1], p.shape[-1])
    q, p = F.pad(q, (0, V - q.shape[-1])), F.pad(p, (0, V - p.shape[-1]))
    return _reduce((q - p).abs().sum(dim=-1), mask, reduction)


def first_char_marginal(student_logits: torch.Tensor, first_char: torch.Tensor, T=1.0) -> torch.Tensor:
    """q(c) = sum of softmax(student / T) over tokens whose text starts with character c: [..., C]. Notebook 16.

    first_char: a [Vs, C] 0/1 matrix (CharAlignment.first_char). Tokens starting with a character outside the
    teacher's vocabulary (e.g. lone bytes) belong to no column, so q sums to at most 1.
    """
    q = F.softmax(student_logits / check_T(T), dim=-1)
    return q @ first_char.to(q.dtype)


def alignment_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, first_char: torch.Tensor, T=1.0,
                   mask=None, reduction: str = "mean") -> torch.Tensor:
    """KL(teacher's next character || the student's first-character marginal) at aligned positions. Notebook 16.

    student_logits [..., Vs] at token boundaries, teacher_logits [..., C] at the same text prefixes
    (CharAlignment.teacher_view), first_char [Vs, C]. Zero exactly when q(c) = p_T(c) for every c.
    """
    check_cross_pair(student_logits, teacher_logits)
    if first_char.shape != (student_logits.shape[-1], teacher_logits.shape[-1]):
        raise ValueError(f"first_char has shape {list(first_char.shape)}; need [student vocab "
                         f"{student_logits.shape[-1]}, teacher vocab {teacher_logits.shape[-1]}] "
                         "(CharAlignment(subword, chars).first_char)")
    T = check_T(T)
    mask = check_mask(mask, student_logits.shape[:-1])
    log_q = first_char_marginal(student_logits, first_char, T).clamp_min(torch.finfo(student_logits.dtype).tiny).log()
    log_p = F.log_softmax(teacher_logits.detach() / T, dim=-1)
    return _reduce(_kl(log_p, log_q), mask, reduction)


class CharAlignment:
    """What the two vocabularies share, from the tokens' text: character tables, first characters, the mapping."""

    def __init__(self, subword: SubwordVocab, chars: CharVocab):
        self.table = subword.char_table(chars)                     # [Vs, longest] char ids, -1 past the end
        self.lengths = subword.char_lengths.clone()                # [Vs]
        first = self.table[:, 0]
        self.first_char = torch.zeros(subword.size, chars.size)   # [Vs, C]: token v starts with character c
        known = first >= 0
        self.first_char[torch.arange(subword.size)[known], first[known]] = 1.0
        self.single_char_ids = subword.single_char_ids(chars)      # [C]: where tokens coincide (-1: none)

    def teacher_view(self, x: torch.Tensor, teacher_context: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(chars [B, Ct], rows [B, L], mask [B, L]) for student token windows x [B, L]. Notebook 16.

        chars: the window's text from its first character, cut (or zero-padded) to teacher_context; rows[b, j]:
        the teacher row predicting the first character of token x[b, j + 1] (= characters of x[b, :j + 1], minus 1);
        mask: rows that fit in the teacher's context.
        """
        if x.dim() != 2 or x.is_floating_point() or teacher_context < 1:
            raise ValueError(f"x must be token ids [batch, length] and teacher_context >= 1, got "
                             f"{x.dtype} {tuple(x.shape)} and {teacher_context!r}")
        table, lengths = self.table.to(x.device), self.lengths.to(x.device)
        lens = lengths[x]
        ends = lens.cumsum(dim=1)
        span = torch.arange(table.shape[1], device=x.device)
        pos = (ends - lens)[..., None] + span                      # [B, L, longest] character positions
        ids = table[x]
        keep = (span < lens[..., None]) & (pos < teacher_context)
        if bool((ids[keep] < 0).any()):
            raise ValueError("a token's text has a character outside the teacher's vocabulary; build both "
                             "vocabularies from the same corpus")
        chars = torch.zeros(x.shape[0], teacher_context, dtype=torch.long, device=x.device)
        rows_b = torch.arange(x.shape[0], device=x.device)[:, None, None].expand_as(pos)
        chars[rows_b[keep], pos[keep]] = ids[keep]
        return chars, ends - 1, ends <= teacher_context


class CrossTokenizerKD:
    """loss_fn(model, x, y) for train_lm: alpha * cross-tokenizer KD + (1 - alpha) * CE on BPE windows. Notebook 16.

    kind: one of KINDS. The teacher reads the window's text (CharAlignment.teacher_view); index matching pairs
    its rows with the student's by index, ULD and alignment at the aligned rows. `log` keeps each step's KD and
    CE terms (floats), the curve that shows the silent failure's loss falling. `memo`, a dict shared by plug-ins
    that see the same windows (one seed's batch order), keeps the teacher's logits per window so the teacher runs
    once per batch for all of them (the same numbers, computed once).
    """

    def __init__(self, kind: str, teacher: nn.Module, alignment: CharAlignment, alpha: float = 0.5, T: float = 1.0,
                 memo: dict | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: use one of {KINDS}")
        self.kind, self.teacher, self.alignment = kind, teacher, alignment
        self.alpha = check_unit_interval("alpha", alpha, "alpha is the weight of the KD term, e.g. alpha=0.5")
        self.T = check_T(T)
        self.log, self.memo = {"kd": [], "ce": []}, memo

    def kd(self, student_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The KD term of one batch of student logits [B, L, Vs] on windows x."""
        chars, rows, mask = self.alignment.teacher_view(x, self.teacher.context)
        t_logits = self._teacher(chars)                            # [B, Ct, C]
        if self.kind == "index-matched KL":
            return index_matched_kl(student_logits, t_logits, self.T)
        picked = t_logits.gather(1, rows.clamp(0, chars.shape[1] - 1)[..., None].expand(-1, -1, t_logits.shape[-1]))
        if self.kind == "ULD":
            return uld_loss(student_logits, picked, self.T, mask=mask)
        return alignment_loss(student_logits, picked, self.alignment.first_char.to(x.device), self.T, mask=mask)

    def _teacher(self, chars: torch.Tensor) -> torch.Tensor:
        if self.memo is None:
            return teacher_logits(self.teacher, chars).float()
        key = (tuple(chars.shape), chars.cpu().numpy().tobytes())
        if key not in self.memo:
            self.memo[key] = teacher_logits(self.teacher, chars).float()
        return self.memo[key]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        kd = self.kd(logits, x)
        self.log["kd"].append(kd.item())
        self.log["ce"].append(ce.item())
        return self.alpha * kd + (1.0 - self.alpha) * ce
