"""Generative / LLM distillation exercises 21, 22 and 24: sequence reverse KL, generalized JSD, top-k.

Introduced in notebook 09_coding_exercises (part 4); the maths is in notebook 10_generative_kd and
kd_lessons.generative.divergences, which the checkers use as the reference. Logits are [..., V]
(batch, positions, vocabulary); masks are bool [B, L] with True on the tokens that count. Exercise 23
(the teacher writes the data) is in exercises.teacher_sequences; the find-and-fix exercises 25-28 are
in exercises.sequence_kd_fixes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lessons.exercises.core import Exercise, Variant
from kd_lessons.generative import divergences as D

# ---------------------------------------------------------------- shared pieces of the wrong answers


def _lp(z):
    return F.log_softmax(z, dim=-1)


def _kl(log_a, log_b):
    """KL(a || b) over the last dim, per position."""
    return (log_a.exp() * (log_a - log_b)).sum(dim=-1)


def _entropy(z):
    return -(_lp(z).exp() * _lp(z)).sum(dim=-1)


def _seq_trials():
    """(student_logits [B, L, V], teacher_logits, mask): padding and prompt masks of unequal lengths."""
    out = []
    for (B, L, V), lengths in (((3, 6, 7), (6, 2, 4)), ((2, 5, 11), (3, 5)), ((4, 4, 5), (1, 4, 2, 3))):
        mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
        if V == 11:
            mask[:, 0] = False  # a prompt token: scored by nobody
        out.append((torch.randn(B, L, V) * 3, torch.randn(B, L, V) * 3, mask))
    return out


def _row_trials(betas=(0.2, 0.5, 0.8)):
    return [(torch.randn(B, V) * 3, torch.randn(B, V) * 3, beta) for (B, V), beta in zip(((4, 6), (5, 9), (3, 12)),
                                                                                    betas)]


# ---------------------------------------------------------------- 21. reverse KL for sequences

REVERSE_VARIANTS = (
    Variant("forward_kl", "You computed the forward KL(teacher || student): the expectation is under the teacher. "
            "Reverse KL (MiniLLM) takes it under the student: sum_v q_v (log q_v - log p_v).",
            lambda z, v, m: _kl(_lp(v), _lp(z))[m].mean()),
    Variant("mask_ignored", "You averaged over every position, padding and prompt included: average only over "
            "the positions where mask is True (per_token[mask].mean()).", lambda z, v, m: _kl(_lp(z), _lp(v)).mean()),
    Variant("masked_zeros_in_mean", "You zeroed the masked positions but still divided by all B*L positions: "
            "divide by the number of counted tokens (mask.sum()).",
            lambda z, v, m: (_kl(_lp(z), _lp(v)) * m).sum() / m.numel()),
    Variant("per_sequence_mean", "You averaged each sequence first and then the sequences, so a short sequence's "
            "tokens weigh more than a long one's. This exercise asks for the mean over all counted tokens.",
            lambda z, v, m: ((_kl(_lp(z), _lp(v)) * m).sum(1) / m.sum(1)).mean()),
    Variant("sum_over_tokens", "You summed over the tokens: the loss then grows with the batch and the lengths. "
            "Return the mean over the counted tokens.", lambda z, v, m: _kl(_lp(z), _lp(v))[m].sum()),
    Variant("mean_over_vocab", "Your loss is vocab_size times too small: you averaged over the vocabulary "
            "(reduction='mean' style). Sum over the vocabulary, then average over the tokens.",
            lambda z, v, m: (_lp(z).exp() * (_lp(z) - _lp(v))).mean(-1)[m].mean()),
    Variant("no_student_entropy", "You computed E_q[-log p], the reverse cross-entropy: without the student's "
            "-H(q) term nothing stops the student collapsing onto the teacher's single most likely token. "
            "Use sum_v q_v (log q_v - log p_v).", lambda z, v, m: -(_lp(z).exp() * _lp(v)).sum(-1)[m].mean()),
)


class SequenceReverseKL(Exercise):
    """Exercise 21 of notebook 09_coding_exercises: per-token reverse KL over a padded batch of sequences."""

    number, key, title, fn_name = 21, "seq_reverse_kl", "Reverse KL for sequences", "seq_reverse_kl"
    variants, other_mistakes = REVERSE_VARIANTS, ("detached",)
    hint_text = ("log_softmax both logits over the last dim (detach the teacher's), take sum_v q_v (log q_v - "
                 "log p_v) per position, then per_token[mask].mean().")
    solution_code = '''def seq_reverse_kl(student_logits, teacher_logits, mask):
    """Return KL(student || teacher) per token, averaged over the positions where mask is True."""
    log_q = F.log_softmax(student_logits, dim=-1)            # student [B, L, V]
    log_p = F.log_softmax(teacher_logits.detach(), dim=-1)   # teacher: a fixed target
    per_token = (log_q.exp() * (log_q - log_p)).sum(dim=-1)  # [B, L]
    return per_token[mask].mean()
'''

    @staticmethod
    def reference(z, v, m):
        return D.reverse_kl(z, v, mask=m)

    def trials(self):
        return _seq_trials()


# ---------------------------------------------------------------- 22 and 28. generalized JSD


def _jsd_with(z, v, beta, mix=None, weights=None, reverse=False):
    """A generalized JSD with a chosen mixture and weights (reverse=True: KL(m || .) instead of KL(. || m))."""
    log_p, log_q = _lp(v), _lp(z)
    a, b = mix if mix is not None else (beta, 1 - beta)
    log_m = (a * log_p.exp() + b * log_q.exp()).log()
    wp, wq = weights if weights is not None else (beta, 1 - beta)
    if reverse:
        return (wp * _kl(log_m, log_p) + wq * _kl(log_m, log_q)).mean()
    return (wp * _kl(log_p, log_m) + wq * _kl(log_q, log_m)).mean()


JSD_VARIANTS = (
    Variant("mixture_swapped", "Your mixture is beta*q + (1-beta)*p: GKD weights the teacher by beta, "
            "m = beta*p + (1-beta)*q (TRL's GKDTrainer had this mix-up, fixed in huggingface/trl PR 3043).",
            lambda z, v, b: _jsd_with(z, v, b, mix=(1 - b, b))),
    Variant("log_space_mixture", "You mixed log-probabilities: beta*log p + (1-beta)*log q is not the log of a "
            "mixture (it is not even normalised). Mix probabilities, then take the log (huggingface/trl "
            "issue 2202).", lambda z, v, b: _jsd_log_mix(z, v, b)),
    Variant("kl_weights_swapped", "Your KL weights are swapped: GKD's JSD(beta) is beta*KL(p || m) + "
            "(1-beta)*KL(q || m), the teacher's term weighted by beta.",
            lambda z, v, b: _jsd_with(z, v, b, weights=(1 - b, b))),
    Variant("kl_to_mixture_reversed", "You computed KL(m || p) and KL(m || q): each term is the KL *from* a "
            "distribution *to* the mixture, KL(p || m) and KL(q || m).",
            lambda z, v, b: _jsd_with(z, v, b, reverse=True)),
    Variant("unweighted", "You added KL(p || m) + KL(q || m) without the weights beta and 1-beta.",
            lambda z, v, b: _jsd_with(z, v, b, weights=(1.0, 1.0))),
    Variant("summed_over_rows", "You summed over the rows: return the mean over the rows (tokens).",
            lambda z, v, b: _jsd_with(z, v, b) * z.shape[0]),
)


def _jsd_log_mix(z, v, beta):
    log_p, log_q = _lp(v), _lp(z)
    log_m = beta * log_p + (1 - beta) * log_q
    return (beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)).mean()


_JSD_BODY = '''    log_p = F.log_softmax(teacher_logits.detach(), dim=-1)   # P: teacher
    log_q = F.log_softmax(student_logits, dim=-1)            # Q: student
    m = beta * log_p.exp() + (1 - beta) * log_q.exp()        # the mixture of probabilities
    kl_pm = (log_p.exp() * (log_p - m.log())).sum(dim=-1)
    kl_qm = (log_q.exp() * (log_q - m.log())).sum(dim=-1)
    return (beta * kl_pm + (1 - beta) * kl_qm).mean()
'''


class GeneralizedJSD(Exercise):
    """Exercise 22 of notebook 09_coding_exercises: GKD's generalized JSD(beta), mean over rows."""

    number, key, title, fn_name = 22, "generalized_jsd", "Generalized JSD (GKD)", "my_generalized_jsd"
    variants, other_mistakes = JSD_VARIANTS, ("detached",)
    hint_text = ("m = beta * p + (1 - beta) * q with p the teacher's and q the student's probabilities; "
                 "JSD = beta * KL(p || m) + (1 - beta) * KL(q || m) per row, then the mean over rows.")
    solution_code = '''def my_generalized_jsd(student_logits, teacher_logits, beta):
    """Return GKD's JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q, row mean."""
''' + _JSD_BODY

    @staticmethod
    def reference(z, v, beta):
        return D.generalized_jsd(z, v, beta)

    def trials(self):
        return _row_trials()


# ---------------------------------------------------------------- 24. top-k renormalisation


def _topk_trials():
    out = []
    for B, V, k in ((4, 10, 3), (3, 16, 5), (5, 8, 1)):
        student, teacher = torch.randn(B, V) * 3, torch.randn(B, V) * 3
        idx, lp = D.topk_logprobs(teacher, k)
        out.append((student, idx, lp))
    return out


def _renorm(lp):
    return lp - torch.logsumexp(lp, dim=-1, keepdim=True)


TOPK_VARIANTS = (
    Variant("not_renormalised", "You used the top-k probabilities as they are: they sum to less than 1, so this "
            "is not a KL between distributions. Renormalise: log p_i - logsumexp(log p) over the k tokens.",
            lambda z, i, lp: (lp.exp() * (lp - _lp(z).gather(-1, i))).sum(-1).mean()),
    Variant("student_renormalised_too", "You renormalised the student over the k tokens as well: then its mass "
            "outside the top-k costs nothing. Here the student keeps its full-vocabulary log_softmax, so the "
            "loss also pushes its tail mass to 0.",
            lambda z, i, lp: _kl(_renorm(lp), _lp(z.gather(-1, i))).mean()),
    Variant("cross_entropy", "You returned the cross-entropy -sum p~ log q: it is the KL plus the entropy of the "
            "renormalised teacher (the same gradient, but not 0 at the optimum). Add sum p~ log p~.",
            lambda z, i, lp: -(_renorm(lp).exp() * _lp(z).gather(-1, i)).sum(-1).mean()),
    Variant("rest_bucket", "That is the rest-bucket version (k tokens plus one bucket for the remaining mass, "
            "renormalize=False). This exercise asks you to renormalise the teacher's k probabilities instead.",
            lambda z, i, lp: D.topk_kd_loss(z, i, lp, renormalize=False)),
    Variant("renormalised_by_sum_of_logs", "You subtracted the sum of the log-probs: renormalising divides the "
            "probabilities by their sum, i.e. subtracts logsumexp of the log-probs.",
            lambda z, i, lp: _kl(lp - lp.sum(-1, keepdim=True), _lp(z).gather(-1, i)).mean()),
)


class TopKRenormalized(Exercise):
    """Exercise 24 of notebook 09_coding_exercises: distil from an API's top-k log-probs, renormalised."""

    number, key, title, fn_name = 24, "topk_renormalized", "Top-k renormalisation", "topk_kd"
    variants, other_mistakes = TOPK_VARIANTS, ("detached",)
    hint_text = ("log_p = topk_logprobs - torch.logsumexp(topk_logprobs, -1, keepdim=True); log_q = "
                 "F.log_softmax(student_logits, -1).gather(-1, topk_idx); sum exp(log_p) * (log_p - log_q) per "
                 "row, then the mean.")
    solution_code = '''def topk_kd(student_logits, topk_idx, topk_logprobs):
    """Forward KL from the teacher's renormalised top-k to the student (full-vocabulary softmax), row mean."""
    log_p = topk_logprobs - torch.logsumexp(topk_logprobs, dim=-1, keepdim=True)  # sums to 1 over the k
    log_q = F.log_softmax(student_logits, dim=-1).gather(-1, topk_idx)            # the student at those k ids
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
'''

    @staticmethod
    def reference(z, idx, lp):
        return D.topk_kd_loss(z, idx, lp, renormalize=True)

    def trials(self):
        return _topk_trials()
