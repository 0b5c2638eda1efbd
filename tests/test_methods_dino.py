"""kd_lessons.methods.dino: the loss against a hand computation, the center and EMA against their formulas,
the collapse diagnostics on constructed outputs, the augmentations' shapes, and bad input."""
import copy
import math

import pytest
import torch
from torch import nn

from kd_lessons.methods import dino

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_matches_a_hand_computation():
    s = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]])]
    t = [torch.tensor([[0.2, 0.0]]), torch.tensor([[0.0, 0.0]])]
    c, tau_s, tau_t = torch.tensor([0.1, 0.0]), 0.5, 0.25

    def soft(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]
    pt = [soft([(a - b) / tau_t for a, b in zip(v[0].tolist(), c.tolist())]) for v in t]
    ps = [soft([x / tau_s for x in v[0].tolist()]) for v in s]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # teacher view i against every other student view
    expected = sum(-sum(p * math.log(q) for p, q in zip(pt[i], ps[j])) for i, j in pairs) / len(pairs)
    assert dino.dino_loss(s, t, c, tau_s, tau_t).item() == pytest.approx(expected, rel=1e-6)


def test_loss_is_entropy_plus_kl_and_reaches_only_the_student():
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(5, 7, generator=g, requires_grad=True) for _ in range(4)]
    t = [torch.randn(5, 7, generator=g, requires_grad=True) for _ in range(2)]
    c = torch.randn(7, generator=g)
    loss = dino.dino_loss(s, t, c, 0.1, 0.04)
    d = dino.diagnostics(s, t, c, 0.1, 0.04)
    assert loss.item() == pytest.approx(d["entropy"] + d["kl"], rel=1e-5)
    loss.backward()
    assert all(v.grad is not None for v in s) and all(v.grad is None for v in t)


def test_center_is_an_ema_of_the_teacher_batch_mean():
    c = torch.tensor([1.0, -1.0, 0.0])
    t = [torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]])]
    new = dino.update_center(c, t, 0.9)
    assert torch.allclose(new, 0.9 * c + 0.1 * torch.tensor([2.0, 1.0, 1.0]))
    assert not dino.update_center(c, [v.requires_grad_() for v in t], 0.9).requires_grad


def test_ema_update_is_the_formula_for_parameters_and_buffers():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    student(torch.randn(8, 3))
    teacher = copy.deepcopy(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    before_t, before_s = copy.deepcopy(teacher.state_dict()), copy.deepcopy(student.state_dict())
    dino.ema_update(teacher, student, 0.75)
    for name, value in teacher.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.75 * before_t[name] + 0.25 * before_s[name]), name
        else:
            assert torch.equal(value, before_s[name]), name
    assert all(torch.equal(v, before_s[k]) for k, v in student.state_dict().items())


@pytest.mark.parametrize("m", [1.0, -0.1, 1.5, float("nan"), True, "0.9"])
def test_momentum_outside_zero_one_is_a_clear_error(m):
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dino.ema_update(a, b, m)
    with pytest.raises(ValueError, match="center_momentum"):
        dino.DINO(dino.DINONet(2, 4), center_momentum=m)


def test_momentum_schedule_runs_from_base_to_one():
    assert dino.momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert dino.momentum_at(50, 100, 0.99) == pytest.approx(0.995)
    assert dino.momentum_at(100, 100, 0.99) == pytest.approx(1.0)


def test_diagnostics_name_both_collapses():
    K = 16
    same = [torch.zeros(4, K)] * 2  # every score equal: the uniform collapse
    d = dino.diagnostics(same + same, same, torch.zeros(K), 0.1, 0.04)
    assert d["entropy"] == pytest.approx(math.log(K), rel=1e-6) and d["kl"] == pytest.approx(0, abs=1e-6)
    one = torch.zeros(4, K)
    one[:, 3] = 1.0  # one prototype wins for every image, sharply
    d = dino.diagnostics([one] * 4, [one] * 2, torch.zeros(K), 0.1, 0.01)
    assert d["entropy"] < 1e-3 and d["batch_entropy"] < 1e-3 and d["kl"] < 1e-3
    spread = torch.eye(K)[:4] * 10  # sharp per image, a different prototype each: healthy
    d = dino.diagnostics([spread] * 4, [spread] * 2, torch.zeros(K), 0.1, 0.04)
    assert d["entropy"] < 1e-3 and d["batch_entropy"] == pytest.approx(math.log(4), rel=1e-4)


def test_switches_change_the_teacher_temperature_and_the_center():
    net = dino.DINONet(2, 8)
    assert dino.DINO(net, sharpening=False).tau_t == 0.1 and dino.DINO(net).tau_t == 0.04
    views = dino.multi_crop(torch.randn(6, 1, 28, 28), torch.Generator().manual_seed(0))
    off = dino.DINO(net, centering=False)
    off(views)
    assert torch.count_nonzero(off.center) == 0
    on = dino.DINO(net)
    loss, diag = on(views)
    assert torch.count_nonzero(on.center) > 0 and set(diag) == {"loss", "entropy", "kl", "batch_entropy"}
    assert all(not p.requires_grad for p in on.teacher.parameters())


def test_multi_crop_shapes_and_seeding():
    x = torch.randn(3, 1, 28, 28)
    views = dino.multi_crop(x, torch.Generator().manual_seed(1), n_local=3)
    assert [tuple(v.shape) for v in views] == [(3, 1, 28, 28)] * 2 + [(3, 1, 14, 14)] * 3
    again = dino.multi_crop(x, torch.Generator().manual_seed(1), n_local=3)
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    clean = dino.multi_crop(x, torch.Generator().manual_seed(1), n_local=0, noise=0.0, global_scale=(1.0, 1.0))
    assert torch.allclose(clean[0], x, atol=1e-5)  # a full-area crop without noise is the image itself


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="images"):
        dino.multi_crop(torch.randn(28, 28))
    with pytest.raises(ValueError, match="student must"):
        dino.dino_loss([torch.randn(2, 3)], [torch.randn(2, 3)] * 2, torch.zeros(3), 0.1, 0.04)
    with pytest.raises(ValueError, match="temperatures"):
        dino.DINO(dino.DINONet(2, 4), tau_t=0.0)
    with pytest.raises(ValueError, match="width"):
        dino.Backbone(0)
