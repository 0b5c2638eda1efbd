"""kd_lessons.generative.zoo: the cached text teacher, student sizes and the side-by-side table."""

import pytest
import torch

from kd_lessons import cache
from kd_lessons.generative import zoo
from kd_lessons.generative.text import DataUnavailableError, load_corpus
from kd_lessons.models import count_params

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "context": 16, "steps": 4, "batch_size": 8, "eval_chars": 2000}


@pytest.fixture(scope="module")
def corpus():
    try:
        return load_corpus("shakespeare")
    except DataUnavailableError as exc:
        pytest.skip(f"the Shakespeare corpus is not available: {exc}")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("quick", ["0", "1"])
def test_every_student_is_at_least_8x_smaller_than_the_teacher(monkeypatch, quick):
    monkeypatch.setenv("KD_QUICK", quick)
    teacher = zoo.build_text_model(zoo.text_recipe(), 80)
    for size in zoo.student_sizes():
        student = zoo.make_text_student(80, size)
        assert count_params(teacher) >= 8 * count_params(student), size
        assert student.context == teacher.context


def test_make_text_student_is_seeded_and_checks_its_size():
    a, b = zoo.make_text_student(80, "tiny", seed=3), zoo.make_text_student(80, "tiny", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="size='huge': use one of"):
        zoo.make_text_student(80, "huge")


def test_recipe_rejects_an_unknown_corpus():
    with pytest.raises(ValueError, match="corpus='tolstoy' is not a text corpus"):
        zoo.text_recipe("tolstoy")


def test_teacher_is_trained_once_then_loaded_from_the_cache(corpus, tmp_cache, monkeypatch):
    teacher, info = zoo.get_text_teacher(recipe_override=TINY, progress=False)
    assert not teacher.training and info["params"] == count_params(teacher) and info["steps"] == 4
    assert info["vocab"] == corpus.vocab.chars and info["sample"].startswith(zoo.SAMPLE_PROMPT)
    assert 0 < info["val_bpc"] and info["tokens_per_second"] > 0 and info["val_chars"] == 2000
    path = zoo.text_checkpoint_path("shakespeare", zoo.text_recipe(**TINY))
    assert path.exists() and cache.sidecar(path).exists()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached teacher must be loaded, not retrained")
    monkeypatch.setattr(zoo, "_train", no_training)
    again, info2 = zoo.get_text_teacher(recipe_override=TINY, progress=False)
    assert info2 == info
    assert all(torch.equal(p, q) for p, q in zip(teacher.state_dict().values(), again.state_dict().values()))


def test_corrupt_checkpoint_is_reported_and_retrained(corpus, tmp_cache):
    _, info = zoo.get_text_teacher(recipe_override=TINY, progress=False)
    path = zoo.text_checkpoint_path("shakespeare", zoo.text_recipe(**TINY))
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(cache.CacheWarning,
                      match="shakespeare text teacher .* was unusable .*deleted and will be rebuilt"):
        teacher, info2 = zoo.get_text_teacher(recipe_override=TINY, progress=False)
    assert info2["val_bpc"] == pytest.approx(info["val_bpc"])  # same recipe and seed: the same teacher again


def test_table_puts_teacher_and_students_side_by_side(corpus, one_thread):
    teacher = zoo.build_text_model(zoo.text_recipe(), corpus.vocab_size)
    student = zoo.make_text_student(corpus.vocab_size, "small")
    table = zoo.text_model_table({"teacher": teacher, "student": student}, corpus.val, max_chars=2000,
                                 num_tokens=3)
    assert list(table["model"]) == ["teacher", "student"]
    assert table["x fewer params"].iloc[1] >= 8 and table["params"].iloc[0] == count_params(teacher)
    assert ((table["val_bpc"] - 6.32).abs() < 0.2).all()  # untrained: about log2(80) = 6.32 bits
    with pytest.raises(ValueError, match="models is empty"):
        zoo.text_model_table({}, corpus.val)
