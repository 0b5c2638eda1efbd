"""Feature distillation: the loss module equals the losses it combines, trains its regressor, and
the comparison runs every method with one budget."""
import pytest
import torch

from kd_lessons.feature_kd import (METHODS, FeatureDistillLoss, attention_pair, compare_methods,
                                   distill_features, feature_shapes)
from kd_lessons.losses import attention_transfer_loss, hint_loss
from kd_lessons.models import CNNStudent, MLPStudent, TeacherCNN

SHAPE = (1, 28, 28)


def _pair(seed=0):
    torch.manual_seed(seed)
    return CNNStudent(width=4), TeacherCNN(width=8)


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_feature_shapes_match_a_forward_pass():
    student, teacher = _pair()
    with torch.no_grad():
        expected = [tuple(f.shape[1:]) for f in student.eval()(torch.zeros(1, *SHAPE), return_features=True)[1]]
    student.train()
    assert feature_shapes(student, SHAPE) == expected and expected[0] == (4, 14, 14)
    assert feature_shapes(teacher, SHAPE)[0] == (8, 14, 14)
    assert student.training  # restored


def _features(student, teacher, x):
    _, fs = student(x, return_features=True)
    with torch.no_grad():
        _, ft = teacher.eval()(x, return_features=True)
    return fs, ft


def test_loss_is_the_weighted_sum_of_hint_and_attention_terms():
    student, teacher = _pair()
    x, _ = _data(8)
    fs, ft = _features(student, teacher, x)
    shapes_s, shapes_t = feature_shapes(student, SHAPE), feature_shapes(teacher, SHAPE)
    off = FeatureDistillLoss(shapes_s, shapes_t)
    assert float(off(fs, ft)) == 0.0 and off.regressor is None
    both = FeatureDistillLoss(shapes_s, shapes_t, hint_weight=0.5, at_weight=3.0, hint_layer=1, at_layers=[0, 1])
    expected = 0.5 * hint_loss(fs[1], ft[1], both.regressor) + 3.0 * (
        attention_transfer_loss(fs[0], ft[0]) + attention_transfer_loss(fs[1], ft[1]))
    torch.testing.assert_close(both(fs, ft), expected)
    assert set(both.last) == {"hint", "attention"}


def test_gradients_reach_student_and_regressor_but_not_teacher():
    student, teacher = _pair()
    x, _ = _data(8)
    fs, ft = _features(student, teacher, x)
    loss = FeatureDistillLoss(feature_shapes(student, SHAPE), feature_shapes(teacher, SHAPE),
                              hint_weight=1.0, at_weight=1.0)
    loss(fs, ft).backward()
    assert loss.regressor.proj.weight.grad is not None and loss.regressor.proj.weight.grad.abs().sum() > 0
    assert student.stages[0][0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("kwargs, match", [
    ({"hint_weight": -1.0}, "hint_weight"),
    ({"at_weight": float("nan")}, "at_weight"),
    ({"hint_weight": 1.0, "hint_layer": 5}, "hint_layer"),
    ({"at_weight": 1.0, "at_layers": [7]}, "at_layers"),
])
def test_bad_settings_raise_value_error(kwargs, match):
    student, teacher = _pair()
    with pytest.raises(ValueError, match=match):
        FeatureDistillLoss(feature_shapes(student, SHAPE), feature_shapes(teacher, SHAPE), **kwargs)


def test_attention_transfer_on_an_mlp_is_refused_and_length_mismatch_too():
    _, teacher = _pair()
    mlp = MLPStudent(hidden=(16,) * len(feature_shapes(teacher, SHAPE)))
    with pytest.raises(ValueError, match="attention transfer"):
        FeatureDistillLoss(feature_shapes(mlp, SHAPE), feature_shapes(teacher, SHAPE), at_weight=1.0)
    with pytest.raises(ValueError, match="feature maps"):
        FeatureDistillLoss(feature_shapes(mlp, SHAPE)[:1], feature_shapes(teacher, SHAPE))


def test_distill_features_trains_the_student_and_lowers_the_hint_term():
    student, teacher = _pair()
    x, y = _data(128)
    before = [p.detach().clone() for p in student.parameters()]
    history = distill_features(student, x, y, teacher, hint_weight=1.0, at_weight=1.0, num_epochs=3, lr=1e-2,
                               batch_size=32, progress=False, device="cpu")
    assert len(history["train_loss"]) == 3 and history["train_loss"][-1] < history["train_loss"][0]
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_compare_methods_gives_one_row_per_method_and_seed():
    x, y = _data(96)
    xt, yt = _data(40, seed=1)
    _, teacher = _pair()
    methods = ["scratch", "response", "response + hint + attention"]
    table, students = compare_methods(lambda: CNNStudent(width=4), teacher, x, y, xt, yt, methods=methods,
                                      seeds=[0, 1], num_epochs=1, batch_size=32, progress=False)
    assert list(table["method"]) == methods * 2 and list(table["seed"]) == [0, 0, 0, 1, 1, 1]
    assert table["errors"].between(0, 40).all() and set(students) == {(m, s) for m in methods for s in (0, 1)}
    assert ((1 - table["accuracy"]) * 40).round().astype(int).tolist() == table["errors"].tolist()
    with pytest.raises(ValueError, match="methods"):
        compare_methods(lambda: CNNStudent(width=4), teacher, x, y, xt, yt, methods=["magic"], progress=False)
    assert set(METHODS) >= set(methods)


def test_attention_pair_gives_unit_norm_maps_of_the_stage_size():
    student, teacher = _pair()
    x, _ = _data(5)
    s, t = attention_pair(student, teacher, x, layer=0)
    assert s.shape == t.shape == (5, 14, 14)
    torch.testing.assert_close(t.flatten(1).norm(dim=1), torch.ones(5))
    torch.testing.assert_close(s.flatten(1).norm(dim=1), torch.ones(5))
