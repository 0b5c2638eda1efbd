"""ULD's tokenizer-agnostic loss as exercise 35: sorted, zero-padded probabilities compared by L1.

Introduced in notebook 09_coding_exercises; the loss is the "ULD" arm of lesson 16's cross-tokenizer comparison
(kd_lessons.generative.cross_tokenizer.uld_loss is the reference). The checker names the usual mistakes: no sort,
ascending in one model and descending in the other (or ascending in both, padding at the end), truncating to the
smaller vocabulary instead of padding, sorting logits instead of probabilities, a mean over the vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lessons.exercises.core import Exercise, Variant
from kd_lessons.generative.cross_tokenizer import uld_loss


def _probs(logits, descending=True):
    return F.softmax(logits, dim=-1).sort(dim=-1, descending=descending).values


def _l1(a, b, reduce=torch.sum):
    V = max(a.shape[-1], b.shape[-1])
    a, b = F.pad(a, (0, V - a.shape[-1])), F.pad(b, (0, V - b.shape[-1]))
    return reduce((a - b).abs(), dim=-1).mean()


def _truncated(s, t):
    V = min(s.shape[-1], t.shape[-1])
    return (_probs(s)[..., :V] - _probs(t)[..., :V]).abs().sum(dim=-1).mean()


ULD_VARIANTS = (
    Variant("no_sort", "You compared the probabilities token by token without sorting. Across tokenizers token i "
            "of the student and token i of the teacher are unrelated; ULD sorts each distribution (descending) "
            "first, so it compares the largest probability with the largest, and so on.",
            lambda s, t: _l1(F.softmax(s, dim=-1), F.softmax(t, dim=-1))),
    Variant("mixed_order", "You sorted one distribution ascending and the other descending, so the student's "
            "largest probability is compared with the teacher's smallest. Sort both with descending=True.",
            lambda s, t: _l1(_probs(s, descending=False), _probs(t))),
    Variant("mixed_order_teacher", "You sorted the teacher ascending and the student descending, so the largest "
            "probability of one meets the smallest of the other. Sort both with descending=True.",
            lambda s, t: _l1(_probs(s), _probs(t, descending=False))),
    Variant("ascending_both", "You sorted both ascending and then padded at the end: the zeros of the padding now "
            "sit after the *largest* probabilities. Sort descending, then pad the shorter vector with zeros.",
            lambda s, t: _l1(_probs(s, descending=False), _probs(t, descending=False))),
    Variant("truncated", "You cut both vectors to the smaller vocabulary. The tail you dropped still holds "
            "probability (the two sorted vectors then need not even sum to the same mass); ULD pads the shorter "
            "vector with zeros up to the larger vocabulary instead.",
            _truncated),
    Variant("logits", "You sorted and compared logits. Logits of two models are on unrelated scales (any constant "
            "can be added to them); ULD compares probabilities: softmax first, then sort, pad and L1.",
            lambda s, t: _l1(s.sort(dim=-1, descending=True).values, t.sort(dim=-1, descending=True).values)),
    Variant("mean_over_vocab", "You averaged the absolute differences over the vocabulary. The Wasserstein-1 "
            "distance between the sorted distributions is their *sum* over the (padded) vocabulary; average only "
            "over positions.",
            lambda s, t: _l1(_probs(s), _probs(t), reduce=torch.mean)),
)


def _trials():
    g = torch.Generator().manual_seed(35)
    return [(torch.randn(4, 9, generator=g) * 2, torch.randn(4, 5, generator=g) * 2),
            (torch.randn(3, 4, generator=g) * 2, torch.randn(3, 7, generator=g) * 2),
            (torch.randn(2, 3, 6, generator=g) * 2, torch.randn(2, 3, 11, generator=g) * 2)]


class ULDLoss(Exercise):
    """Exercise 35 of notebook 09_coding_exercises: ULD, the loss that needs no shared tokenizer."""

    number, key, title, fn_name = 35, "uld_loss", "The ULD loss across tokenizers", "uld_loss"
    variants = ULD_VARIANTS
    detach_hint = "the gradient must reach the student's logits: detach only the teacher's side."
    hint_text = ("softmax each model's logits over its own vocabulary; .sort(dim=-1, descending=True).values for "
                 "both; F.pad the shorter one with zeros on the right up to the larger vocabulary; then "
                 "(p_s - p_t).abs().sum(dim=-1).mean().")
    solution_code = '''def uld_loss(student_logits, teacher_logits):
    """ULD: L1 between sorted (descending), zero-padded probabilities, summed over the vocabulary, mean per position."""
    p_s = F.softmax(student_logits, dim=-1).sort(dim=-1, descending=True).values
    p_t = F.softmax(teacher_logits.detach(), dim=-1).sort(dim=-1, descending=True).values
    V = max(p_s.shape[-1], p_t.shape[-1])
    p_s = F.pad(p_s, (0, V - p_s.shape[-1]))                       # zeros: the missing tokens have probability 0
    p_t = F.pad(p_t, (0, V - p_t.shape[-1]))
    return (p_s - p_t).abs().sum(dim=-1).mean()
'''

    @staticmethod
    def reference(s, t):
        return uld_loss(s, t)

    @staticmethod
    def trials():
        return _trials()
