"""kd_lessons.methods.schemes: TAKD and born-again chain the teachers as the papers do, mutual learning steps
both models on each other's detached predictions (and is two `fit` runs at alpha=0), and function matching
shows the teacher exactly the student's augmented batch."""
import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from kd_lessons import train
from kd_lessons.config import seed_everything
from kd_lessons.data import random_shift
from kd_lessons.methods.schemes import (
    born_again,
    function_matching,
    function_matching_objective,
    mutual_learning,
    teacher_assistant,
)
from kd_lessons.models import MLPStudent
from kd_lessons.objectives import HintonKD

QUIET = train.TrainOptions(progress=False, precision="fp32")


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny tensors: one torch thread is faster on the shared CPU."""


@pytest.fixture
def toy():
    """64 random 1x4x4 'images' in 4 classes."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 1, 4, 4, generator=g), torch.randint(0, 4, (64,), generator=g)


def _mlp(width=8):
    return MLPStudent((width,), in_features=16, num_classes=4)


@pytest.fixture
def distill_calls(monkeypatch):
    """Record (student, teacher, objective, kwargs) of every train.distill call, then run the real one."""
    calls, real = [], train.distill

    def spy(student, x, y, teacher, objective=None, **kwargs):
        calls.append((student, teacher, objective, kwargs))
        return real(student, x, y, teacher, objective, **kwargs)
    monkeypatch.setattr(train, "distill", spy)
    return calls


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_teacher_assistant_distils_teacher_to_assistant_to_student(toy, distill_calls):
    x, y = toy
    teacher = _mlp(32)
    assistant, student, histories = teacher_assistant(lambda: _mlp(16), _mlp, teacher, x, y, T=3.0, alpha=0.7,
                                                      num_epochs=1, lr=1e-2, options=replace(QUIET, batch_size=32))
    assert [(c[0], c[1]) for c in distill_calls] == [(assistant, teacher), (student, assistant)]
    assert all(isinstance(c[2], HintonKD) and (c[2].T, c[2].alpha) == (3.0, 0.7) for c in distill_calls)
    assert assistant.hidden == (16,) and student.hidden == (8,)
    assert set(histories) == {"assistant", "student"} and len(histories["student"]["step_loss"]) == 2


def test_born_again_generation_k_plus_1_learns_from_generation_k(toy, distill_calls):
    x, y = toy
    teacher = _mlp(8)
    students = born_again(_mlp, teacher, x, y, generations=3, num_epochs=1, lr=1e-2,
                          options=replace(QUIET, batch_size=32))
    assert len(students) == 3 and len({id(s) for s in students}) == 3
    assert [c[0] for c in distill_calls] == students
    assert [c[1] for c in distill_calls] == [teacher, *students[:-1]]
    shapes = {tuple((k, v.shape) for k, v in s.state_dict().items()) for s in students}
    assert len(shapes) == 1 and all(type(s) is MLPStudent for s in students)
    assert not torch.equal(students[0].out.weight, students[1].out.weight)


def test_schemes_reject_bad_arguments(toy):
    x, y = toy
    with pytest.raises(ValueError, match="generations=0"):
        born_again(_mlp, _mlp(), x, y, generations=0, num_epochs=1, lr=1e-2)
    with pytest.raises(ValueError, match="generations=True"):
        born_again(_mlp, _mlp(), x, y, generations=True, num_epochs=1, lr=1e-2)
    with pytest.raises(ValueError, match="equal length"):
        born_again(_mlp, _mlp(), x, y[:10], num_epochs=1, lr=1e-2)
    with pytest.raises(ValueError, match="equal length"):
        teacher_assistant(_mlp, _mlp, _mlp(), x[:5], y, num_epochs=1, lr=1e-2)
    with pytest.raises(ValueError, match="equal length"):
        mutual_learning(_mlp, _mlp, x, y[:-1], num_epochs=1, lr=1e-2)
    with pytest.raises(ValueError, match="equal length"):
        function_matching(_mlp(), _mlp(), x, y[:3], random_shift, num_epochs=1, lr=1e-2)
    with pytest.raises(ValueError, match="make_assistant got a MLPStudent model; pass a function"):
        teacher_assistant(_mlp(), _mlp, _mlp(), x, y, num_epochs=1, lr=1e-2)
    with pytest.raises(ValueError, match="alpha must be"):
        mutual_learning(_mlp, _mlp, x, y, num_epochs=1, lr=1e-2, objective=HintonKD(1.0, 1.5))
    with pytest.raises(ValueError, match="num_epochs=0"):
        mutual_learning(_mlp, _mlp, x, y, num_epochs=0, lr=1e-2)
    with pytest.raises(ValueError, match="mutual_learning uses AdamW"):
        mutual_learning(_mlp, _mlp, x, y, num_epochs=1, lr=1e-2, options=train.TrainOptions(optimizer="sgd"))
    with pytest.raises(ValueError, match="needs the teacher model"):
        function_matching(_mlp(), torch.zeros(64, 4), x, y, random_shift, num_epochs=1, lr=1e-2)
    with pytest.raises(ValueError, match="augment=None"):
        function_matching(_mlp(), _mlp(), x, y, None, num_epochs=1, lr=1e-2)


def _dml_step_by_hand(a, b, x, y, lr, detach=True):
    """Zhang et al. Eqs. 3-4 (halved: alpha=0.5, T=1) written out: CE + KL(p_other || p_own), one AdamW step each."""
    opts = [torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=5e-4) for m in (a, b)]
    za, zb = a(x), b(x)

    def loss(own, other):
        other = other.detach() if detach else other
        kl = (F.softmax(other, 1) * (F.log_softmax(other, 1) - F.log_softmax(own, 1))).sum(1).mean()
        return 0.5 * F.cross_entropy(own, y) + 0.5 * kl
    for o in opts:
        o.zero_grad()
    (loss(za, zb) + loss(zb, za)).backward()
    for o in opts:
        o.step()


def test_mutual_learning_step_uses_the_other_models_detached_predictions(toy):
    x, y = toy
    seed_everything(1)
    a0, b0 = _mlp(), _mlp()
    a, b, history = mutual_learning(lambda: copy.deepcopy(a0), lambda: copy.deepcopy(b0), x, y, num_epochs=1, lr=1e-2,
                                    options=replace(QUIET, batch_size=64))  # one step on the whole batch
    assert history["step"] == [1] and len(history["step_loss_a"]) == 1
    by_hand = [copy.deepcopy(a0), copy.deepcopy(b0)]
    _dml_step_by_hand(*by_hand, x, y, lr=1e-2)
    leaky = [copy.deepcopy(a0), copy.deepcopy(b0)]
    _dml_step_by_hand(*leaky, x, y, lr=1e-2, detach=False)
    for got, want, wrong in zip((a, b), by_hand, leaky):
        for p, q, _ in zip(got.parameters(), want.parameters(), wrong.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
        assert max(float((p - r).detach().abs().max()) for p, r in zip(got.parameters(), wrong.parameters())) > 1e-3


def test_mutual_learning_moves_both_models_on_every_step(toy):
    x, y = toy
    models, snapshots = [], []

    def make():
        models.append(_mlp())
        return models[-1]

    def on_step(done, total):
        snapshots.append([_params(m) for m in models])
    seed_everything(0)
    before = [_params(m) for m in (_mlp(), _mlp())]  # the same draws mutual_learning makes after seeding
    mutual_learning(make, make, x, y, num_epochs=3, lr=1e-2,
                    options=replace(train.TrainOptions(progress=False, on_step=on_step), batch_size=16))
    assert len(snapshots) == 12
    for prev, now in zip([before, *snapshots[:-1]], snapshots):
        for p_model, n_model in zip(prev, now):
            assert any(not torch.equal(p, n) for p, n in zip(p_model, n_model))


def test_mutual_learning_with_alpha_0_is_two_independent_fits(toy):
    x, y = toy
    seed_everything(0)
    a0, b0 = _mlp(), _mlp()
    a, b, history = mutual_learning(_mlp, _mlp, x, y, num_epochs=3, lr=1e-2, objective=HintonKD(1.0, 0.0),
                                    options=replace(QUIET, batch_size=16))  # 12 steps: fit's OneCycle schedule is on
    for start, trained, key in ((a0, a, "step_loss_a"), (b0, b, "step_loss_b")):
        alone = copy.deepcopy(start)
        fit_history = train.fit(alone, x, y, num_epochs=3, lr=1e-2, options=replace(QUIET, batch_size=16))
        assert history[key] == pytest.approx(fit_history["step_loss"], abs=1e-5)
        for p, q in zip(trained.parameters(), alone.parameters()):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_mutual_learning_pulls_the_students_together_on_mnist(mnist_subset):
    """The KL term's effect, measured on held-out images: DML students disagree less than independent ones."""
    x, y, x_test, y_test = mnist_subset(1000, 500)

    def make():
        return MLPStudent((64,))

    def disagreement(alpha):
        a, b, _ = mutual_learning(make, make, x, y, num_epochs=4, lr=3e-3, objective=HintonKD(1.0, alpha),
                                  options=replace(QUIET, batch_size=64))
        pa, pb = F.log_softmax(train.predict_logits(a, x_test), 1), F.log_softmax(train.predict_logits(b, x_test), 1)
        accuracy = min(train.evaluate(m, x_test, y_test)["accuracy"] for m in (a, b))
        return float((pb.exp() * (pb - pa)).sum(1).mean()), accuracy
    kl_mutual, acc_mutual = disagreement(0.5)
    kl_alone, acc_alone = disagreement(0.0)
    assert kl_mutual < 0.7 * kl_alone
    assert acc_mutual > 0.8 and acc_alone > 0.8


def test_function_matching_shows_the_teacher_the_students_augmented_batch(monkeypatch, distill_calls):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 1, 6, 6, generator=g), torch.randint(0, 4, (48,), generator=g)
    teacher, student = MLPStudent((16,), 36, 4), MLPStudent((8,), 36, 4)
    augmented, teacher_saw, student_saw = [], [], []

    def augment(xb, generator=None):
        out = random_shift(xb, 1, generator)
        augmented.append(out.clone())
        return out
    teacher.register_forward_pre_hook(lambda m, inputs: teacher_saw.append(inputs[0].clone()))
    student.register_forward_pre_hook(lambda m, inputs: student_saw.append(inputs[0].clone()))
    history = function_matching(student, teacher, x, y, augment, num_epochs=2, lr=1e-2,
                                options=replace(QUIET, batch_size=16))
    (_, got_teacher, objective, kwargs), = distill_calls
    assert got_teacher is teacher and kwargs["options"].augment is augment
    assert isinstance(objective, HintonKD) and (objective.T, objective.alpha) == (1.0, 1.0)
    assert len(history["step_loss"]) == 6 == len(augmented) == len(teacher_saw) == len(student_saw)
    for aug, t_in, s_in in zip(augmented, teacher_saw, student_saw):
        assert torch.equal(t_in, aug) and torch.equal(s_in, aug)
    assert not any(torch.equal(aug, x[:16]) for aug in augmented)  # the views really are shifted
    assert function_matching_objective(2.0).T == 2.0 and function_matching_objective().alpha == 1.0
