"""kd_lessons.methods.contrastive: the CRD-style in-batch loss equals a loop implementation of InfoNCE over
projected, normalised embeddings (value and gradient), prefers aligned pairs, trains its heads and not the
teacher, sizes fresh heads from the models, and CRD trains a student through train.distill."""
import math

import pytest
import torch

from kd_lessons.methods.contrastive import CRD, crd_for
from kd_lessons.models import MLPStudent, TeacherCNN
from kd_lessons.objectives import HintonKD
from kd_lessons.runs.students import train_students
from kd_lessons.train import TrainOptions, distill

SHAPE = (1, 28, 28)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny tensors: one torch thread is faster on the shared CPU."""


def _oracle(s, t, crd, symmetric=False):
    """Tian et al.'s critic with in-batch negatives, row by row: -log softmax_j(g_s(s_i) . g_t(t_j) / tau)[i]."""
    w_s, b_s = crd.student_head.weight.double(), crd.student_head.bias.double()
    w_t, b_t = crd.teacher_head.weight.double(), crd.teacher_head.bias.double()
    g_s = [(w_s @ s_i + b_s) / (w_s @ s_i + b_s).norm() for s_i in s]
    g_t = [(w_t @ t_j + b_t) / (w_t @ t_j + b_t).norm() for t_j in t]
    n = len(s)

    def direction(a, b):
        total = 0.0
        for i in range(n):
            scores = [a[i] @ b[j] / crd.tau for j in range(n)]
            total = total - (scores[i] - torch.logsumexp(torch.stack(scores), 0))
        return total / n
    return 0.5 * (direction(g_s, g_t) + direction(g_t, g_s)) if symmetric else direction(g_s, g_t)


def _emb(n=6, d_s=5, d_t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_s, generator=g), torch.randn(n, d_t, generator=g)


@pytest.mark.parametrize("symmetric", [False, True])
def test_contrastive_loss_equals_infonce_written_out_in_value_and_gradient(symmetric):
    torch.manual_seed(0)
    crd = CRD((5, 7), dim=4, tau=0.2, symmetric=symmetric)
    s, t = _emb()
    s.requires_grad_()
    s64 = s.detach().double().requires_grad_()
    value, expected = crd.contrastive_loss(s, t), _oracle(s64, t.double(), crd, symmetric)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    value.backward()
    expected.backward()
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)


def test_aligned_embeddings_score_lower_than_permuted_ones():
    torch.manual_seed(0)
    crd = CRD((7, 7), dim=7, tau=0.07)
    t, a = torch.randn(16, 7), torch.randn(7, 7)
    aligned = t @ a.T  # the student's embedding is a linear map of the teacher's
    permuted = aligned[torch.randperm(16, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():  # the teacher's head is the identity; the student's undoes the map
        crd.teacher_head.weight.copy_(torch.eye(7))
        crd.student_head.weight.copy_(torch.linalg.inv(a))
        for head in (crd.student_head, crd.teacher_head):
            head.bias.zero_()
        low, high = crd.contrastive_loss(aligned, t), crd.contrastive_loss(permuted, t)
    assert float(low) < 0.1 < math.log(16) < float(high)  # chance level is log(B)


def test_heads_get_gradients_and_the_teacher_gets_none():
    torch.manual_seed(0)
    student, teacher = MLPStudent(hidden=(16, 12)), TeacherCNN(width=4)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    crd = CRD.for_models(student, teacher, SHAPE, dim=8)
    t_feats = teacher.eval()(x, return_features=True)  # not under no_grad: detaching is the loss's job
    loss = crd(student(x, return_features=True), t_feats, y)
    loss.backward()
    for head in (crd.student_head, crd.teacher_head):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert student.layers[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_crd_objective_is_hinton_kd_plus_weight_times_the_contrastive_term():
    torch.manual_seed(0)
    student, teacher = MLPStudent(hidden=(16, 12)), TeacherCNN(width=4)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    s_out = student(x, return_features=True)
    with torch.no_grad():
        t_out = teacher.eval()(x, return_features=True)
    crd = CRD.for_models(student, teacher, SHAPE, T=3.0, alpha=0.5, weight=0.3, dim=8)
    assert crd.uses_features and crd.uses_teacher
    assert (crd.student_head.in_features, crd.teacher_head.in_features, crd.student_head.out_features) == (12, 16, 8)
    s, t = s_out[1][-1], t_out[1][-1].mean(dim=(2, 3))
    expected = HintonKD(3.0, 0.5)(s_out[0], t_out[0], y) + 0.3 * _oracle(s.double(), t.double(), crd)
    torch.testing.assert_close(crd(s_out, t_out, y).double(), expected, rtol=1e-5, atol=1e-6)
    assert set(crd.last) == {"contrastive"} and not crd.last["contrastive"].requires_grad
    first = CRD.for_models(student, teacher, SHAPE, layer=0)
    assert (first.student_head.in_features, first.teacher_head.in_features) == (16, 4)


def test_for_models_and_crd_for_build_fresh_heads():
    student, teacher = MLPStudent(hidden=(16, 12)), TeacherCNN(width=4)
    a, b = CRD.for_models(student, teacher, SHAPE), CRD.for_models(student, teacher, SHAPE)
    assert a.student_head.weight is not b.student_head.weight
    make = crd_for(teacher, SHAPE, dim=8, weight=0.5)
    c, d = make(student), make(student)
    assert c.teacher_head is not d.teacher_head and c.weight == 0.5 and c.student_head.out_features == 8
    with pytest.raises(ValueError, match=r"tau=-1\.0: pass a temperature > 0"):
        crd_for(teacher, SHAPE, tau=-1.0)
    with pytest.raises(ValueError, match=r"layer=3 but the student returns 2 feature maps"):
        CRD.for_models(student, teacher, SHAPE, layer=3)


@pytest.mark.parametrize("kwargs, match", [
    ({"dims": (0, 16)}, r"student_dim=0: pass a positive integer"),
    ({"dims": (12, 2.5)}, r"teacher_dim=2\.5: pass a positive integer"),
    ({"dims": 12}, r"dims=12: pass the two embedding widths \(student_dim, teacher_dim\)"),
    ({"dims": (12, 16, 20)}, r"dims=\(12, 16, 20\): pass the two embedding widths"),
    ({"dim": True}, r"dim=True: pass a positive integer"),
    ({"tau": 0.0}, r"tau=0\.0: pass a temperature > 0"),
    ({"tau": float("nan")}, r"tau=nan: pass a temperature > 0"),
    ({"weight": -0.1}, r"weight=-0\.1: pass a finite weight >= 0"),
    ({"layer": "last"}, r"layer='last': pass the index of a feature map"),
    ({"symmetric": 1}, r"symmetric=1: pass True or False"),
    ({"T": -2.0}, r"T=-2\.0; pass a float such as T=4\.0"),
    ({"alpha": -0.5}, r"alpha=-0\.5; alpha is the weight of the soft KD term"),
])
def test_bad_settings_raise(kwargs, match):
    args = {"dims": (12, 16), **kwargs}
    with pytest.raises(ValueError, match=match):
        CRD(**args)


def test_bad_inputs_raise():
    crd = CRD((5, 7))
    s, t = _emb()
    with pytest.raises(ValueError, match=r"embeddings are \[6, 7\] \(student\) .* heads take 5 and 7; build"):
        crd.contrastive_loss(t, t)
    logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    with pytest.raises(ValueError, match=r"must share the batch size"):
        crd((logits, [s]), (logits[:4], [t[:4]]), y)
    crd.check(logits, logits, y)
    with pytest.raises(ValueError, match=r"teacher_emb contains NaN or inf"):
        crd((logits, [s]), (logits, [torch.full_like(t, float("nan"))]), y)
    with pytest.raises(ValueError, match=r"y has dtype torch\.int32"):
        crd.check(logits, logits, y.int())
    with pytest.raises(ValueError, match=r"needs \(logits, \[features\]\) from both models"):
        crd(logits, logits, y)


def test_distill_with_crd_trains_student_and_heads_but_not_the_teacher(mnist_subset):
    x, y, _, _ = mnist_subset(200, 10)
    torch.manual_seed(0)
    student, teacher = MLPStudent(hidden=(32, 32)), TeacherCNN(width=4)
    objective = CRD.for_models(student, teacher, SHAPE, dim=16)
    heads_before = objective.student_head.weight.detach().clone()
    teacher_before = [p.detach().clone() for p in teacher.parameters()]
    history = distill(student, x, y, teacher, objective, num_epochs=4, lr=3e-3,
                      options=TrainOptions(batch_size=64, device="cpu"))
    losses = history["train_loss"]
    assert losses[-1] < losses[0] and all(map(math.isfinite, losses))
    assert not torch.equal(heads_before, objective.student_head.weight.detach())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters()))


def test_train_students_accepts_crd_for():
    g = torch.Generator().manual_seed(0)
    data = {"x": torch.randn(64, *SHAPE, generator=g), "y": torch.randint(0, 10, (64,), generator=g)}
    data.update(x_test=data["x"][:16], y_test=data["y"][:16])
    teacher = TeacherCNN(width=4).eval()
    runs = train_students(lambda: MLPStudent(hidden=(16, 16)), data, {"crd": crd_for(teacher, SHAPE, dim=8)},
                          seeds=[0, 1], teacher=teacher,
                          options=TrainOptions(max_steps=2, batch_size=32, device="cpu", progress=False))
    assert len(runs.table) == 2
