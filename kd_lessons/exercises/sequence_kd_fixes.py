"""Generative / LLM distillation find-and-fix exercises 25-28: three modelled on reported bugs, one on a confusion.

Introduced in notebook 09_coding_exercises (part 4): vocabularies of different widths (microsoft/LMOps PR 331,
NVIDIA/Model-Optimizer issue 2489), teacher and student swapped (keras-team/keras-io issue 257, classification
code), the same logits passed twice (labmlai/annotated_deep_learning_paper_implementations issue 66,
classification code), and a cross-entropy inside a JSD (no report known: it follows from F.cross_entropy's
definition). docs/references.md lists the reports. The references are kd_lessons.generative.divergences; the
shared pieces live in exercises.sequence_kd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call, close
from kd_lessons.exercises.sequence_kd import (
    _JSD_BODY,
    JSD_VARIANTS,
    GeneralizedJSD,
    _entropy,
    _jsd_with,
    _kl,
    _lp,
    _seq_trials,
)
from kd_lessons.exercises.teacher_sequences import _tiny_lm
from kd_lessons.generative import divergences as D

# ---------------------------------------------------------------- 25. vocabularies of different widths


def _vocab_trials():
    return [(torch.randn(B, ws) * 3, torch.randn(B, wt) * 3, V) for B, ws, wt, V in
            ((4, 12, 16, 10), (3, 8, 11, 7), (5, 16, 12, 9))]


def _narrow(z, v) -> int:
    """The narrower of the two widths."""
    return min(z.shape[-1], v.shape[-1])


def _fkl(log_q, log_p):
    return _kl(log_p, log_q).mean()


VOCAB_VARIANTS = (
    Variant("softmax_then_truncate", "The softmax ran over the padded columns, and the slice to the narrower "
            "width keeps padding too: both distributions are wrong. The shared vocabulary is vocab_size: slice "
            "both logits to [..., :vocab_size] before the softmax.",
            lambda z, v, n: _kl_cols(_lp(z), _lp(v), min(z.shape[-1], v.shape[-1]))),
    Variant("truncate_to_min_width", "You sliced to the narrower model's width: its padding columns are not "
            "tokens. Slice both logits to [..., :vocab_size], the tokenizer's size.",
            lambda z, v, n: _fkl(_lp(z[..., :_narrow(z, v)]), _lp(v[..., :_narrow(z, v)]))),
    Variant("softmax_then_slice", "You took the softmax over the padded width and then sliced: the probabilities "
            "no longer sum to 1 over the real tokens. Slice first, then log_softmax.",
            lambda z, v, n: _kl_cols(_lp(z), _lp(v), n)),
    Variant("zero_padded_student", "You padded the student's logits with zeros to the teacher's width: zero is not "
            "'impossible' (it is an ordinary logit), and the teacher's padding columns stay in. Slice both to "
            "vocab_size instead.", lambda z, v, n: _fkl(_lp(F.pad(z, (0, max(0, v.shape[-1] - z.shape[-1])))),
                                                           _lp(F.pad(v, (0, max(0, z.shape[-1] - v.shape[-1])))))),
)


def _kl_cols(log_q, log_p, n):
    return (log_p[..., :n].exp() * (log_p[..., :n] - log_q[..., :n])).sum(-1).mean()


class FixVocabMismatch(Exercise):
    """Exercise 25 of notebook 09_coding_exercises: padded output layers of different widths, one tokenizer."""

    number, key, title, fn_name = 25, "fix_vocab_mismatch", "Fix: vocabularies of different sizes", \
        "padded_vocab_kd_fixed"
    bug, variants, other_mistakes = "softmax_then_truncate", VOCAB_VARIANTS, ("detached",)
    hint_text = ("Which columns are real tokens? Models pad their output layer (to a multiple of 64 or 128) past "
                 "the tokenizer's vocab_size, by different amounts. Where must the slice happen, before or after "
                 "the softmax?")
    broken = '''def padded_vocab_kd_fixed(student_logits, teacher_logits, vocab_size):
    # one tokenizer (vocab_size tokens); each model pads its output layer to its own width
    log_q = F.log_softmax(student_logits, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach(), dim=-1)
    n = min(log_q.shape[-1], log_p.shape[-1])        # make the shapes match
    return F.kl_div(log_q[:, :n], log_p[:, :n], log_target=True, reduction="batchmean")
'''
    solution_code = '''def padded_vocab_kd_fixed(student_logits, teacher_logits, vocab_size):
    # only the first vocab_size columns are tokens: slice *before* the softmax
    log_q = F.log_softmax(student_logits[:, :vocab_size], dim=-1)
    log_p = F.log_softmax(teacher_logits.detach()[:, :vocab_size], dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
'''

    @staticmethod
    def reference(z, v, n):
        return D.forward_kl(z[..., :n], v[..., :n])

    def trials(self):
        return _vocab_trials()


# ---------------------------------------------------------------- 26. teacher and student swapped


class FixSwappedRoles(Exercise):
    """Exercise 26 of notebook 09_coding_exercises: the student became the detached target, the teacher the input."""

    number, key, title, fn_name = 26, "fix_swapped_roles", "Fix: teacher and student swapped", "token_kd_fixed"
    bug, other_mistakes = "swapped_roles", ("detached",)
    variants = (
        Variant("swapped_roles", "Teacher and student swapped roles: the student's probabilities are the detached "
                "target and the teacher's log-probabilities the input, so this is KL(student || teacher) and no "
                "gradient reaches the student (a teacher run with autograd on would even learn from the student). "
                "Target: the teacher's probabilities, detached; input: the student's log-probabilities.",
                lambda z, v, m: _kl(_lp(z), _lp(v))[m].mean()),
        Variant("mask_ignored", "You averaged over every position, padding included: use per_token[mask].mean().",
                lambda z, v, m: _kl(_lp(v), _lp(z)).mean()),
    )
    detach_hint = "the student's logits are detached; only the teacher's side is a fixed target."
    hint_text = ("In F.kl_div(input, target), which one is trained, and which one is the fixed target? Which of "
                 "the two should carry .detach()?")
    broken = '''def token_kd_fixed(student_logits, teacher_logits, mask):
    log_q = F.log_softmax(teacher_logits, dim=-1)        # input: the distribution being fitted
    p = F.softmax(student_logits.detach(), dim=-1)       # target: fixed
    per_token = F.kl_div(log_q, p, reduction="none").sum(dim=-1)
    return per_token[mask].mean()
'''
    solution_code = '''def token_kd_fixed(student_logits, teacher_logits, mask):
    log_q = F.log_softmax(student_logits, dim=-1)        # input: the student, trained
    p = F.softmax(teacher_logits.detach(), dim=-1)       # target: the teacher, fixed
    per_token = F.kl_div(log_q, p, reduction="none").sum(dim=-1)
    return per_token[mask].mean()
'''

    @staticmethod
    def reference(z, v, m):
        return D.forward_kl(z, v, mask=m)

    def trials(self):
        return _seq_trials()


# ---------------------------------------------------------------- 27. the same logits twice


def reference_batch_kd(student, teacher, x, same=False, mode=None, grad=False, reverse=False):
    """Forward KL(teacher || student) on ids x, token mean (or, with the keywords, a known wrong one)."""
    if mode != "train":
        teacher.eval()
    student_logits = student(x)
    with torch.set_grad_enabled(grad):
        teacher_logits = student_logits.detach() if same else teacher(x)
    log_q, log_p = _lp(student_logits), _lp(teacher_logits.detach() if not grad else teacher_logits)
    return (_kl(log_q, log_p) if reverse else _kl(log_p, log_q)).mean()


BATCH_VARIANTS = (
    Variant("same_logits", "The loss is exactly 0 with a zero gradient: the student's logits are on both sides, "
            "so nothing is distilled (a reported bug: labmlai's annotated distillation passed one model's logits "
            "to both sides). Use teacher(x), computed under torch.no_grad(), as the target.",
            lambda s, t, x: reference_batch_kd(s, t, x, same=True)),
    Variant("teacher_train_mode", "The teacher ran in train mode, so its dropout made the targets noisy. Call "
            "teacher.eval() first.", lambda s, t, x: reference_batch_kd(s, t, x, mode="train")),
    Variant("teacher_grad", "The teacher's forward pass ran with autograd on: wrap it in torch.no_grad() (and "
            "detach its logits) so it is never trained and costs no graph memory.",
            lambda s, t, x: reference_batch_kd(s, t, x, grad=True)),
    Variant("reverse_kl", "You computed KL(student || teacher); this function asks for the forward KL(teacher || "
            "student).", lambda s, t, x: reference_batch_kd(s, t, x, reverse=True)),
)


class FixSameLogits(Exercise):
    """Exercise 27 of notebook 09_coding_exercises: the same logits passed twice, so the KD loss is always 0."""

    number, key, title, fn_name = 27, "fix_same_logits", "Fix: the same logits twice", "batch_kd_loss_fixed"
    bug, variants, other_mistakes = "same_logits", BATCH_VARIANTS, ("no_teacher", "no_student_gradient")
    hint_text = ("Print the loss: what is it on every batch? Which tensor should the target come from, and is "
                 "the teacher ever used?")
    broken = '''def batch_kd_loss_fixed(student, teacher, x):
    teacher.eval()
    student_logits = student(x)
    with torch.no_grad():
        teacher_logits = teacher(x)
    log_q = F.log_softmax(student_logits, dim=-1)
    log_p = F.log_softmax(student_logits.detach(), dim=-1)   # the target distribution
    return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(dim=-1).mean()
'''
    solution_code = '''def batch_kd_loss_fixed(student, teacher, x):
    teacher.eval()
    student_logits = student(x)
    with torch.no_grad():
        teacher_logits = teacher(x)
    log_q = F.log_softmax(student_logits, dim=-1)
    log_p = F.log_softmax(teacher_logits, dim=-1)            # the target: the teacher's distribution
    return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(dim=-1).mean()
'''

    def _check(self, fn):
        """Run the learner's loss on two tiny Transformers; compare value, gradients and the teacher's calls."""
        for seed in (0, 1):
            out, flags, grads = _run_batch(lambda *a: call(fn, *a), seed)
            ref, _, ref_grads = _run_batch(reference_batch_kd, seed)
            if not isinstance(out, torch.Tensor) or out.shape != ():
                raise Incorrect(f"return the loss as a scalar tensor; got {type(out).__name__}"
                                f"{' of shape ' + str(list(out.shape)) if isinstance(out, torch.Tensor) else ''}.",
                                None)
            for variant in self.variants:
                candidate, _, _ = _run_batch(variant.fn, seed)
                if close(out, candidate) and not close(out, ref):
                    raise Incorrect(variant.hint, variant.name)
            if not flags:
                raise Incorrect("the teacher was never called: its logits are the target, teacher(x).", "no_teacher")
            if any(training for training, _ in flags):
                raise Incorrect(BATCH_VARIANTS[1].hint, "teacher_train_mode")
            if any(grad for _, grad in flags):
                raise Incorrect(BATCH_VARIANTS[2].hint, "teacher_grad")
            if not close(out, ref):
                raise Incorrect(f"the loss differs from the reference (got {out.item():.5g}, expected "
                                f"{ref.item():.5g}).", None)
            if grads is None or not all(close(g, r) for g, r in zip(grads, ref_grads)):
                raise Incorrect("the value is right but the student's gradients are not: keep the student's "
                                "logits in the graph (no .detach() on the student).", "no_student_gradient")


def _run_batch(fn, seed: int):
    """(loss, [(teacher.training, grad enabled)], student gradients or None) on fresh tiny models."""
    student, teacher = _tiny_lm(10 + seed, dropout=0.0).eval(), _tiny_lm(20 + seed, dropout=0.5).train()
    x = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(seed))
    flags = []
    hook = teacher.register_forward_hook(lambda m, i, o: flags.append((m.training, torch.is_grad_enabled())))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = fn(student, teacher, x)
    finally:
        hook.remove()
    grads = None
    if isinstance(out, torch.Tensor) and out.requires_grad and out.shape == ():
        params = list(student.parameters())
        grads = [g if g is not None else torch.zeros_like(p)
                 for g, p in zip(torch.autograd.grad(out, params, allow_unused=True, retain_graph=True), params)]
    return (out.detach() if isinstance(out, torch.Tensor) else out), flags, grads


# ---------------------------------------------------------------- 28. a cross-entropy inside a JSD


def _ce_jsd(z, v, beta, p_entropy=True, q_entropy=True):
    return _jsd_with(z, v, beta) + beta * p_entropy * _entropy(v).mean() + (1 - beta) * q_entropy * _entropy(z).mean()


class FixJSDCrossEntropy(GeneralizedJSD):
    """Exercise 28 of notebook 09_coding_exercises: F.cross_entropy inside a JSD adds the entropies."""

    number, key, title, fn_name = 28, "fix_jsd_cross_entropy", "Fix: cross-entropy in a JSD", "jsd_fixed"
    bug = "cross_entropy_in_jsd"
    variants = (
        Variant("cross_entropy_in_jsd", "F.cross_entropy(log m, p) is the cross-entropy H(p, m) = KL(p || m) + "
                "H(p), not KL(p || m): your 'JSD' carries beta*H(p) + (1-beta)*H(q). It is not 0 when student "
                "equals teacher, and the student's H(q) term rewards overconfidence. Use the KLs.",
                lambda z, v, b: _ce_jsd(z, v, b)),
        Variant("student_entropy_left_in", "The teacher's entropy is gone but (1-beta)*H(q) is still in: the "
                "student's own entropy gets a gradient and pushes it towards overconfidence. Use KL(q || m).",
                lambda z, v, b: _ce_jsd(z, v, b, p_entropy=False)),
        Variant("teacher_entropy_left_in", "The loss is off by beta*H(p), the teacher's entropy: the same "
                "gradient, but the value is not 0 at student = teacher. Use KL(p || m).",
                lambda z, v, b: _ce_jsd(z, v, b, q_entropy=False)),
    ) + JSD_VARIANTS
    hint_text = ("What is F.cross_entropy(input, target) when target is a probability vector? Compare it with "
                 "KL(target || softmax(input)). What happens to the loss when student equals teacher?")
    broken = '''def jsd_fixed(student_logits, teacher_logits, beta):
    p = F.softmax(teacher_logits.detach(), dim=-1)
    q = F.softmax(student_logits, dim=-1)
    log_m = (beta * p + (1 - beta) * q).log()
    # the two KL terms of the JSD, each against the mixture m
    return beta * F.cross_entropy(log_m, p) + (1 - beta) * F.cross_entropy(log_m, q)
'''
    solution_code = "def jsd_fixed(student_logits, teacher_logits, beta):\n" + _JSD_BODY
