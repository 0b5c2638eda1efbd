"""fit, distill, evaluate and predict_logits on a small real MNIST subset (and tiny random checks)."""
import copy
import json

import pytest
import torch

from kd_lessons.config import seed_everything
from conftest import mnist_subset
from kd_lessons.data import iterate_batches, random_shift
from kd_lessons.losses import distillation_loss
from kd_lessons.models import CNNStudent, MLPStudent, TeacherCNN
from kd_lessons.train import _optimizer, distill, evaluate, fit, predict_logits


@pytest.fixture(scope="module")
def mnist_small():
    return mnist_subset(2000, 500)


def test_fit_decreases_the_loss_and_history_is_plain_data(mnist_small):
    x, y, x_test, y_test = mnist_small
    torch.manual_seed(0)
    model = MLPStudent((64,))
    before = evaluate(model, x_test, y_test, device="cpu")["accuracy"]
    history = fit(model, x, y, num_epochs=3, lr=3e-3, batch_size=128, x_val=x_test, y_val=y_test,
                  device="cpu", progress=False)
    assert history["epoch"] == [1, 2, 3]
    assert history["train_loss"][-1] < 0.6 * history["train_loss"][0]
    assert history["val_accuracy"][-1] > max(before, 0.8)
    assert len(history["step_loss"]) == 3 * 16
    json.dumps(history)  # plain data: no tensors inside
    assert not model.training


def test_fit_with_augment_and_callback_stop(mnist_small):
    x, y, _, _ = mnist_small
    seen = []
    history = fit(CNNStudent(width=4), x[:512], y[:512], num_epochs=5, lr=3e-3, augment=random_shift, device="cpu",
                  progress=False, callback=lambda epoch, h: seen.append(epoch) or epoch == 2)
    assert seen == [1, 2] and history["epoch"] == [1, 2]


def test_cached_teacher_logits_match_the_teacher_model(mnist_small, monkeypatch):
    monkeypatch.setenv("KD_PRECISION", "fp32")  # exact arithmetic; the bf16 path is checked below
    x, y, _, _ = mnist_small
    torch.manual_seed(0)
    teacher = TeacherCNN(width=4).eval()
    student = MLPStudent((32,))
    kwargs = dict(T=4.0, alpha=0.7, num_epochs=1, lr=1e-3, batch_size=64, device="cpu", progress=False,
                  seed=3, max_steps=1)
    h_model = distill(copy.deepcopy(student), x, y, teacher=teacher, **kwargs)
    h_cached = distill(copy.deepcopy(student), x, y, teacher_logits=predict_logits(teacher, x, device="cpu"),
                       **kwargs)
    assert len(h_model["step_loss"]) == len(h_cached["step_loss"]) == 1
    assert h_model["step_loss"][0] == pytest.approx(h_cached["step_loss"][0], rel=1e-6)
    # and both equal the loss computed by hand on the first shuffled batch (idx lines the logits up)
    idx, xb, yb = next(iterate_batches(x, y, 64, generator=seed_everything(3)))
    with torch.no_grad():
        expected = distillation_loss(student(xb), teacher(xb), yb, T=4.0, alpha=0.7)
    assert h_model["step_loss"][0] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("augment", [None, random_shift])
def test_teacher_gets_no_gradient_and_stays_in_eval_mode(mnist_small, augment):
    x, y, _, _ = mnist_small
    teacher = TeacherCNN(width=4)
    teacher.train()  # distill must switch it to eval (BatchNorm statistics must not move)
    state = copy.deepcopy(teacher.state_dict())
    student = MLPStudent((16,))
    start = copy.deepcopy(student.state_dict())
    distill(student, x[:256], y[:256], teacher=teacher, num_epochs=1, lr=1e-3, batch_size=64, augment=augment,
            device="cpu", progress=False)
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, state[key])
    assert any(not torch.equal(v, start[k]) for k, v in student.state_dict().items())


def test_feature_distillation_trains_the_regressor(mnist_small):
    from kd_lessons.losses import attention_transfer_loss

    x, y, _, _ = mnist_small
    teacher, student = TeacherCNN(width=4).eval(), CNNStudent(width=4)
    at = lambda s, t: sum(attention_transfer_loss(a, b) for a, b in zip(s, t))  # noqa: E731
    history = distill(student, x[:256], y[:256], teacher=teacher, num_epochs=1, lr=1e-3, batch_size=64,
                      device="cpu", progress=False, feature_loss=at, beta=100.0)
    assert len(history["step_loss"]) == 4


def test_teacher_logits_with_augment_raise(mnist_small):
    x, y, _, _ = mnist_small
    logits = torch.zeros(len(x), 10)
    with pytest.raises(ValueError, match="augment"):
        distill(MLPStudent((8,)), x, y, teacher_logits=logits, augment=random_shift, num_epochs=1, lr=1e-3)
    with pytest.raises(ValueError, match="exactly one"):
        distill(MLPStudent((8,)), x, y, teacher=TeacherCNN(width=2), teacher_logits=logits, num_epochs=1, lr=1e-3)
    with pytest.raises(ValueError, match="exactly one"):
        distill(MLPStudent((8,)), x, y, num_epochs=1, lr=1e-3)
    with pytest.raises(ValueError, match="rows"):
        distill(MLPStudent((8,)), x, y, teacher_logits=logits[:10], num_epochs=1, lr=1e-3, device="cpu")


@pytest.mark.parametrize("kwargs", [dict(num_epochs=0, lr=1e-3), dict(num_epochs=1, lr=-1.0),
                                    dict(num_epochs=1, lr=1e-3, batch_size=0),
                                    dict(num_epochs=1, lr=1e-3, optimizer="adagrad")])
def test_fit_rejects_bad_hyper_parameters(kwargs):
    x, y = torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError):
        fit(MLPStudent((4,)), x, y, device="cpu", progress=False, **kwargs)


def test_fit_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="rows"):
        fit(MLPStudent((4,)), torch.randn(8, 784), torch.zeros(7, dtype=torch.long), 1, 1e-3, device="cpu")
    with pytest.raises(ValueError, match="int64"):
        fit(MLPStudent((4,)), torch.randn(8, 784), torch.zeros(8), 1, 1e-3, device="cpu")


def test_evaluate_counts_are_consistent(mnist_small):
    _, _, x_test, y_test = mnist_small
    torch.manual_seed(1)
    model = MLPStudent((16,))
    result = evaluate(model, x_test, y_test, batch_size=100, device="cpu")
    pred = predict_logits(model, x_test, device="cpu").argmax(1)
    assert result["n"] == len(y_test)
    assert result["errors"] == int((pred != y_test).sum())
    assert result["accuracy"] == pytest.approx(1 - result["errors"] / result["n"])
    counts = torch.bincount(y_test, minlength=10).tolist()
    assert len(result["per_class_accuracy"]) == 10
    weighted = sum(a * c for a, c in zip(result["per_class_accuracy"], counts)) / sum(counts)
    assert weighted == pytest.approx(result["accuracy"])


def test_predict_logits_keeps_the_mode_and_matches_the_model():
    model = TeacherCNN(width=2).train()
    x = torch.randn(10, 1, 28, 28)
    logits = predict_logits(model, x, batch_size=3, device="cpu")
    assert model.training
    with torch.no_grad():
        torch.testing.assert_close(logits, model.eval()(x), rtol=1e-4, atol=1e-5)


def test_bf16_autocast_learns_as_well_as_fp32(mnist_small, monkeypatch):
    x, y, x_test, y_test = mnist_small
    accuracy, first_loss = {}, {}
    for precision in ("fp32", "bf16"):
        monkeypatch.setenv("KD_PRECISION", precision)
        torch.manual_seed(0)
        model = MLPStudent((128,))
        h = fit(model, x, y, num_epochs=3, lr=3e-3, device="cpu", progress=False)
        accuracy[precision], first_loss[precision] = evaluate(model, x_test, y_test, device="cpu")["accuracy"], \
            h["step_loss"][0]
        assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert first_loss["bf16"] == pytest.approx(first_loss["fp32"], rel=2e-2)  # same step, bf16 rounding
    assert first_loss["bf16"] != first_loss["fp32"]                         # ... so autocast really ran
    assert accuracy["bf16"] > accuracy["fp32"] - 0.02


def test_optimizer_is_fused_where_torch_has_it(monkeypatch):
    params = list(torch.nn.Linear(3, 2).parameters())
    for name in ("adamw", "sgd"):
        assert _optimizer(name, params, 1e-3, 0.0).defaults["fused"] is True
    real = torch.optim.AdamW

    def no_fused(*args, fused=None, **kwargs):  # an older torch: no fused kernels
        if fused:
            raise RuntimeError("fused=True is not supported")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    assert not _optimizer("adamw", params, 1e-3, 0.0).defaults.get("fused")
    with pytest.raises(ValueError, match="use 'adamw' or 'sgd'"):
        _optimizer("lbfgs", params, 1e-3, 0.0)
