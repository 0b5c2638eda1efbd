"""kd_lessons.runs.trace_students: the cached reasoning teacher, the students' data, one budget for every method."""
import warnings

import pandas as pd
import pytest
import torch

from kd_lessons import cache
from kd_lessons.generative import scratchpad as task
from kd_lessons.generative.divergences import forward_kl
from kd_lessons.models import count_params
from kd_lessons.runs import trace_students as rr

TINY = {"digits": 2, "longer": 3, "teacher_problems": 200, "teacher_arch": (16, 1, 2), "teacher_steps": 3,
        "student_arch": (8, 1, 2), "student_steps": 2, "n_traces": 40, "n_eval": 10, "batch_size": 8}


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KD_QUICK", "1")
    return tmp_path / "cache"


@pytest.mark.parametrize("quick", ["0", "1"])
def test_recipe_student_is_smaller_and_context_fits_the_longest_text(monkeypatch, quick):
    monkeypatch.setenv("KD_QUICK", quick)
    rec = rr.recipe()
    teacher, student = rr._model(rec.teacher_arch, rec.context), rr.make_student(rec, 0)
    assert count_params(student) * 3 < count_params(teacher)
    big = 10 ** rec.longer - 1
    longest = len(task.prompt(big, big)) + task.completion_length(rec.longer)
    assert longest <= rec.context


def test_problem_sets_are_disjoint_and_have_the_right_lengths(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    rec = rr.recipe(**TINY)
    sets = rr.problem_sets(rec)
    assert not set(sets["held_out"]) & (set(sets["teacher_train"]) | set(sets["student"]))
    assert not set(sets["student"]) & set(sets["teacher_train"])
    assert {len(str(a)) for a, _ in sets["held_out"]} == {2} and {len(str(a)) for a, _ in sets["longer"]} == {3}
    assert sets == rr.problem_sets(rec)  # seeded


def test_teacher_is_trained_once_then_loaded(tmp_cache, monkeypatch):
    teacher, info = rr.get_reasoning_teacher(recipe_override=TINY, progress=False)
    assert not teacher.training and info["params"] == count_params(teacher) and 0 <= info["held_out"] <= 1
    path = rr.checkpoint_path(rr.recipe(**TINY))
    assert path.exists() and cache.sidecar(path).exists()
    monkeypatch.setattr(rr, "_train_teacher", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    again, _ = rr.get_reasoning_teacher(recipe_override=TINY, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), again.parameters()))


def test_a_corrupt_teacher_is_reported_and_retrained(tmp_cache):
    rr.get_reasoning_teacher(recipe_override=TINY, progress=False)
    path = rr.checkpoint_path(rr.recipe(**TINY))
    path.write_bytes(b"not a checkpoint")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        teacher, _ = rr.get_reasoning_teacher(recipe_override=TINY, progress=False)
    assert any(issubclass(w.category, cache.CacheWarning) for w in caught)
    assert cache.load_verified(path, rr._meta(rr.recipe(**TINY)))["state_dict"].keys()


@pytest.fixture
def setting(tmp_cache):
    rec = rr.recipe(**TINY)
    teacher, _ = rr.get_reasoning_teacher(recipe_override=TINY, progress=False)
    sets = rr.problem_sets(rec)
    return rec, teacher, sets, rr.teacher_data(teacher, sets["student"], rec)


def test_teacher_data_lines_up_texts_logits_and_answers(setting):
    rec, teacher, sets, data = setting
    assert len(data["texts"]) == len(data["right"]) == len(sets["student"])
    x, _, _ = task.encode_batch(data["texts"])
    assert data["logits"].shape == (*x.shape, len(task.VOCAB))
    torch.testing.assert_close(data["logits"][:3], teacher(x[:3]).detach())
    assert all(t.startswith(task.prompt(*p)) for t, p in zip(data["texts"], sets["student"]))
    assert data["right"] == [task.is_correct(t, *p) for t, p in zip(data["texts"], sets["student"])]
    assert all(">" in a and "|" not in a for a in data["answers"])


def test_soft_kd_loss_is_t_squared_forward_kl_on_the_batch(setting):
    rec, teacher, sets, data = setting
    batches = rr.TextBatches(data["texts"], 4, data["logits"])
    x, y = batches(torch.Generator().manual_seed(0))
    student = rr.make_student(rec, 0)
    expected = 4.0 * forward_kl(student(x), data["logits"][batches.idx, :batches.length], T=2.0, mask=y != task.IGNORE)
    torch.testing.assert_close(batches.soft_kd_loss(2.0)(student, x, y), expected)
    assert (y[:, -1] != task.IGNORE).any()  # cut at the longest taught position of the batch, not beyond


def test_every_method_runs_with_the_same_budget(setting):
    rec, teacher, sets, data = setting
    half = [task.example(*p) if i % 2 else t for i, (t, p) in enumerate(zip(data["texts"], sets["student"]))]
    data = rr.teacher_data(teacher, sets["student"], rec, texts=half)  # a tiny teacher is never right: add true ones
    table = rr.compare(data, sets, rec, [0])
    assert list(table["method"]) == list(rr.METHODS)
    assert table["held_out"].between(0, 1).all() and table["longer"].between(0, 1).all()
    filtered = table.set_index("method").loc["filtered traces", "examples"]
    assert filtered == sum(data["right"])
    curve = rr.traces_curve(data, sets, rec, [0], [5, 20])
    assert list(curve["traces"]) == [5, 20] and list(curve["examples"]) == [5, 20]
    assert set(rr.summarize(table).columns) == {"seeds", "held_out_mean", "held_out_std", "longer_mean", "longer_std"}


def test_each_seed_draws_its_own_traces_and_the_table_reports_supervision(setting):
    rec, teacher, sets, _ = setting
    per_seed = rr.teacher_traces(teacher, sets["student"], rec, [0, 1])
    assert per_seed[0]["texts"] == rr.teacher_data(teacher, sets["student"], rec)["texts"]  # seed 0: rec.seed's draw
    assert per_seed[0]["texts"] != per_seed[1]["texts"] and per_seed[0]["problems"] == per_seed[1]["problems"]
    true = [task.example(*p) for p in sets["student"]]  # a tiny teacher is never right: train on true traces
    data = {s: rr.teacher_data(teacher, sets["student"], rec, texts=true) for s in (0, 1)}
    table = rr.compare(data, sets, rec, [0, 1], methods=["answers", "reversed answers", "teacher traces"])
    rows = table.set_index(["method", "seed"])
    assert (rows.loc["teacher traces", "target_tokens"] > 3 * rows.loc["answers", "target_tokens"]).all()
    assert rows.loc["answers", "copy_slips"].isna().all()  # no trace, no copy slip to count
    assert rows.loc["teacher traces", "copy_slips"].between(0, 1).all()
    curve = rr.traces_curve(data, sets, rec, [0, 1], [5, len(true)], table=table)
    reused = curve[curve["traces"] == len(true)].set_index("seed")["held_out"]
    assert reused.to_dict() == rows.loc["teacher traces", "held_out"].to_dict()  # taken from the table, not retrained
    with pytest.raises(ValueError, match="no teacher traces for seed 7"):
        rr.train_student("answers", data, rec, 7)


def test_bad_input_is_explained(setting):
    rec, teacher, sets, data = setting
    with pytest.raises(ValueError, match="method='magic': use one of"):
        rr.train_student("magic", data, rec, 0)
    with pytest.raises(ValueError, match=r"sizes=\[0\]: use counts in 1..40"):
        rr.traces_curve(data, sets, rec, [0], [0])
    wrong_texts = [task.example(a, b, answer=a + b + 1) for a, b in sets["student"]]
    wrong = rr.teacher_data(teacher, sets["student"], rec, wrong_texts)
    with pytest.raises(ValueError, match="none of the teacher's texts has a right answer"):
        rr.train_student("filtered traces", wrong, rec, 0)
    with pytest.raises(ValueError, match="got 3 texts for 40 problems"):
        rr.teacher_data(teacher, sets["student"], rec, texts=data["texts"][:3])
    with pytest.raises(ValueError, match="pass compare"):
        rr.summarize(pd.DataFrame({"method": ["answers"], "seed": [0], "accuracy": [0.5]}))
