"""kd_lessons.objectives: HintonKD and CrossEntropy against losses.distillation_loss and torch, and their checks."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from kd_lessons.losses import distillation_loss, kd_loss
from kd_lessons.objectives import UNLABELED, CrossEntropy, HintonKD, Objective

from strategies import FAST, seeds

pytestmark = pytest.mark.usefixtures("one_thread")



def batch(seed, B, K, scale=3.0):
    """Reproducible float32 (student_logits, teacher_logits, labels)."""
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(B, K, generator=g), scale * torch.randn(B, K, generator=g),
            torch.randint(0, K, (B,), generator=g))


def value_and_grads(fn, s, t):
    """Loss value and its gradients w.r.t. the student and the teacher logits (None: no gradient)."""
    s, t = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    loss = fn(s, t)
    g_s, g_t = torch.autograd.grad(loss, (s, t), allow_unused=True)
    return loss.detach(), g_s, g_t


@FAST
@given(seed=seeds, T=st.floats(0.5, 20.0), alpha=st.floats(0.0, 1.0), B=st.integers(1, 9), K=st.integers(2, 12))
def test_hinton_kd_equals_distillation_loss_in_value_and_gradient(seed, T, alpha, B, K):
    s, t, y = batch(seed, B, K)
    objective = HintonKD(T, alpha)
    ours, g_ours, gt_ours = value_and_grads(lambda s, t: objective(s, t, y), s, t)
    ref, g_ref, gt_ref = value_and_grads(lambda s, t: distillation_loss(s, t, y, T, alpha), s, t)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)
    assert gt_ours is None and gt_ref is None  # the teacher never learns


def test_hinton_kd_endpoints_and_defaults():
    s, t, y = batch(0, 6, 5)
    torch.testing.assert_close(HintonKD(4.0, 0.0)(s, t, y), F.cross_entropy(s, y))
    kl = 16 * F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1), reduction="batchmean")
    torch.testing.assert_close(HintonKD(4.0, 1.0)(s, t, y), kl)
    default = HintonKD()
    assert (default.T, default.alpha) == (4.0, 0.9) and default.uses_teacher and not default.uses_features
    assert repr(default) == "HintonKD(T=4, alpha=0.9)"
    assert list(default.parameters()) == []


def test_hinton_kd_computes_in_float32_for_low_precision_logits():
    s, t, y = batch(1, 4, 5)
    loss = HintonKD(2.0, 0.5)(s.bfloat16(), t.bfloat16(), y)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, distillation_loss(s.bfloat16().float(), t.bfloat16().float(), y, 2.0, 0.5))


@FAST
@given(seed=seeds, smoothing=st.floats(0.0, 0.99), B=st.integers(1, 9), K=st.integers(2, 12))
def test_cross_entropy_equals_torch_including_label_smoothing(seed, smoothing, B, K):
    s, _, y = batch(seed, B, K)
    objective = CrossEntropy(smoothing)
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ours = objective(s1, None, y)  # the teacher is not used: None is fine
    ref = F.cross_entropy(s2, y, label_smoothing=smoothing)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, s1)[0], torch.autograd.grad(ref, s2)[0])


def test_cross_entropy_ignores_the_teacher_and_says_so():
    s, t, y = batch(2, 4, 5)
    objective = CrossEntropy(0.1)
    assert not objective.uses_teacher and not objective.uses_features
    torch.testing.assert_close(objective(s, t, y), objective(s, None, y))
    assert objective.label_smoothing == 0.1 and repr(objective) == "CrossEntropy(label_smoothing=0.1)"
    assert CrossEntropy().label_smoothing == 0.0


BAD_SETTINGS = {
    "T=0": (lambda: HintonKD(T=0), "T must be finite and > 0.*such as T=4.0"),
    "T<0": (lambda: HintonKD(T=-1.0), "T must be finite and > 0"),
    "T=inf": (lambda: HintonKD(T=math.inf), "got T=inf"),
    "T=str": (lambda: HintonKD(T="4"), "T must be a real number.*pass a float such as T=4.0"),
    "T=bool": (lambda: HintonKD(T=True), "T must be a real number, got True"),
    "alpha>1": (lambda: HintonKD(alpha=1.5), r"alpha must be a number in \[0, 1\].*e.g. alpha=0.9"),
    "alpha<0": (lambda: HintonKD(alpha=-0.1), r"alpha must be a number in \[0, 1\]"),
    "alpha=nan": (lambda: HintonKD(alpha=math.nan), "got alpha=nan"),
    "alpha=None": (lambda: HintonKD(alpha=None), "alpha must be a real number"),
    "smoothing=1": (lambda: CrossEntropy(1.0), r"label_smoothing=1.0: pass a number in \[0, 1\) such as 0.1"),
    "smoothing<0": (lambda: CrossEntropy(-0.1), r"label_smoothing=-0.1: pass a number in \[0, 1\)"),
    "smoothing=nan": (lambda: CrossEntropy(math.nan), r"label_smoothing=nan: pass a number in \[0, 1\)"),
    "smoothing=bool": (lambda: CrossEntropy(True), r"label_smoothing=True: pass a number in \[0, 1\)"),
    "smoothing=str": (lambda: CrossEntropy("0.1"), r"label_smoothing='0.1': pass a number in \[0, 1\)"),
    "smoothing=None": (lambda: CrossEntropy(None), r"label_smoothing=None: pass a number in \[0, 1\)"),
}


@pytest.mark.parametrize("name", BAD_SETTINGS)
def test_bad_settings_are_rejected_with_a_clear_message(name):
    call, message = BAD_SETTINGS[name]
    with pytest.raises(ValueError, match=message):
        call()


S, V, Y = torch.zeros(4, 5), torch.zeros(4, 5), torch.tensor([0, 1, 2, 3])
BAD_BATCHES = {
    "shape mismatch": ((S, torch.zeros(4, 6), Y),
                       r"student_logits has shape \[4, 5\] but teacher_logits has shape \[4, 6\]"),
    "batch mismatch": ((S, torch.zeros(3, 5), Y), r"\[4, 5\].*\[3, 5\].*same batch"),
    "1-D logits": ((torch.zeros(5), torch.zeros(5), Y), "non-empty 2-D tensor"),
    "nan student": ((torch.full((4, 5), math.nan), V, Y), "student_logits contains NaN or inf.*smaller lr"),
    "inf teacher": ((S, torch.full((4, 5), math.inf), Y), "teacher_logits contains NaN or inf"),
    "labels too big": ((S, V, Y + 2), r"y must lie in \[0, 5\), got values from 2 to 5"),
    "negative labels": ((S, V, Y - 2), r"y must lie in \[0, 5\), got values from -2|labels below -1 found"),
    "float labels": ((S, V, Y.float()), "integer class indices.*not one-hot, not floats"),
    "int32 labels": ((S, V, Y.int()), r"use y\.long\(\)"),
    "one-hot labels": ((S, V, F.one_hot(Y, 5)), r"y must have shape \[4\]"),
    "short labels": ((S, V, Y[:3]), r"y must have shape \[4\].*got \[3\]"),
    "labels without teacher": ((S, None, Y + 2), r"y must lie in \[0, 5\)"),
}


@pytest.mark.parametrize("name", BAD_BATCHES)
@pytest.mark.parametrize("objective", [Objective(), HintonKD(), CrossEntropy()], ids=type)
def test_check_catches_bad_batches(name, objective):
    (student, teacher, y), message = BAD_BATCHES[name]
    with pytest.raises(ValueError, match=message):
        objective.check(student, teacher, y)


def test_check_accepts_good_batches_and_low_precision_logits():
    s, t, y = batch(3, 4, 5)
    for objective in (Objective(), HintonKD(), CrossEntropy()):
        objective.check(s, t, y)
        objective.check(s.bfloat16(), t.half(), y)  # autocast outputs are checked as float32
        objective.check(s, None, y)                  # no teacher: only the labels are checked


def test_objective_base_class_must_be_subclassed():
    assert Objective.uses_teacher and not Objective.uses_features
    with pytest.raises(NotImplementedError, match=r"subclass computes the loss in forward\(student_out"):
        Objective()(S, V, Y)


def test_hinton_kd_with_unlabeled_rows_uses_the_labels_it_has_and_the_teacher_everywhere():
    torch.manual_seed(0)
    z, v = torch.randn(6, 10, requires_grad=True), torch.randn(6, 10)
    y = torch.tensor([3, UNLABELED, 1, UNLABELED, UNLABELED, 7])
    labelled = y != UNLABELED
    got = HintonKD(T=2.0, alpha=0.3)(z, v, y)
    want = 0.3 * kd_loss(z, v, 2.0) + 0.7 * F.cross_entropy(z[labelled], y[labelled])
    torch.testing.assert_close(got, want)
    HintonKD().check(z, v, y)  # -1 is allowed ...
    with pytest.raises(ValueError, match=r"y must lie in \[0, 10\), got values from -1"):
        CrossEntropy().check(z, None, y)  # ... but cross-entropy alone needs every label


def test_hinton_kd_on_a_batch_with_no_labels_is_the_soft_term_alone_not_nan():
    z, v = torch.randn(4, 10), torch.randn(4, 10)
    y = torch.full((4,), UNLABELED)
    got = HintonKD(T=4.0, alpha=0.5)(z, v, y)
    torch.testing.assert_close(got, 0.5 * kd_loss(z, v, 4.0))
