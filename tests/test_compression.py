"""kd_lessons.runs.compression: int8 quantization and magnitude pruning of a student, measured honestly."""
import pytest
import torch
from torch import nn

from kd_lessons.models import CNNStudent, MLPStudent, count_params, size_on_disk
from kd_lessons.runs import compression
from kd_lessons.runs.compression import (
    compare,
    make_permanent,
    prune_magnitude,
    quantize_int8,
    sparse_size_on_disk,
    zero_fraction,
)

SHAPE = (1, 28, 28)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def student():
    torch.manual_seed(0)
    return MLPStudent(hidden=(64, 64)).eval()


def test_int8_copy_is_close_smaller_and_leaves_the_original(student):
    before = {k: v.clone() for k, v in student.state_dict().items()}
    quantized, messages = quantize_int8(student)
    x = torch.randn(16, *SHAPE)
    with torch.no_grad():
        ref, out = student(x), quantized(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()  # 8-bit weights: close, not equal
    assert not torch.equal(out, ref)
    assert size_on_disk(quantized) < 0.4 * size_on_disk(student)  # ~4x fewer bytes per weight
    assert not any(isinstance(m, nn.Linear) and type(m) is nn.Linear for m in quantized.modules())
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert all(isinstance(m, str) for m in messages)


def test_int8_needs_linear_layers():
    with pytest.raises(ValueError, match="no nn.Linear layer"):
        quantize_int8(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_pruning_zeroes_the_smallest_weights_per_layer(student):
    pruned = prune_magnitude(student, 0.75)
    assert zero_fraction(student) == 0.0
    assert zero_fraction(pruned) == pytest.approx(0.75, abs=0.01)
    layer, original = pruned.layers[0], student.layers[0]
    kept = layer.weight != 0
    assert original.weight.abs()[kept].min() >= original.weight.abs()[~kept].max()  # magnitude decides
    make_permanent(pruned)
    assert not hasattr(pruned.layers[0], "weight_orig") and zero_fraction(pruned) == pytest.approx(0.75, abs=0.01)


def test_dense_file_does_not_shrink_but_sparse_storage_does(student):
    dense = size_on_disk(student)
    pruned = make_permanent(prune_magnitude(student, 0.9))
    assert abs(size_on_disk(pruned) - dense) < 0.01 * dense  # zeros cost as much as any float
    assert sparse_size_on_disk(pruned) < 0.4 * dense
    assert sparse_size_on_disk(student) > dense  # no zeros: values + int64 indices cost more than dense


@pytest.mark.parametrize("amount", [0, 1.0, -0.1, True, "half"])
def test_pruning_rejects_bad_amounts(student, amount):
    with pytest.raises(ValueError, match="fraction of weights to zero"):
        prune_magnitude(student, amount)


def test_pruned_copy_keeps_its_mask_while_training(student):
    pruned = prune_magnitude(student, 0.5)
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    loss = pruned(torch.randn(8, *SHAPE)).pow(2).mean()
    loss.backward()
    opt.step()
    assert zero_fraction(pruned) == pytest.approx(0.5, abs=0.01)


def test_compare_reports_sizes_zeros_and_source_params(student, mnist_subset):
    _, _, x_test, y_test = mnist_subset(10, 40)
    quantized, _ = quantize_int8(student)
    pruned = make_permanent(prune_magnitude(student, 0.8))
    teacher = CNNStudent(width=4).eval()
    table = compare({"teacher": teacher, "student": student, "student int8": quantized, "student pruned": pruned},
                    {"x_test": x_test, "y_test": y_test}, repeats=1, rounds=1, batch_sizes=(1, 4))
    assert table.loc["student int8", "params"] == count_params(student)
    assert table.loc["student int8", "size_MB"] < table.loc["student", "size_MB"]
    assert table.loc["student pruned", "zero_weights"] == pytest.approx(0.8, abs=0.01)
    assert table.loc["student pruned", "sparse_MB"] < table.loc["student pruned", "size_MB"]
    assert (table["latency_ms_b4"] > 0).all() and table["errors"].between(0, 40).all()


def test_recipe_has_the_lessons_knobs():
    rec = compression.recipe()
    assert 0 < rec.prune_amount < 1 and len(rec.hidden) == 2


def test_plot_table_draws_one_bar_per_model_and_explains_a_wrong_table():
    import pandas as pd

    table = pd.DataFrame({"size_MB": [9.9, 1.9, 0.5], "sparse_MB": [float("nan"), 1.0, float("nan")],
                          "errors": [48, 131, 133], "latency_ms_b1": [1.0, 0.1, 0.2],
                          "latency_ms_b256": [20.0, 3.0, 0.6]}, index=["teacher", "student", "student int8"])
    fig = compression.plot_table(table)
    size_ax, latency_ax, errors_ax = fig.axes[:3]
    assert [p.get_width() for p in errors_ax.patches] == [48, 131, 133]
    assert len(latency_ax.patches) == 6 and latency_ax.get_xscale() == "log"
    assert [t.get_text() for t in size_ax.get_yticklabels()] == ["teacher", "student", "student int8"]
    with pytest.raises(ValueError, match="lacks columns"):
        compression.plot_table(table.drop(columns="errors"))


def test_seed_study_pairs_scratch_distilled_and_both_fine_tunes_per_seed(monkeypatch, mnist_subset):
    x, y, x_test, y_test = mnist_subset(96, 40)
    drawn = []

    def split(dataset, n_train=None, seed=0):
        drawn.append(seed)
        return {"dataset": dataset, "x": x, "y": y, "x_test": x_test, "y_test": y_test}
    monkeypatch.setattr(compression, "load_split", split)
    torch.manual_seed(0)
    teacher = CNNStudent(width=4).eval()
    rec = compression.recipe(hidden=(16, 16), num_epochs=1, n_train=96, batch_size=32)
    study, models = compression.seed_study(teacher, rec, seeds=[3, 4])
    assert drawn == [3, 4]  # each seed draws its own training subset
    assert list(study.columns) == ["arm", "seed", "errors"]
    assert sorted(zip(study["seed"], study["arm"])) == sorted((s, a) for s in (3, 4) for a in compression.ARMS)
    assert set(models) == {"student", "student from scratch", "student pruned", "student pruned, CE fine-tune"}
    kd, ce = models["student pruned"], models["student pruned, CE fine-tune"]
    assert zero_fraction(kd) == pytest.approx(rec.prune_amount, abs=0.01)
    assert torch.equal(kd.layers[0].weight == 0, ce.layers[0].weight == 0)  # the same mask, two fine-tunes
    assert not torch.equal(kd.layers[0].weight, ce.layers[0].weight)       # ... with different targets


def test_trained_student_without_a_teacher_learns_the_labels(mnist_subset):
    x, y, x_test, y_test = mnist_subset(64, 10)
    rec = compression.recipe(hidden=(8,), num_epochs=1, batch_size=32)
    torch.manual_seed(0)
    fresh = compression.make_student(rec)
    trained = compression.trained_student(None, {"x": x, "y": y}, rec, seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))
