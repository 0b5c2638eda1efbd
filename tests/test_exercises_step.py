"""kd_lessons.exercises.step: the full loss (3, 14) and one training step (6, 15)."""
import copy

import pytest
import torch
from torch import nn

from kd_lessons.exercises import DistillationLoss, DistillationStep
from kd_lessons.exercises.step import DISTILL_VARIANTS, StepMistake, reference_step
from kd_lessons.losses import distillation_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _step(teacher_mode="eval", no_grad=True, zero_grad=True, detach=False, loss_fn=distillation_loss,
          update_teacher=False, as_tensor=False, use_teacher=True, scale_return=1.0):
    """A training step with one chosen mistake."""
    def step(student, teacher, optimizer, x, y, T, alpha):
        teacher.train() if teacher_mode == "train" else teacher.eval()
        with torch.set_grad_enabled(not no_grad):
            teacher_logits = teacher(x) if use_teacher else student(x).detach()
        student_logits = student(x)
        loss = loss_fn(student_logits.detach() if detach else student_logits, teacher_logits, y, T, alpha)
        if zero_grad:
            optimizer.zero_grad()
        if loss.requires_grad:
            loss.backward()
        optimizer.step()
        if update_teacher:
            with torch.no_grad():
                for p in teacher.parameters():
                    p.add_(0.01)
        return loss if as_tensor else scale_return * loss.item()
    return step


def _wrong_loss(name):
    return next(v.fn for v in DISTILL_VARIANTS if v.name == name)


STEP_CASES = [
    ({}, None),
    ({"teacher_mode": "train"}, "teacher_train_mode"),
    ({"no_grad": False}, "teacher_grad"),
    ({"zero_grad": False}, "no_zero_grad"),
    ({"detach": True}, "student_not_updated"),
    ({"update_teacher": True}, "teacher_updated"),
    ({"as_tensor": True}, "return_type"),
    ({"scale_return": 2.0}, "return_value"),
    ({"use_teacher": False}, "no_teacher"),
    ({"loss_fn": _wrong_loss("alpha_swapped")}, "alpha_swapped"),
    ({"loss_fn": _wrong_loss("no_T_squared")}, "no_T_squared"),
]


@pytest.mark.parametrize("kwargs,mistake", STEP_CASES)
def test_step_mistakes_are_named(kwargs, mistake):
    result = DistillationStep().check(_step(**kwargs))
    expected = ("correct", None) if mistake is None else ("incorrect", mistake)
    assert (result.outcome, result.mistake) == expected, result


def test_every_step_mistake_of_its_own_has_a_case():
    assert set(DistillationStep.other_mistakes) <= {m for _, m in STEP_CASES}
    wrong_losses = {v.name for v in DISTILL_VARIANTS}
    assert set(DistillationStep().mistakes) == set(DistillationStep.other_mistakes) | wrong_losses


def test_reference_step_leaves_the_teacher_alone():
    teacher = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    student = nn.Linear(3, 2)
    before = copy.deepcopy(teacher.state_dict())
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    loss = reference_step(student, teacher, torch.optim.SGD(student.parameters(), lr=0.1), x, y, 2.0, 0.5)
    assert isinstance(loss, float)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_reference_step_makes_the_mistake_it_is_given():
    def run(mistake=None):
        torch.manual_seed(0)
        teacher, student = nn.Linear(3, 2), nn.Linear(3, 2)
        for p in student.parameters():  # gradients left over from a previous step
            p.grad = torch.full_like(p, 0.5)
        x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
        loss = reference_step(student, teacher, torch.optim.SGD(student.parameters(), lr=0.1), x, y, 2.0, 0.7,
                              mistake)
        return loss, student.weight.detach().clone()

    loss, weight = run()
    same_loss, same = run(StepMistake())  # the defaults make no mistake
    assert same_loss == loss and torch.equal(same, weight)
    stale_loss, stale = run(StepMistake(zero_grad=False))
    assert stale_loss == loss and not torch.allclose(stale, weight)
    wrong = next(v.fn for v in DISTILL_VARIANTS if v.name == "alpha_swapped")
    wrong_loss, wrong_weight = run(StepMistake(loss_fn=wrong))
    assert wrong_loss != pytest.approx(loss) and not torch.allclose(wrong_weight, weight)


def test_every_kd_loss_mistake_is_also_named_inside_the_full_loss():
    names = {v.name for v in DISTILL_VARIANTS}
    assert {"reduction_mean", "swapped", "no_T_squared"} <= names and len(names) == len(DISTILL_VARIANTS)
    hint = next(v.hint for v in DISTILL_VARIANTS if v.name == "swapped")
    assert hint.startswith("In the soft term: ") and DistillationLoss().check(_wrong_loss("swapped")).message == hint
