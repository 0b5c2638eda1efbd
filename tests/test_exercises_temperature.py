"""kd_lessons.exercises.temperature: softmax with temperature (1) and the 'softening' T < 1 fix (16)."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kd_lessons.exercises import FixSofteningT, SoftmaxWithTemperature

pytestmark = pytest.mark.usefixtures("one_thread")

# One answer for each outcome the checker can name (None: a right answer).
SOFT_TARGETS = {
    None: lambda z: F.softmax(z / 3.0, dim=1),
    "sharpened": lambda z: F.softmax(z / 0.5, dim=1),
    "T_equals_1": lambda z: F.softmax(z, dim=1),
    "not_temperature": lambda z: 0.8 * F.softmax(z, dim=1) + 0.2 / z.shape[1],
    "not_probabilities": lambda z: F.softmax(z / 3.0, dim=1) * 2,
}


@pytest.mark.parametrize("mistake", [None, *FixSofteningT().mistakes])
def test_each_soft_target_mistake_is_named(mistake):
    result = FixSofteningT().check(SOFT_TARGETS[mistake])
    assert (result.outcome, result.mistake) == ("correct" if mistake is None else "incorrect", mistake)


@settings(max_examples=15, deadline=None)
@given(T=st.floats(1.2, 30.0), sharp=st.floats(0.1, 0.9))
def test_any_T_above_one_passes_and_any_below_one_is_named(T, sharp):
    assert FixSofteningT().check(lambda z: F.softmax(z / T, dim=1)).outcome == "correct"
    assert FixSofteningT().check(lambda z: F.softmax(z / sharp, dim=1)).mistake == "sharpened"


def test_soft_targets_of_the_wrong_shape_or_ranking_are_incorrect():
    result = FixSofteningT().check(lambda z: F.softmax(z / 3.0, dim=0)[:1])
    assert result.outcome == "incorrect" and "one distribution per row" in result.message
    result = FixSofteningT().check(lambda z: F.softmax(-z / 3.0, dim=1))
    assert result.outcome == "incorrect" and "most likely class changed" in result.message


def test_softmax_on_a_detached_input_is_named():
    result = SoftmaxWithTemperature().check(lambda z, T: torch.softmax(z.detach() / T, -1))
    assert (result.outcome, result.mistake) == ("incorrect", "detached")
