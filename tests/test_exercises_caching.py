"""kd_lessons.exercises.caching: cached teacher logits must follow shuffled batches (17)."""
import pytest
import torch

from kd_lessons.exercises import FixCachedLogits

pytestmark = pytest.mark.usefixtures("one_thread")


def _batches(shuffle=True, logits="idx", labels="idx", drop_last=False):
    """A batch generator with one chosen mistake."""
    def aligned_batches(x, y, teacher_logits, batch_size, generator):
        order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        starts = range(0, len(x) - (batch_size if drop_last else 0), batch_size)
        for k, start in enumerate(starts):
            idx = order[start:start + batch_size]
            tb = teacher_logits[idx] if logits == "idx" else teacher_logits[k * batch_size:(k + 1) * batch_size]
            yb = y[idx] if labels == "idx" else y[start:start + batch_size]
            yield (x[idx], yb, tb) if logits != "pair" else (x[idx], yb)
    return aligned_batches


def test_a_right_generator_is_correct():
    assert FixCachedLogits().check(_batches()).outcome == "correct"


# A generator for each mistake the checker names, and for the other ways to go wrong (mistake None).
WRONG = [
    ({"logits": "position"}, "misaligned", "taken by batch position"),
    ({"shuffle": False}, "not_shuffled", "the batches come in order"),
    ({"labels": "position"}, None, "yb does not line up with xb"),
    ({"logits": "pair"}, None, "yield (xb, yb, tb) triples"),
    ({"drop_last": True}, None, "every example exactly once"),
]


@pytest.mark.parametrize("kwargs,mistake,words", WRONG)
def test_wrong_generators_are_incorrect_with_a_hint(kwargs, mistake, words):
    result = FixCachedLogits().check(_batches(**kwargs))
    assert (result.outcome, result.mistake) == ("incorrect", mistake) and words in result.message


def test_every_named_mistake_has_a_wrong_generator():
    assert set(FixCachedLogits().mistakes) == {m for _, m, _ in WRONG} - {None}
