"""fit, distill, evaluate and predict_logits on a small real MNIST subset (and tiny random checks)."""
import copy
import json
from dataclasses import replace

import pytest
import torch

from kd_lessons import losses, objectives
from kd_lessons.config import seed_everything
from kd_lessons.data import iterate_batches, random_shift
from kd_lessons.losses import distillation_loss
from kd_lessons.methods.feature_kd import FeatureKD, feature_shapes
from kd_lessons.models import CNNStudent, MLPStudent, TeacherCNN
from kd_lessons.objectives import CrossEntropy, HintonKD
from kd_lessons.teachers import cached_logits
from kd_lessons.train import TrainOptions, _optimizer, distill, evaluate, fit, predict_logits

QUIET = TrainOptions(progress=False)
MNIST_LIKE = (1, 28, 28)
# Where library calls run a caller's model; the model itself stays on the CPU, where the caller put it.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def mnist_small(mnist_subset):
    return mnist_subset(2000, 500)


def _without_timing(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "seconds"}


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def _where_and_how(model: torch.nn.Module):
    return {p.device for p in model.parameters()}, [m.training for m in model.modules()]


def test_fit_decreases_the_loss_and_history_is_plain_data(mnist_small):
    x, y, x_test, y_test = mnist_small
    torch.manual_seed(0)
    model = MLPStudent((64,))
    before = evaluate(model, x_test, y_test, device="cpu")["accuracy"]
    history = fit(model, x, y, num_epochs=3, lr=3e-3,
                  options=replace(QUIET, batch_size=128, val=(x_test, y_test), device="cpu"))
    assert history["epoch"] == [1, 2, 3]
    assert history["train_loss"][-1] < 0.6 * history["train_loss"][0]
    assert history["val_accuracy"][-1] > max(before, 0.8)
    assert len(history["val_errors"]) == 3 and history["val_errors"][-1] < 0.2 * len(y_test)
    assert len(history["step_loss"]) == 3 * 16
    json.dumps(history)  # plain data: no tensors inside
    assert not model.training


def test_fit_with_augment_and_callback_stop(mnist_small):
    x, y, _, _ = mnist_small
    seen = []
    options = TrainOptions(progress=False, callback=lambda epoch, h: seen.append(epoch) or epoch == 2)
    history = fit(CNNStudent(width=4), x[:512], y[:512], num_epochs=5, lr=3e-3,
                  options=replace(options, augment=random_shift, device="cpu"))
    assert seen == [1, 2] and history["epoch"] == [1, 2]


def test_distill_with_a_teacher_model_or_its_cached_logits_gives_identical_histories(mnist_small, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))  # cached_logits writes a test-only cache entry
    monkeypatch.setenv("KD_DEVICE", "cpu")              # ... computed on the CPU like the runs below
    x, y, _, _ = mnist_small
    torch.manual_seed(0)
    teacher = TeacherCNN(width=4).eval()
    student = MLPStudent((32,))
    kwargs = dict(objective=HintonKD(T=4.0, alpha=0.7), num_epochs=1, lr=1e-3,
                  options=TrainOptions(batch_size=64, device="cpu", seed=3, precision="fp32", progress=False))  # exact
    h_model = distill(copy.deepcopy(student), x, y, teacher, **kwargs)
    h_logits = distill(copy.deepcopy(student), x, y, predict_logits(teacher, x, device="cpu"), **kwargs)
    h_cached = distill(copy.deepcopy(student), x, y, cached_logits(teacher, x), **kwargs)
    assert len(h_model["step_loss"]) == 32
    assert _without_timing(h_model) == _without_timing(h_logits) == _without_timing(h_cached)
    # and the first step equals the loss computed by hand on the first shuffled batch (idx lines the logits up)
    idx, xb, yb = next(iterate_batches(x, y, 64, generator=seed_everything(3)))
    with torch.no_grad():
        expected = distillation_loss(student(xb), teacher(xb), yb, T=4.0, alpha=0.7)
    assert h_model["step_loss"][0] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_distill_with_cross_entropy_and_no_teacher_equals_fit_without_weight_decay(mnist_small, smoothing):
    x, y, _, _ = mnist_small
    x, y = x[:512], y[:512]
    torch.manual_seed(0)
    student = MLPStudent((32,))
    kwargs = dict(num_epochs=2, lr=3e-3)  # 16 steps: OneCycle runs too
    quiet = replace(QUIET, batch_size=64, seed=5, device="cpu")
    by_fit, by_distill, fit_default = (copy.deepcopy(student) for _ in range(3))
    h_fit = fit(by_fit, x, y, label_smoothing=smoothing, options=replace(quiet, weight_decay=0), **kwargs)
    h_distill = distill(by_distill, x, y, None, objective=CrossEntropy(smoothing), options=quiet, **kwargs)
    assert len(h_fit["step_loss"]) == 16
    assert _without_timing(h_fit) == _without_timing(h_distill)
    assert _weights_equal(by_fit, by_distill)
    fit(fit_default, x, y, label_smoothing=smoothing, options=quiet, **kwargs)
    assert not _weights_equal(fit_default, by_distill)  # fit's default weight decay (5e-4) really differs


@pytest.mark.parametrize("augment", [None, random_shift])
def test_teacher_gets_no_gradient_and_its_weights_and_statistics_stay(mnist_small, augment):
    x, y, _, _ = mnist_small
    teacher = TeacherCNN(width=4)
    teacher.train()  # distill must run it in eval mode (BatchNorm statistics must not move) and restore the mode
    state = copy.deepcopy(teacher.state_dict())
    student = MLPStudent((16,))
    start = copy.deepcopy(student.state_dict())
    distill(student, x[:256], y[:256], teacher, num_epochs=1, lr=1e-3,
            options=replace(QUIET, batch_size=64, augment=augment, device="cpu"))
    assert teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, state[key])
    assert any(not torch.equal(v, start[k]) for k, v in student.state_dict().items())


@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_library_calls_leave_the_teacher_on_its_device_and_in_its_mode(mnist_small, training):
    x, y, x_test, y_test = mnist_small
    torch.manual_seed(0)
    teacher = TeacherCNN(width=2).train(training)
    before = _where_and_how(teacher)
    state = copy.deepcopy(teacher.state_dict())
    predict_logits(teacher, x_test[:50], device=DEVICE)
    assert _where_and_how(teacher) == before, "predict_logits"
    evaluate(teacher, x_test[:50], y_test[:50], device=DEVICE)
    assert _where_and_how(teacher) == before, "evaluate"
    for augment in (None, random_shift):  # logits computed once / teacher run on every batch
        distill(MLPStudent((8,)), x[:128], y[:128], teacher, num_epochs=1, lr=1e-3,
                options=replace(QUIET, batch_size=64, augment=augment, device=DEVICE))
        assert _where_and_how(teacher) == before, f"distill, augment={augment}"
    student = CNNStudent(width=2)
    objective = FeatureKD(feature_shapes(student, MNIST_LIKE), feature_shapes(teacher, MNIST_LIKE), at_weight=1.0)
    assert _where_and_how(teacher) == before, "feature_shapes"
    distill(student, x[:128], y[:128], teacher, objective=objective, num_epochs=1, lr=1e-3,
            options=replace(QUIET, batch_size=64, device=DEVICE))
    assert _where_and_how(teacher) == before, "distill with a feature objective"
    for key, value in teacher.state_dict().items():  # run in eval mode throughout: BatchNorm statistics stay
        torch.testing.assert_close(value, state[key])


def test_feature_kd_with_attention_transfer_trains_its_hint_regressor(mnist_small):
    x, y, _, _ = mnist_small
    torch.manual_seed(0)
    teacher, student = TeacherCNN(width=4).eval(), CNNStudent(width=4)
    objective = FeatureKD(feature_shapes(student, MNIST_LIKE), feature_shapes(teacher, MNIST_LIKE), T=4.0, alpha=0.9,
                          hint_weight=1.0, at_weight=100.0)
    regressor = copy.deepcopy(objective.regressor.state_dict())
    start = copy.deepcopy(student.state_dict())
    history = distill(student, x[:256], y[:256], teacher, objective=objective, num_epochs=1, lr=1e-3,
                      options=replace(QUIET, batch_size=64, device="cpu"))
    assert len(history["step_loss"]) == 4
    changed = {k for k, v in objective.regressor.state_dict().items() if not torch.equal(v, regressor[k])}
    assert changed == {"proj.weight", "proj.bias"}  # the regressor's parameters were optimised with the student
    assert any(not torch.equal(v, start[k]) for k, v in student.state_dict().items())
    assert set(objective.last) == {"hint", "attention"} and all(v > 0 for v in objective.last.values())


def test_bad_teacher_arguments_raise(mnist_small):
    x, y, _, _ = mnist_small
    logits = torch.zeros(len(x), 10)
    with pytest.raises(ValueError, match="with augment they would not match.*pass the teacher model instead"):
        distill(MLPStudent((8,)), x, y, logits, num_epochs=1, lr=1e-3,
                options=TrainOptions(augment=random_shift, device="cpu"))
    with pytest.raises(ValueError, match="HintonKD learns from a teacher: pass teacher=<model> or teacher=<its logits"):
        distill(MLPStudent((8,)), x, y, None, num_epochs=1, lr=1e-3, options=TrainOptions(device="cpu"))
    with pytest.raises(ValueError, match=r"teacher logits have shape \[10, 10\] but x has 2000 rows.*predict_logits"):
        distill(MLPStudent((8,)), x, y, logits[:10], num_epochs=1, lr=1e-3, options=TrainOptions(device="cpu"))
    with pytest.raises(ValueError, match="teacher must be an nn.Module or a tensor of its logits, got str"):
        distill(MLPStudent((8,)), x, y, "teacher.pt", num_epochs=1, lr=1e-3, options=TrainOptions(device="cpu"))
    student, teacher = CNNStudent(width=2), TeacherCNN(width=2)
    feature_kd = FeatureKD(feature_shapes(student, MNIST_LIKE), feature_shapes(teacher, MNIST_LIKE), at_weight=1.0)
    with pytest.raises(ValueError, match="FeatureKD needs the teacher's feature maps: pass teacher=<model>"):
        distill(student, x, y, logits, objective=feature_kd, num_epochs=1, lr=1e-3, options=TrainOptions(device="cpu"))
    with pytest.raises(ValueError, match=r"pass an Objective such as HintonKD\(T=4.0, alpha=0.9\)"):
        distill(MLPStudent((8,)), x, y, logits, objective=torch.nn.MSELoss(), num_epochs=1, lr=1e-3,
                options=TrainOptions(device="cpu"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_epochs=0, lr=1e-3), "num_epochs=0: pass a positive integer such as num_epochs=5"),
    (dict(num_epochs=1, lr=-1.0), "lr=-1.0: pass a positive learning rate such as lr=1e-3"),
    (dict(num_epochs=1, lr=1e-3, options=TrainOptions(batch_size=0, progress=False)),
     "batch_size=0: pass a positive integer such as batch_size=128"),
    (dict(num_epochs=1, lr=1e-3, options=TrainOptions(optimizer="adagrad", progress=False)),
     "optimizer='adagrad': use 'adamw' or 'sgd'"),
    (dict(num_epochs=1, lr=1e-3, label_smoothing=1.0), r"label_smoothing=1.0: pass a number in \[0, 1\)"),
])
def test_fit_rejects_bad_hyper_parameters(kwargs, message):
    x, y = torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        fit(MLPStudent((4,)), x, y, **{"options": replace(QUIET, device="cpu"), **kwargs})


def test_fit_rejects_mismatched_inputs():
    x = torch.randn(8, 784)
    with pytest.raises(ValueError, match="equal length.*length 8.*length 7.*load_tensors"):
        fit(MLPStudent((4,)), x, torch.zeros(7, dtype=torch.long), 1, 1e-3, options=replace(QUIET, device="cpu"))
    with pytest.raises(ValueError, match=r"labels have dtype torch.float32; pass class indices as int64 \(y.long"):
        fit(MLPStudent((4,)), x, torch.zeros(8), 1, 1e-3, options=replace(QUIET, device="cpu"))
    with pytest.raises(ValueError, match=r"val must be a pair \(x_val, y_val\)"):
        fit(MLPStudent((4,)), x, torch.zeros(8, dtype=torch.long), 1, 1e-3,
            options=replace(QUIET, val=(x,), device="cpu"))


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
    assert model.training and logits.device.type == "cpu"
    with torch.no_grad():
        torch.testing.assert_close(logits, model.eval()(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the per-batch path: objectives, checks, hooks

def _tiny(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g), torch.randn(n, 10, generator=g)


@pytest.mark.parametrize("source", ["logits", "model", "model + augment"])
def test_per_batch_path_uses_the_objective_and_checks_only_the_first_batch(monkeypatch, source):
    def boom(*args, **kwargs):
        raise AssertionError("the training loop must not call the checked losses on every batch")

    monkeypatch.setattr(losses, "distillation_loss", boom)
    monkeypatch.setattr(losses, "kd_loss", boom)
    calls = {"logits": 0, "labels": 0}
    real_logits, real_labels = objectives.check_logits, objectives.check_labels
    monkeypatch.setattr(objectives, "check_logits", lambda *a: calls.__setitem__("logits", calls["logits"] + 1)
                        or real_logits(*a))
    monkeypatch.setattr(objectives, "check_labels", lambda *a: calls.__setitem__("labels", calls["labels"] + 1)
                        or real_labels(*a))
    torch.manual_seed(0)
    x, y, logits = _tiny()
    x = x.view(-1, 1, 28, 28)
    teacher = logits if source == "logits" else TeacherCNN(width=2)
    history = distill(MLPStudent((8,)), x, y, teacher, objective=HintonKD(2.0, 0.5), num_epochs=2, lr=1e-3,
                      options=replace(QUIET, batch_size=32, device="cpu",
                                      augment=random_shift if source == "model + augment" else None))
    assert len(history["step_loss"]) == 8
    assert calls == {"logits": 1, "labels": 1}


@pytest.mark.parametrize("case, message", [
    ("nan teacher logits", "teacher_logits contains NaN or inf"),
    ("nan inputs", "student_logits contains NaN or inf; check the learning rate"),
    ("labels out of range", r"y must lie in \[0, 10\), got values from 12 to 12; check that labels and logits"),
    ("fit labels out of range", r"y must lie in \[0, 10\)"),
])
def test_a_bad_first_batch_fails_before_any_step(case, message):
    x, y, logits = _tiny()
    if case == "nan teacher logits":
        logits[:] = float("nan")
    elif case == "nan inputs":
        x[:] = float("nan")
    else:
        y[:] = 12
    torch.manual_seed(0)
    student = MLPStudent((8,))
    start = copy.deepcopy(student.state_dict())
    steps = []
    options = TrainOptions(progress=False, on_step=lambda done, total: steps.append(done))
    with pytest.raises(ValueError, match=message):
        if case.startswith("fit"):
            fit(student, x, y, num_epochs=1, lr=1e-3, options=replace(options, batch_size=32, device="cpu"))
        else:
            distill(student, x, y, logits, num_epochs=1, lr=1e-3,
                    options=replace(options, batch_size=32, device="cpu"))
    assert steps == []
    assert all(torch.equal(v, start[k]) for k, v in student.state_dict().items())


def test_on_step_is_called_once_per_step_with_done_and_total():
    x, y, logits = _tiny(200)
    calls = []
    options = TrainOptions(progress=False, on_step=lambda done, total: calls.append((done, total)))
    history = fit(MLPStudent((8,)), x, y, num_epochs=2, lr=1e-3, options=replace(options, batch_size=64, device="cpu"))
    assert calls == [(i, 8) for i in range(1, 9)]  # 200 rows / 64 = 4 steps per epoch, 2 epochs
    assert len(history["step_loss"]) == 8
    calls.clear()
    capped = TrainOptions(progress=False, max_steps=5, on_step=options.on_step)
    history = distill(MLPStudent((8,)), x, y, logits, num_epochs=3, lr=1e-3,
                      options=replace(capped, batch_size=64, device="cpu"))
    assert calls == [(i, 5) for i in range(1, 6)]  # max_steps caps the total the hook is told
    assert history["epoch"] == [1, 2] and len(history["step_loss"]) == 5


def test_precision_option_beats_the_environment_and_rejects_bad_values(monkeypatch):
    x, y, logits = _tiny()
    torch.manual_seed(0)
    student = MLPStudent((16,))
    kwargs = dict(num_epochs=1, lr=1e-3)
    quiet = replace(QUIET, batch_size=32, device="cpu")
    monkeypatch.setenv("KD_PRECISION", "fp32")
    h_env = fit(copy.deepcopy(student), x, y, options=quiet, **kwargs)
    monkeypatch.setenv("KD_PRECISION", "bf16")
    h_option = fit(copy.deepcopy(student), x, y, options=replace(quiet, precision="fp32"), **kwargs)
    h_bf16 = fit(copy.deepcopy(student), x, y, options=quiet, **kwargs)
    assert _without_timing(h_option) == _without_timing(h_env)
    assert h_bf16["step_loss"] != h_env["step_loss"]  # the environment's bf16 really applied when not overridden
    for train in (fit, distill):
        model = copy.deepcopy(student)
        extra = {} if train is fit else {"teacher": logits}
        with pytest.raises(ValueError, match="precision='half': use 'auto', 'fp32' or 'bf16'"):
            train(model, x, y, options=replace(quiet, precision="half"), **extra, **kwargs)
        assert _weights_equal(model, student)


def test_bf16_autocast_learns_as_well_as_fp32(mnist_small):
    x, y, x_test, y_test = mnist_small
    accuracy, first_loss = {}, {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = MLPStudent((128,))
        h = fit(model, x, y, num_epochs=3, lr=3e-3,
                options=TrainOptions(precision=precision, progress=False, device="cpu"))
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
    with pytest.raises(ValueError, match="optimizer='lbfgs': use 'adamw' or 'sgd'"):
        _optimizer("lbfgs", params, 1e-3, 0.0)


def test_history_records_the_step_count_at_each_epoch_and_at_each_evaluation():
    x, y, _ = _tiny(200)
    val = (x[:50], y[:50])
    history = fit(MLPStudent((8,)), x, y, num_epochs=3, lr=1e-3,
                  options=replace(QUIET, batch_size=64, val=val, device="cpu"))
    assert history["step"] == [4, 8, 12]          # 200 rows / 64 = 4 steps per epoch
    assert history["val_step"] == [4, 8, 12]      # <= 20 epochs: the test set every epoch
    assert len(history["val_accuracy"]) == len(history["val_errors"]) == 3
    capped = distill(MLPStudent((8,)), x, y, torch.randn(200, 10), num_epochs=3, lr=1e-3,
                     options=TrainOptions(progress=False, max_steps=5, batch_size=64, val=val, device="cpu"))
    assert capped["step"] == [4, 5] and capped["val_step"] == [4, 5]  # stopped mid-epoch: still evaluated
    assert fit(MLPStudent((8,)), x, y, num_epochs=2, lr=1e-3,
               options=replace(QUIET, batch_size=64, device="cpu"))["val_step"] == []


@pytest.mark.parametrize("num_epochs, max_steps, expected", [
    (40, None, list(range(2, 41, 2))),               # ceil(40 / 20) = 2: every 2nd epoch
    (45, None, list(range(3, 46, 3))),               # every 3rd, 45 is one of them
    (41, None, list(range(3, 40, 3)) + [41]),        # every 3rd, plus the last
    (60, 31, list(range(2, 31, 2)) + [31]),          # max_steps ends the run at epoch 31: plus that one
])
def test_long_runs_evaluate_about_20_times_and_always_at_the_end(one_thread, num_epochs, max_steps, expected):
    x, y, _ = _tiny(16)
    history = fit(MLPStudent((4,)), x, y, num_epochs=num_epochs, lr=1e-3,
                  options=TrainOptions(progress=False, max_steps=max_steps, batch_size=16, val=(x, y),
                                       device="cpu"))  # one step per epoch
    assert history["val_step"] == expected
    assert len(history["val_accuracy"]) == len(expected) <= 20 + 1
    assert history["step"] == list(range(1, len(history["epoch"]) + 1))


class _Fixed(torch.nn.Module):
    """Predicts class (row number % 10), the row number being stored in x[:, 0]; one parameter gets no gradient."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return 10.0 * torch.nn.functional.one_hot(x[:, 0].long() % 10, 10).float() + 0.0 * self.unused


def test_train_accuracy_counts_labelled_rows_only():
    x = torch.zeros(20, 3)
    x[:, 0] = torch.arange(20).float()
    y = torch.full((20,), objectives.UNLABELED)
    y[:5] = torch.arange(5)               # labelled and predicted right
    y[5:10] = (torch.arange(5, 10) + 1) % 10  # labelled and predicted wrong; rows 10-19 have no label
    history = distill(_Fixed(), x, y, torch.randn(20, 10), HintonKD(T=2.0, alpha=0.5), num_epochs=2, lr=1e-3,
                      options=replace(QUIET, batch_size=8, device="cpu"))
    assert history["train_accuracy"] == [0.5, 0.5]  # 5 of the 10 labelled rows, not 5 of 20
