"""kd_lessons.methods.relations: RKD distance and angle losses equal loop implementations of Park et al.'s
formulas (value and gradient), have the invariances the normalisation promises, and RKD trains a student."""
import itertools

import pytest
import torch

from kd_lessons.methods.feature_kd import feature_shapes
from kd_lessons.methods.relations import RKD, flat_embedding, rkd_angle_loss, rkd_distance_loss
from kd_lessons.models import MLPStudent, TeacherCNN
from kd_lessons.objectives import HintonKD
from kd_lessons.train import TrainOptions, distill

SHAPE = (1, 28, 28)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny tensors: one torch thread is faster on the shared CPU."""


def _huber(a, b):
    d = (a - b).abs()
    return 0.5 * d * d if d <= 1 else d - 0.5


def _oracle_distance(s, t):
    """Park et al. Eqs. 3-5 with loops: psi_D = ||e_i - e_j|| / mu, mu the mean over pairs i != j."""
    pairs = [(i, j) for i in range(len(s)) for j in range(len(s)) if i != j]
    mu_s = sum((s[i] - s[j]).norm() for i, j in pairs) / len(pairs)
    mu_t = sum((t[i] - t[j]).norm() for i, j in pairs) / len(pairs)
    return sum(_huber((s[i] - s[j]).norm() / mu_s, (t[i] - t[j]).norm() / mu_t) for i, j in pairs) / len(pairs)


def _oracle_angle(s, t):
    """Park et al. Eqs. 6-7 with loops: cos of the angle at e_j between e_i and e_k, triplets of distinct samples."""
    def cos(e, i, j, k):
        a, b = e[i] - e[j], e[k] - e[j]
        return (a @ b) / (a.norm() * b.norm())
    triplets = list(itertools.permutations(range(len(s)), 3))
    return sum(_huber(cos(s, i, j, k), cos(t, i, j, k)) for i, j, k in triplets) / len(triplets)


def _emb(n=6, d_s=5, d_t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_s, generator=g), 3.0 * torch.randn(n, d_t, generator=g)


@pytest.mark.parametrize("loss, oracle", [(rkd_distance_loss, _oracle_distance), (rkd_angle_loss, _oracle_angle)])
def test_rkd_losses_equal_the_papers_formulas_in_value_and_gradient(loss, oracle):
    s, t = _emb()
    # widen the student's spread so some pairs land in the linear part of the Huber loss
    s = (s * torch.linspace(0.2, 4.0, len(s))[:, None]).requires_grad_()
    s64 = s.detach().double().requires_grad_()
    value, expected = loss(s, t), oracle(s64, t.double())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    value.backward()
    expected.backward()
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)
    assert s.grad.abs().sum() > 0


def test_the_teacher_is_detached():
    s, t = _emb()
    s.requires_grad_()
    t.requires_grad_()
    (rkd_distance_loss(s, t) + rkd_angle_loss(s, t)).backward()
    assert t.grad is None and s.grad is not None


def _rotation(d, seed=1):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q


def test_rkd_is_invariant_to_scaling_rotating_and_moving_the_teacher():
    s, t = _emb(n=8)
    q = _rotation(t.shape[1])
    base_d, base_a = rkd_distance_loss(s, t), rkd_angle_loss(s, t)
    assert base_d > 1e-3 and base_a > 1e-3
    for moved in (7.5 * t, t @ q, 0.01 * t @ q + 5.0):
        torch.testing.assert_close(rkd_distance_loss(s, moved), base_d, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(rkd_angle_loss(s, moved), base_a, rtol=1e-4, atol=1e-6)
    # a change that is not a similarity does change both
    stretched = t * torch.linspace(0.1, 3.0, t.shape[1])
    assert abs(float(rkd_distance_loss(s, stretched) - base_d)) > 1e-3
    assert abs(float(rkd_angle_loss(s, stretched) - base_a)) > 1e-3


def test_rkd_is_zero_for_identical_or_similar_embeddings_and_positive_otherwise():
    s, t = _emb(d_s=7)
    for same in (t, 2.0 * t @ _rotation(7) - 1.0):  # student = teacher, and up to a similarity
        assert float(rkd_distance_loss(same, t)) < 1e-6 and float(rkd_angle_loss(same, t)) < 1e-6
    assert float(rkd_distance_loss(s, t)) > 1e-3 and float(rkd_angle_loss(s, t)) > 1e-3


def test_identical_samples_give_finite_values_and_gradients():
    s, t = _emb()
    s = torch.cat([s, s[:1]]).requires_grad_()  # a duplicate: zero distance, undefined angle
    t = torch.cat([t, t[:1]])
    loss = rkd_distance_loss(s, t) + rkd_angle_loss(s, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("args, match", [
    ((torch.zeros(4, 3, 2), torch.zeros(4, 3)), r"student_emb must be a non-empty 2-D tensor, got shape \[4, 3, 2\]"),
    ((torch.zeros(4, 3), torch.zeros(5, 3)), r"must embed the same batch of at least \d samples"),
    ((torch.zeros(4, 3), torch.full((4, 3), float("nan"))), r"teacher_emb contains NaN or inf"),
    ((torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 3)), r"student_emb must be a floating-point"),
])
def test_bad_embeddings_raise(args, match):
    for loss in (rkd_distance_loss, rkd_angle_loss):
        with pytest.raises(ValueError, match=match):
            loss(*args)


def test_tiny_batches_raise_in_the_functions():
    with pytest.raises(ValueError, match=r"at least 2 samples"):
        rkd_distance_loss(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"at least 3 samples"):
        rkd_angle_loss(torch.randn(2, 3), torch.randn(2, 3))


@pytest.mark.parametrize("kwargs, match", [
    ({"distance_weight": -1.0}, r"distance_weight=-1\.0: pass a finite weight >= 0"),
    ({"angle_weight": float("inf")}, r"angle_weight=inf: pass a finite weight >= 0"),
    ({"angle_weight": True}, r"angle_weight=True: pass a finite weight >= 0"),
    ({"layer": 1.5}, r"layer=1\.5: pass the index of a feature map"),
    ({"T": 0.0}, r"T=0\.0; pass a float such as T=4\.0"),
    ({"alpha": 2.0}, r"alpha=2\.0; alpha is the weight of the soft KD term"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RKD(**kwargs)


def _outputs(n=6, seed=0):
    torch.manual_seed(seed)
    student, teacher = MLPStudent(hidden=(16, 12)), TeacherCNN(width=4)
    x, y = torch.randn(n, *SHAPE), torch.randint(0, 10, (n,))
    with torch.no_grad():
        t_out = teacher.eval()(x, return_features=True)
    return student, student(x, return_features=True), t_out, y


def test_rkd_objective_is_hinton_kd_plus_the_weighted_terms_on_the_pooled_layer():
    student, s_out, t_out, y = _outputs()
    rkd = RKD(T=3.0, alpha=0.7, distance_weight=2.0, angle_weight=5.0, layer=-1)
    assert rkd.uses_features and rkd.uses_teacher and list(rkd.parameters()) == []
    s, t = s_out[1][-1], t_out[1][-1].mean(dim=(2, 3))  # [6, 12] and GAP of [6, 16, 7, 7]
    torch.testing.assert_close(flat_embedding(t_out[1], -1), t)
    expected = (HintonKD(3.0, 0.7)(s_out[0], t_out[0], y)
                + 2.0 * _oracle_distance(s.double(), t.double()) + 5.0 * _oracle_angle(s.double(), t.double()))
    loss = rkd(s_out, t_out, y)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert set(rkd.last) == {"distance", "angle"} and not rkd.last["angle"].requires_grad
    loss.backward()
    assert student.layers[-1].weight.grad.abs().sum() > 0
    off = RKD(distance_weight=0.0, angle_weight=0.0)
    torch.testing.assert_close(off(s_out, t_out, y), HintonKD()(s_out[0], t_out[0], y))
    first = RKD(layer=0)(s_out, t_out, y)  # first hidden layer [6, 16] vs first stage [6, 4, 14, 14]
    assert torch.isfinite(first) and not torch.isclose(first, loss)


def test_rkd_objective_rejects_bad_feature_inputs():
    _, s_out, t_out, y = _outputs()
    rkd = RKD()
    with pytest.raises(ValueError, match=r"layer=5 but student features has 2 feature maps"):
        RKD(layer=5)(s_out, t_out, y)
    with pytest.raises(ValueError, match=r"needs \(logits, \[features\]\) from both models"):
        rkd(s_out[0], t_out[0], y)
    with pytest.raises(ValueError, match=r"must share the batch size"):
        rkd(s_out, (t_out[0][:4], [f[:4] for f in t_out[1]]), y)
    with pytest.raises(ValueError, match=r"teacher features\[-1\] must be a \[B, D\] or \[B, C, H, W\] tensor, "
                                         r"got \[6, 16, 49\]"):
        rkd(s_out, (t_out[0], [f.flatten(2) for f in t_out[1]]), y)
    bad = (s_out[0], [s_out[1][0], torch.full_like(s_out[1][1], float("nan"))])
    rkd.check(s_out[0], t_out[0], y)
    with pytest.raises(ValueError, match=r"student_emb contains NaN or inf"):
        rkd(bad, t_out, y)


def test_rkd_objective_gives_zero_relation_terms_for_too_small_batches():
    _, s_out, t_out, y = _outputs(n=2)
    loss = RKD()(s_out, t_out, y)  # 2 samples: distances only, no triplet
    expected = HintonKD()(s_out[0], t_out[0], y)  # two points: normalised distance 1 for both
    torch.testing.assert_close(loss, expected)
    _, s_out, t_out, y = _outputs(n=1)
    torch.testing.assert_close(RKD()(s_out, t_out, y), HintonKD()(s_out[0], t_out[0], y))


def test_distill_with_rkd_trains_an_mlp_student_from_a_cnn_teacher(mnist_subset):
    x, y, _, _ = mnist_subset(200, 10)
    torch.manual_seed(0)
    student, teacher = MLPStudent(hidden=(32, 32)), TeacherCNN(width=4)
    assert feature_shapes(student, SHAPE)[-1] == (32,) and feature_shapes(teacher, SHAPE)[-1] == (16, 7, 7)
    objective = RKD(distance_weight=25.0, angle_weight=50.0)
    teacher_before = [p.detach().clone() for p in teacher.parameters()]
    history = distill(student, x, y, teacher, objective, num_epochs=4, lr=3e-3,
                      options=TrainOptions(batch_size=64, device="cpu"))
    losses = history["train_loss"]
    assert losses[-1] < losses[0] and all(torch.isfinite(torch.tensor(losses)))
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters()))
