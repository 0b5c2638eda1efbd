"""kd_lessons.runs.deploy.model_table measures what it says: parameters, bytes, multiply-adds, errors, latency."""
import pytest
import torch

from kd_lessons.models import MLPStudent, count_macs, count_params, size_on_disk
from kd_lessons.runs.deploy import model_table
from kd_lessons.train import evaluate

SHAPE = (1, 28, 28)


@pytest.fixture
def tiny(one_thread):
    g = torch.Generator().manual_seed(0)
    data = {"x_test": torch.randn(30, *SHAPE, generator=g), "y_test": torch.randint(0, 10, (30,), generator=g)}
    torch.manual_seed(0)
    return MLPStudent(hidden=(32,)).eval(), MLPStudent(hidden=(8,)), data


def test_model_table_counts_and_times_each_model(tiny):
    teacher, student, data = tiny
    table = model_table({"teacher": teacher, "student": student}, data, SHAPE, device="cpu", repeats=2,
                        rounds=2, batch_sizes=(1, 4))
    assert list(table.index) == ["teacher", "student"]
    assert table.loc["student", "params"] == count_params(student) == 784 * 8 + 8 + 8 * 10 + 10
    assert table.loc["teacher", "size_MB"] == size_on_disk(teacher) / 1e6
    assert table.loc["student", "macs"] == count_macs(student, SHAPE) == 784 * 8 + 8 * 10
    assert table.loc["teacher", "macs"] == 784 * 32 + 32 * 10
    result = evaluate(student, data["x_test"], data["y_test"], device="cpu")
    assert table.loc["student", "errors"] == result["errors"]
    assert table.loc["student", "accuracy"] == result["accuracy"]
    assert table.loc["teacher", "speedup_b1"] == 1.0 and (table["latency_ms_b4"] > 0).all()
    assert table.loc["student", "speedup_b4"] == pytest.approx(
        table.loc["teacher", "latency_ms_b4"] / table.loc["student", "latency_ms_b4"])
    assert not {"latency_ms_b256", "speedup_b256"} & set(table.columns)  # only the batch sizes asked for


def test_model_table_speedup_is_relative_to_the_named_reference(tiny):
    teacher, student, data = tiny
    table = model_table({"teacher": teacher, "student": student}, data, SHAPE, device="cpu", repeats=1, rounds=1,
                        batch_sizes=(2,), reference="student")
    assert table.loc["student", "speedup_b2"] == 1.0
    assert table.loc["teacher", "speedup_b2"] == pytest.approx(
        table.loc["student", "latency_ms_b2"] / table.loc["teacher", "latency_ms_b2"])


def test_model_table_rejects_bad_arguments(tiny):
    _, student, data = tiny
    with pytest.raises(ValueError, match=r"reference='b' is not one of \['a'\]"):
        model_table({"a": student}, data, SHAPE, reference="b")
    with pytest.raises(ValueError, match=r"rounds=0, repeats=20: both must be >= 1"):
        model_table({"a": student}, data, SHAPE, rounds=0)
    with pytest.raises(ValueError, match=r"models is empty; pass e.g. \{'teacher': teacher"):
        model_table({}, data, SHAPE)
