"""kd_lessons.methods.feature_kd: FeatureKD equals the losses it combines, trains its regressor with the
student, feature_objective sizes fresh regressors from the models, and train_students compares the methods
with one budget."""
import pytest
import torch

from kd_lessons.losses import attention_transfer_loss, distillation_loss, hint_loss
from kd_lessons.methods.feature_kd import (
    FEATURE_METHODS,
    FeatureKD,
    FeatureTerms,
    attention_pair,
    feature_objective,
    feature_shapes,
)
from kd_lessons.models import CNNStudent, MLPStudent, TeacherCNN
from kd_lessons.objectives import CrossEntropy, HintonKD, Objective
from kd_lessons.runs.students import train_students
from kd_lessons.train import TrainOptions, distill

SHAPE = (1, 28, 28)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny models: one torch thread is faster on the shared CPU."""


def _pair(seed=0):
    torch.manual_seed(seed)
    return CNNStudent(width=4), TeacherCNN(width=8)


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


def _shapes(student, teacher):
    return feature_shapes(student, SHAPE), feature_shapes(teacher, SHAPE)


def test_feature_shapes_match_a_forward_pass():
    student, teacher = _pair()
    with torch.no_grad():
        expected = [tuple(f.shape[1:]) for f in student.eval()(torch.zeros(1, *SHAPE), return_features=True)[1]]
    student.train()
    assert feature_shapes(student, SHAPE) == expected and expected[0] == (4, 14, 14)
    assert feature_shapes(teacher, SHAPE)[0] == (8, 14, 14)
    assert student.training  # restored
    assert feature_shapes(MLPStudent(hidden=(16, 8)), SHAPE) == [(16,), (8,)]


def _outputs(student, teacher, x):
    s_out = student(x, return_features=True)
    with torch.no_grad():
        t_out = teacher.eval()(x, return_features=True)
    return s_out, t_out


def test_feature_kd_is_hinton_kd_plus_the_weighted_hint_and_attention_terms():
    student, teacher = _pair()
    x, y = _data(8)
    (s_logits, fs), (t_logits, ft) = s_out, t_out = _outputs(student, teacher, x)
    both = FeatureKD(*_shapes(student, teacher), T=3.0, alpha=0.7, hint_weight=0.5, at_weight=3.0, hint_layer=1,
                     at_layers=[0, 1])
    assert isinstance(both, Objective) and both.uses_features and both.uses_teacher
    expected = (distillation_loss(s_logits, t_logits, y, T=3.0, alpha=0.7)
                + 0.5 * hint_loss(fs[1], ft[1], both.regressor)
                + 3.0 * (attention_transfer_loss(fs[0], ft[0]) + attention_transfer_loss(fs[1], ft[1])))
    torch.testing.assert_close(both(s_out, t_out, y), expected)
    assert set(both.last) == {"hint", "attention"}
    torch.testing.assert_close(torch.tensor(both.last["hint"]), hint_loss(fs[1], ft[1], both.regressor).detach())


def test_feature_kd_with_both_weights_zero_is_plain_hinton_kd():
    student, teacher = _pair()
    x, y = _data(8)
    s_out, t_out = _outputs(student, teacher, x)
    off = FeatureKD(*_shapes(student, teacher), T=4.0, alpha=0.9)
    assert off.regressor is None and float(off.features_loss(s_out[1], t_out[1])) == 0.0
    torch.testing.assert_close(off(s_out, t_out, y), HintonKD(4.0, 0.9)(s_out[0], t_out[0], y))
    assert off.last == {}


def test_gradients_reach_student_and_regressor_but_not_teacher():
    student, teacher = _pair()
    x, y = _data(8)
    s_out, t_out = _outputs(student, teacher, x)
    loss = FeatureKD(*_shapes(student, teacher), hint_weight=1.0, at_weight=1.0)
    loss(s_out, t_out, y).backward()
    assert loss.regressor.proj.weight.grad is not None and loss.regressor.proj.weight.grad.abs().sum() > 0
    assert student.stages[0][0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("kwargs, match", [
    ({"hint_weight": -1.0}, r"hint_weight=-1\.0: pass a finite weight >= 0"),
    ({"at_weight": float("nan")}, r"at_weight=nan: pass a finite weight >= 0"),
    ({"hint_weight": True}, r"hint_weight=True: pass a finite weight >= 0"),
    ({"hint_weight": 1.0, "hint_layer": 5}, r"hint_layer=\[5\] but the models return 3 feature maps; pick indices"),
    ({"at_weight": 1.0, "at_layers": [7]}, r"at_layers=\[7\] but the models return 3 feature maps; pick indices"),
    ({"T": 0.0}, r"T=0\.0; pass a float such as T=4\.0"),
    ({"alpha": 2.0}, r"alpha=2\.0; alpha is the weight of the soft KD term"),
])
def test_bad_settings_raise_value_error(kwargs, match):
    student, teacher = _pair()
    with pytest.raises(ValueError, match=match):
        FeatureKD(*_shapes(student, teacher), **kwargs)


def test_attention_transfer_on_an_mlp_is_refused_and_length_mismatch_too():
    _, teacher = _pair()
    mlp = MLPStudent(hidden=(16,) * len(feature_shapes(teacher, SHAPE)))
    with pytest.raises(ValueError, match=r"attention transfer needs \[C, H, W\] .* use hint_weight only"):
        FeatureKD(feature_shapes(mlp, SHAPE), feature_shapes(teacher, SHAPE), at_weight=1.0)
    with pytest.raises(ValueError, match=r"student gives 1 feature maps and teacher 3; pair models"):
        FeatureKD(feature_shapes(mlp, SHAPE)[:1], feature_shapes(teacher, SHAPE))


def test_feature_objective_builds_fresh_regressors_sized_from_the_models():
    student, teacher = _pair()
    a = feature_objective("response + hint", student, teacher, SHAPE, T=2.0, alpha=0.5,
                          terms=FeatureTerms(hint_weight=0.3))
    b = feature_objective("response + hint", student, teacher, SHAPE)
    assert a.regressor is not b.regressor and a.regressor.proj.weight is not b.regressor.proj.weight
    assert (a.regressor.proj.in_features, a.regressor.proj.out_features) == (4, 8)  # student 4, teacher 8 channels
    assert (a.response.T, a.response.alpha, a.hint_weight, a.at_weight) == (2.0, 0.5, 0.3, 0.0)
    deep = feature_objective("response + hint", student, teacher, SHAPE, terms=FeatureTerms(hint_layer=2))
    assert (deep.regressor.proj.in_features, deep.regressor.proj.out_features) == (16, 32)
    at = feature_objective("response + attention", student, teacher, SHAPE, terms=FeatureTerms(at_weight=2.0))
    assert at.regressor is None and at.at_weight == 2.0 and at.at_layers == [0, 1, 2]
    last = feature_objective("response + attention", student, teacher, SHAPE, terms=FeatureTerms(at_layers=(2,)))
    assert last.at_layers == [2] and last.hint_weight == 0.0 and last.at_weight == 1.0
    both = feature_objective("response + hint + attention", student, teacher, SHAPE)
    assert both.regressor is not None and both.hint_weight == both.at_weight == 1.0
    assert set(FEATURE_METHODS) == {"response + hint", "response + attention", "response + hint + attention"}
    with pytest.raises(ValueError, match=r"method='magic': use one of \['response \+ hint'"):
        feature_objective("magic", student, teacher, SHAPE)
    with pytest.raises(ValueError, match=r"terms=\{'hint_weight': 0\.3\}: pass a FeatureTerms"):
        feature_objective("response + hint", student, teacher, SHAPE, terms={"hint_weight": 0.3})
    assert FeatureTerms() == FeatureTerms(hint_weight=1.0, at_weight=1.0, hint_layer=0, at_layers=None)


def test_distill_with_feature_kd_trains_student_and_regressor_and_lowers_the_loss():
    student, teacher = _pair()
    x, y = _data(128)
    objective = feature_objective("response + hint + attention", student, teacher, SHAPE)
    before = [p.detach().clone() for p in student.parameters()]
    reg_before = objective.regressor.proj.weight.detach().clone()
    teacher_before = [p.detach().clone() for p in teacher.parameters()]
    teacher.train()
    history = distill(student, x, y, teacher, objective, num_epochs=3, lr=1e-2,
                      options=TrainOptions(batch_size=32, device="cpu"))
    assert len(history["train_loss"]) == 3 and history["train_loss"][-1] < history["train_loss"][0]
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert not torch.equal(reg_before, objective.regressor.proj.weight.detach().cpu())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters()))
    assert teacher.training  # left in the mode it was in


def test_feature_kd_refuses_teacher_logits():
    student, teacher = _pair()
    x, y = _data(32)
    objective = feature_objective("response + hint", student, teacher, SHAPE)
    logits = torch.randn(32, 10)
    with pytest.raises(ValueError, match=r"FeatureKD needs the teacher's feature maps: pass teacher=<model>"):
        distill(student, x, y, logits, objective, num_epochs=1, options=TrainOptions(device="cpu"))


def test_train_students_compares_feature_methods_with_one_budget(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # the response method caches test-only teacher logits
    x, y = _data(96)
    xt, yt = _data(40, seed=1)
    _, teacher = _pair()
    methods = {"scratch": CrossEntropy(), "response": HintonKD(4.0, 0.9),
               "response + hint + attention": lambda student: feature_objective("response + hint + attention",
                                                                                student, teacher, SHAPE)}
    runs = train_students(lambda: CNNStudent(width=4), {"x": x, "y": y, "x_test": xt, "y_test": yt}, methods,
                          seeds=[0, 1], teacher=teacher, num_epochs=1,
                          options=TrainOptions(batch_size=32, progress=False))
    table = runs.table
    assert list(table["method"]) == list(methods) * 2 and list(table["seed"]) == [0, 0, 0, 1, 1, 1]
    assert table["errors"].between(0, 40).all() and set(runs.students) == {(m, s) for m in methods for s in (0, 1)}
    assert ((1 - table["accuracy"]) * 40).round().astype(int).tolist() == table["errors"].tolist()


def test_attention_pair_gives_unit_norm_maps_of_the_stage_size():
    student, teacher = _pair()
    x, _ = _data(5)
    s, t = attention_pair(student, teacher, x, layer=0)
    assert s.shape == t.shape == (5, 14, 14)
    torch.testing.assert_close(t.flatten(1).norm(dim=1), torch.ones(5))
    torch.testing.assert_close(s.flatten(1).norm(dim=1), torch.ones(5))
    assert student.training and teacher.training  # modes restored
