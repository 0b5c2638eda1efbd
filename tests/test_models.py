"""Shapes, feature lists, parameter and multiply-add counts and the size/latency helpers of kd_lessons.models."""
import pytest
import torch
from torch import nn

from kd_lessons.models import (
    CifarResNet,
    CifarStudent,
    CNNStudent,
    Ensemble,
    MLPStudent,
    MLPTeacher,
    TeacherCNN,
    count_macs,
    count_params,
    make_student,
    measure_latency,
    size_on_disk,
)
from kd_lessons.teachers import build_teacher, recipe


def make_teacher(dataset, arch=None):
    """The untrained teacher of a dataset's recipe, built as get_teacher builds it (an Ensemble of members)."""
    rec = recipe(dataset, arch)
    if rec.arch == "ensemble":
        return Ensemble([build_teacher(member) for member in rec.members])
    return build_teacher(rec)


def course_teacher():
    """The course's MNIST teacher as notebook 04 describes it: TeacherCNN(width 24) and Hinton's MLPTeacher."""
    torch.manual_seed(0)
    return Ensemble([TeacherCNN(width=24), MLPTeacher()])

# Random tensors with image shapes: enough to check shapes, never a stand-in for real data.
MNIST_LIKE = (1, 28, 28)
CIFAR_SHAPED = (3, 32, 32)

CASES = [
    (TeacherCNN(), MNIST_LIKE, [(24, 14, 14), (48, 7, 7), (96, 7, 7)]),
    (TeacherCNN(width=32), MNIST_LIKE, [(32, 14, 14), (64, 7, 7), (128, 7, 7)]),
    (CNNStudent(width=8), MNIST_LIKE, [(8, 14, 14), (16, 7, 7), (32, 7, 7)]),
    (MLPStudent((800, 800)), MNIST_LIKE, [(800,), (800,)]),
    (MLPStudent((30, 30), dropout=0.1), MNIST_LIKE, [(30,), (30,)]),
    (MLPStudent((30, 30), input_dropout=0.2), MNIST_LIKE, [(30,), (30,)]),
    (MLPTeacher(), MNIST_LIKE, [(1200,), (1200,)]),
    (CifarResNet(depth=20, width=16), CIFAR_SHAPED, [(16, 32, 32), (32, 16, 16), (64, 8, 8)]),
    (CifarResNet(depth=8, width=8), CIFAR_SHAPED, [(8, 32, 32), (16, 16, 16), (32, 8, 8)]),
    (CifarStudent(width=8), CIFAR_SHAPED, [(8, 32, 32), (16, 16, 16), (32, 8, 8)]),
]


@pytest.mark.parametrize("model, shape, feature_shapes", CASES, ids=lambda c: type(c).__name__)
def test_logits_and_features(model, shape, feature_shapes):
    torch.manual_seed(0)
    x = torch.randn(3, *shape)
    model.eval()
    logits = model(x)
    again, features = model(x, return_features=True)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, again)
    assert [tuple(f.shape[1:]) for f in features] == feature_shapes
    assert all(f.shape[0] == 3 for f in features)


def test_teacher_and_cnn_student_stages_line_up():
    x = torch.randn(2, *MNIST_LIKE)
    _, t_feats = TeacherCNN().eval()(x, return_features=True)
    _, s_feats = CNNStudent().eval()(x, return_features=True)
    assert len(t_feats) == len(s_feats)
    assert [f.shape[2:] for f in t_feats] == [f.shape[2:] for f in s_feats]


def test_count_params_matches_hand_count():
    # 784 -> 30 -> 20 -> 10: (784*30 + 30) + (30*20 + 20) + (20*10 + 10)
    assert count_params(MLPStudent((30, 20))) == 784 * 30 + 30 + 30 * 20 + 20 + 20 * 10 + 10
    assert count_params(MLPStudent((800, 800))) == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    tiny = MLPStudent((3,), in_features=4, num_classes=2)
    assert count_params(tiny) == 4 * 3 + 3 + 3 * 2 + 2


def test_teacher_is_bigger_than_students():
    assert count_params(make_teacher("cifar10")) > count_params(make_student("cifar10", "cnn", width=8))
    for mode in ("0", "1"):  # the course's teacher, as its recipe builds it, in both modes
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KD_QUICK", mode)
            teacher = make_teacher("mnist")
        assert count_params(teacher) > count_params(make_student("mnist", "mlp", width=800))
        assert count_params(teacher) > count_params(make_student("mnist", "cnn", width=8))


STUDENTS = {"MLPStudent(100, 100)": lambda: MLPStudent((100, 100)),
            "MLPStudent(800, 800)": lambda: MLPStudent((800, 800)),
            "CNNStudent(8)": lambda: CNNStudent(width=8)}


@pytest.mark.parametrize("name", STUDENTS)
def test_the_course_teacher_is_bigger_than_every_student_in_params_bytes_and_macs(name):
    """Notebook 04 says so: the ensemble teacher beats every student on all three size measures."""
    teacher, student = course_teacher(), STUDENTS[name]()
    assert count_params(teacher) > count_params(student)
    assert size_on_disk(teacher) > size_on_disk(student)
    assert count_macs(teacher, MNIST_LIKE) > count_macs(student, MNIST_LIKE)


def test_the_course_teacher_is_what_the_full_recipe_builds(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "0")
    built, expected = make_teacher("mnist"), course_teacher()
    assert [type(m) for m in built.members] == [TeacherCNN, MLPTeacher]
    assert built.members[0].stages[0][0][0].out_channels == 24
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in expected.state_dict().items()}


def test_ensemble_averages_member_logits_and_sums_their_sizes():
    torch.manual_seed(0)
    a, b = MLPStudent((20,)), CNNStudent(width=2)
    ensemble = Ensemble([a, b]).eval()
    x = torch.randn(4, *MNIST_LIKE)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), (a(x) + b(x)) / 2)
        torch.testing.assert_close(Ensemble([a]).eval()(x), a(x))
    assert count_params(ensemble) == count_params(a) + count_params(b)
    assert count_macs(ensemble, MNIST_LIKE) == count_macs(a, MNIST_LIKE) + count_macs(b, MNIST_LIKE)
    assert ensemble.training is False and a.training is False  # eval() reaches the members
    with pytest.raises(ValueError, match="an Ensemble has no single set of feature maps; use one member"):
        ensemble(x, return_features=True)
    with pytest.raises(ValueError, match=r"an Ensemble needs at least one member model, e.g. Ensemble\(\[cnn, mlp\]\)"):
        Ensemble([])


def test_mlp_teacher_defaults_are_hintons_net():
    teacher = MLPTeacher()
    assert teacher.hidden == (1200, 1200) and teacher.in_features == 784
    assert (teacher.dropout.p, teacher.input_dropout.p) == (0.5, 0.2)
    assert count_params(teacher) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    assert MLPStudent().input_dropout.p == 0.0  # students see clean inputs unless asked


def test_mlp_teacher_input_dropout_is_active_in_train_mode_only():
    torch.manual_seed(0)
    teacher = MLPTeacher()
    seen = []
    teacher.input_dropout.register_forward_hook(lambda module, inputs, out: seen.append(out.detach().clone()))
    x = torch.ones(64, *MNIST_LIKE)
    teacher.train()(x)
    dropped = seen[-1]
    assert set(dropped.unique().tolist()) == {0.0, 1.25}      # dropped, or scaled by 1 / (1 - 0.2)
    assert (dropped == 0).float().mean().item() == pytest.approx(0.2, abs=0.01)
    teacher.eval()
    with torch.no_grad():
        first, second = teacher(x), teacher(x)
    assert torch.equal(seen[-1], x.flatten(1)) and torch.equal(first, second)  # eval: inputs untouched


def test_size_on_disk_covers_the_float32_weights():
    model = MLPStudent((30, 30))
    assert size_on_disk(model) >= 4 * count_params(model)


@pytest.mark.parametrize("batch_size", [1, 256])
def test_latency_is_positive(batch_size):
    model = MLPStudent((30, 30))
    ms = measure_latency(model, MNIST_LIKE, batch_size=batch_size, device="cpu", repeats=3, warmup=1)
    assert ms > 0
    assert model.training  # measured on a copy; the caller's model is untouched


def test_latency_of_a_cnn():
    assert measure_latency(CNNStudent(), MNIST_LIKE, batch_size=4, device="cpu", repeats=2) > 0


def test_make_student_kinds():
    mlp = make_student("mnist", "mlp", width=30)
    assert isinstance(mlp, MLPStudent) and mlp.hidden == (30, 30)
    assert isinstance(make_student("fashion_mnist", "cnn", width=4), CNNStudent)
    assert isinstance(make_student("cifar10", "cnn", width=4), CifarStudent)
    assert make_student("cifar10", "mlp", width=10)(torch.randn(2, *CIFAR_SHAPED)).shape == (2, 10)
    assert isinstance(make_teacher("fashion_mnist", "cnn"), TeacherCNN)
    assert isinstance(make_teacher("fashion_mnist", "mlp"), MLPTeacher)
    assert isinstance(make_teacher("fashion_mnist"), Ensemble)
    assert isinstance(make_teacher("cifar10"), CifarResNet)


BAD_CALLS = {
    "teacher dataset": (lambda: make_teacher("imagenet"), r"unknown dataset 'imagenet'; use one of \["),
    "student dataset": (lambda: make_student("svhn"), r"unknown dataset 'svhn'; use one of \["),
    "student kind": (lambda: make_student("mnist", kind="transformer"),
                     "kind='transformer' is not known; use 'mlp' or 'cnn'"),
    "student width": (lambda: make_student("mnist", width=0), "width=0: must be a positive integer"),
    "mlp width": (lambda: MLPStudent((0,)), r"hidden=\(0,\).*widths must be positive"),
    "mlp dropout": (lambda: MLPStudent((3,), dropout=1.0), r"dropout=1\.0.*dropout rates in \[0, 1\)"),
    "mlp input dropout": (lambda: MLPStudent((3,), input_dropout=-0.1),
                          r"input_dropout=-0\.1: widths must be positive and dropout rates in \[0, 1\)"),
    "mlp teacher dropout": (lambda: MLPTeacher(dropout=1.0), r"dropout rates in \[0, 1\)"),
    "resnet depth": (lambda: CifarResNet(depth=21), r"depth must be 6n\+2 \(8, 14, 20, 32, 56\)"),
    "teacher width": (lambda: TeacherCNN(width=0), "width must be positive"),
    "cnn width": (lambda: CNNStudent(width=0), "width=0: must be a positive integer"),
    "mlp input": (lambda: MLPStudent((30,))(torch.randn(2, 3, 32, 32)),
                  "expects 784 input features per sample, got 3072; build it with in_features=3072"),
    "latency batch": (lambda: measure_latency(MLPStudent((3,)), MNIST_LIKE, batch_size=0, device="cpu"),
                      "batch_size=0.*need batch_size, repeats >= 1"),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_input_raises_value_error(name):
    call, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- multiply-adds

def test_count_macs_of_a_linear_layer():
    assert count_macs(nn.Linear(784, 10), (784,)) == 784 * 10 == 7840
    assert count_macs(nn.Linear(784, 10, bias=False), (5, 784)) == 5 * 7840  # applied to each of 5 rows


def test_count_macs_of_a_small_conv_net_matches_a_hand_count():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),          # 4x8x8 outputs, each 1*3*3 MACs: 256 * 9   = 2304
        nn.ReLU(), nn.MaxPool2d(2),             # 4x4x4, free
        nn.Conv2d(4, 8, 3),                     # 8x2x2 outputs, each 4*3*3 MACs: 32 * 36   = 1152
        nn.Conv2d(8, 8, 1, groups=4),           # 8x2x2 outputs, each (8/4)*1*1 MACs: 32 * 2 = 64
        nn.Conv2d(8, 6, 3, stride=2, padding=1),  # 6x1x1 outputs, each 8*3*3 MACs: 6 * 72   = 432
        nn.Flatten(), nn.Linear(6, 10),         # 6 * 10                                    = 60
    )
    net.train()
    assert count_macs(net, (1, 8, 8)) == 2304 + 1152 + 64 + 432 + 60
    assert net.training                           # the caller's mode is restored
    assert all(not m._forward_hooks for m in net.modules())  # and no hook is left behind


def test_count_macs_of_course_models():
    assert count_macs(MLPStudent((30, 20)), MNIST_LIKE) == 784 * 30 + 30 * 20 + 20 * 10
    # CNNStudent(width=2): conv 1->2 at 28x28, conv 2->4 at 14x14, conv 4->8 at 7x7, head 8->10
    expected = 2 * 28 * 28 * 1 * 9 + 4 * 14 * 14 * 2 * 9 + 8 * 7 * 7 * 4 * 9 + 8 * 10
    assert count_macs(CNNStudent(width=2), MNIST_LIKE) == expected
    assert count_macs(make_teacher("mnist", "cnn"), MNIST_LIKE) > count_macs(CNNStudent(width=8), MNIST_LIKE)
    assert count_macs(MLPTeacher(), MNIST_LIKE) == 784 * 1200 + 1200 * 1200 + 1200 * 10
