"""DeepInversion pieces: the BN-statistics loss against an independent computation, the hooks, synthesis."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kd_lessons.methods.deep_inversion import (
    BNStatistics,
    SynthesisOptions,
    bn_loss_per_layer,
    bn_statistics_loss,
    gaussian_noise_like,
    synthesize,
    total_variation,
)
from kd_lessons.models import MLPStudent, TeacherCNN


def reference_bn_loss(x, mean, var):
    """Independent formula: per-channel statistics by explicit sums over N*H*W values."""
    c = x.shape[1]
    flat = x.transpose(0, 1).reshape(c, -1)
    n = flat.shape[1]
    mu = flat.sum(1) / n
    sigma2 = ((flat - mu[:, None]) ** 2).sum(1) / n  # biased, as BatchNorm normalises
    return ((mu - mean) ** 2).sum().sqrt() + ((sigma2 - var) ** 2).sum().sqrt()


def test_bn_loss_matches_independent_formula_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 5, 4, generator=g, dtype=torch.float64) * 2 + 1
    mean, var = torch.randn(3, generator=g, dtype=torch.float64), torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ours, ref = bn_statistics_loss(a, mean, var), reference_bn_loss(b, mean, var)
    ours.backward()
    ref.backward()
    assert torch.allclose(ours, ref, atol=1e-10)
    assert torch.allclose(a.grad, b.grad, atol=1e-10)


def test_bn_loss_is_zero_at_the_batch_statistics_and_uses_biased_variance():
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    mean = x.mean(dim=(0, 2, 3))
    biased = x.var(dim=(0, 2, 3), unbiased=False)
    assert float(bn_statistics_loss(x, mean, biased)) < 1e-12
    unbiased = x.var(dim=(0, 2, 3), unbiased=True)
    assert float(bn_statistics_loss(x, mean, unbiased)) > 1e-3  # the unbiased variance is not what BN normalises with


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(1, 4), st.floats(-3, 3), st.floats(0.1, 4))
def test_bn_loss_2d_inputs_match_formula(n, c, shift, scale):
    g = torch.Generator().manual_seed(n * 10 + c)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * scale + shift
    mean, var = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    ref = reference_bn_loss(x[:, :, None, None], mean, var)
    assert torch.allclose(bn_statistics_loss(x, mean, var), ref, atol=1e-9)


def test_bn_loss_matches_a_real_batchnorm_layer_in_training_mode():
    """BatchNorm2d normalises with exactly these statistics: its output is then zero-mean, unit-variance."""
    bn = nn.BatchNorm2d(3, affine=False).train()
    x = torch.randn(8, 3, 5, 5) * 3 + 2
    out = bn(x)
    loss = bn_statistics_loss(out, torch.zeros(3), torch.ones(3))
    assert float(loss) < 1e-3


def test_running_var_is_the_unbiased_variance_which_differs_little_for_image_batches():
    """Review F25: BN normalises with the biased variance but stores the unbiased one, n/(n-1) larger."""
    bn = nn.BatchNorm2d(3, momentum=1.0).train()  # momentum 1: the buffers are this batch's statistics
    x = torch.randn(64, 3, 7, 7) * 2 + 1
    bn(x)
    n = 64 * 7 * 7
    biased = x.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(bn.running_var, biased * n / (n - 1))
    assert float(((bn.running_var - biased) / biased).max()) < 1e-3  # thousands of values: below 0.1%


@pytest.mark.parametrize("x, mean, var, match", [
    (torch.randn(4, 3, 2), torch.zeros(3), torch.ones(3), r"\[N, C, H, W\]"),
    (torch.randn(4, 3, 2, 2), torch.zeros(4), torch.ones(3), r"running_mean must have one value per channel"),
    (torch.randn(4, 3, 2, 2), torch.zeros(3), torch.ones(2), r"running_var must have one value per channel"),
    (torch.randn(1, 3), torch.zeros(3), torch.ones(3), r"fewer than 2 values per channel"),
])
def test_bn_loss_rejects_bad_shapes(x, mean, var, match):
    with pytest.raises(ValueError, match=match):
        bn_statistics_loss(x, mean, var)


def tiny_teacher(seed=0):
    """A TeacherCNN with trained-looking BN statistics: fitted for a few steps on a fixed random problem."""
    torch.manual_seed(seed)
    teacher = TeacherCNN(width=4)
    x = torch.randn(64, 1, 28, 28) * 0.5
    x[:32, :, 8:20, 8:20] += 2.0  # two kinds of images, so there is something to classify
    y = torch.cat([torch.zeros(32), torch.ones(32)]).long()
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(15):
        teacher.train()
        loss = nn.functional.cross_entropy(teacher(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return teacher.eval()


def count_hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_record_one_loss_per_bn_layer_and_are_removed():
    teacher = tiny_teacher()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in teacher.modules())
    with BNStatistics(teacher) as bn:
        assert count_hooks(teacher) == n_bn
        teacher(torch.randn(4, 1, 28, 28))
        assert len(bn.losses) == n_bn
        total = bn.total(first_weight=1.0)
        assert bn.losses == []
        teacher(torch.randn(4, 1, 28, 28))
        manual = sum(bn.losses[1:], bn.losses[0] * 3.0)
        assert torch.allclose(bn.total(first_weight=3.0), manual)
    assert count_hooks(teacher) == 0
    assert total.item() > 0


def test_hooks_are_removed_even_when_the_block_raises():
    teacher = tiny_teacher()
    with pytest.raises(RuntimeError, match="boom"):
        with BNStatistics(teacher):
            raise RuntimeError("boom")
    assert count_hooks(teacher) == 0


def test_bn_statistics_needs_batchnorm_and_a_forward_pass():
    with pytest.raises(ValueError, match="no BatchNorm2d layer"):
        BNStatistics(MLPStudent(hidden=(8,)))
    with pytest.raises(ValueError, match="run the model forward"):
        with BNStatistics(tiny_teacher()) as bn:
            bn.total()


def test_synthesis_lowers_bn_loss_and_teacher_ce_on_wanted_classes_and_leaves_teacher_alone():
    teacher = tiny_teacher()
    teacher.train()  # the caller's mode must come back
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    y = torch.tensor([0, 1] * 8)
    res = synthesize(teacher, y, options=SynthesisOptions(steps=40, batch_size=16, lr=0.1), seed=0,
                     device="cpu", progress=False, snapshots=(10, 40))
    h = res["history"]
    assert h["bn"][-1] < 0.5 * h["bn"][0]
    assert h["ce"][-1] < h["ce"][0]
    assert res["x"].shape == (16, 1, 28, 28) and torch.equal(res["y"], y)
    assert set(res["snapshots"]) == {10, 40} and torch.equal(res["snapshots"][40], res["x"])
    assert float(res["x"].min()) >= -0.4243 and float(res["x"].max()) <= 2.8216
    assert teacher.training and count_hooks(teacher) == 0
    assert all(p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched
    teacher.eval()
    with torch.no_grad():
        ce_final = nn.functional.cross_entropy(teacher(res["x"]), y)
        noise = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        ce_noise = nn.functional.cross_entropy(teacher(noise), y)
    assert ce_final < ce_noise


def test_synthesis_is_seeded():
    teacher = tiny_teacher()
    opts = SynthesisOptions(steps=3, batch_size=8)
    a = synthesize(teacher, torch.arange(8) % 2, options=opts, seed=1, device="cpu", progress=False)["x"]
    b = synthesize(teacher, torch.arange(8) % 2, options=opts, seed=1, device="cpu", progress=False)["x"]
    assert torch.equal(a, b)


@pytest.mark.parametrize("y, match", [
    (torch.tensor([0, 1, 12]), r"wanted classes must lie in \[0, 9\]"),
    (torch.tensor([0.0, 1.0]), r"1-d int64 tensor"),
    (torch.tensor([], dtype=torch.long), r"non-empty"),
    ([0, 1], r"1-d int64 tensor"),
])
def test_synthesize_rejects_bad_classes(y, match):
    with pytest.raises(ValueError, match=match):
        synthesize(TeacherCNN(width=4).eval(), y, options=SynthesisOptions(steps=1), progress=False, device="cpu")


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, r"steps=0"), ({"batch_size": 2.5}, r"batch_size=2.5"), ({"lr": -1.0}, r"lr=-1.0"),
    ({"bn_weight": float("inf")}, r"bn_weight=inf"), ({"jitter": -1}, r"jitter=-1"),
    ({"low": 1.0, "high": 0.0}, r"low < high"),
])
def test_synthesis_options_reject_nonsense(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SynthesisOptions(**kwargs)


def test_synthesize_rejects_non_models_and_options():
    with pytest.raises(ValueError, match="teacher must be an nn.Module"):
        synthesize("teacher", torch.tensor([0]), progress=False)
    with pytest.raises(ValueError, match="options must be a SynthesisOptions"):
        synthesize(TeacherCNN(width=4), torch.tensor([0]), options={"steps": 1}, progress=False)


def test_total_variation_matches_formula_and_rejects_bad_input():
    x = torch.tensor([[[[0.0, 1.0], [3.0, 3.0]]]])
    # vertical |3-0|, |3-1| -> mean 2.5; horizontal |1-0|, |3-3| -> mean 0.5
    assert float(total_variation(x)) == pytest.approx(3.0)
    assert float(total_variation(torch.ones(2, 1, 4, 4))) == 0.0
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        total_variation(torch.ones(4, 4))


def test_gaussian_noise_is_seeded_and_checked():
    assert torch.equal(gaussian_noise_like(3, seed=2), gaussian_noise_like(3, seed=2))
    assert gaussian_noise_like(5).shape == (5, 1, 28, 28)
    with pytest.raises(ValueError, match="positive number of images"):
        gaussian_noise_like(0)


def test_bn_loss_per_layer_is_small_on_the_teachers_data_and_large_on_noise():
    teacher = tiny_teacher()
    teacher.train()
    x = torch.randn(64, 1, 28, 28) * 0.5
    x[:32, :, 8:20, 8:20] += 2.0  # the kind of images tiny_teacher was fitted on
    like_training = bn_loss_per_layer(teacher, x, batch_size=64)
    noise = bn_loss_per_layer(teacher, torch.randn(64, 1, 28, 28) * 3, batch_size=64)
    assert len(like_training) == sum(isinstance(m, nn.BatchNorm2d) for m in teacher.modules())
    assert sum(like_training) < sum(noise)
    assert teacher.training and count_hooks(teacher) == 0
    with pytest.raises(ValueError, match="at least 2 images"):
        bn_loss_per_layer(teacher, torch.randn(1, 1, 28, 28))
