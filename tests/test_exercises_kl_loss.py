"""kd_lessons.exercises.kl_loss: the KD loss (2) and its find-and-fix exercises (7 to 13)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kd_lessons import losses
from kd_lessons.exercises import FixSwapped, KDLoss
from kd_lessons.exercises.kl_loss import KD_VARIANTS

pytestmark = pytest.mark.usefixtures("one_thread")
BY_NAME = {v.name: v for v in KD_VARIANTS}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about reduction='mean', rightly
@pytest.mark.parametrize("mistake,words", [
    ("reduction_mean", "num_classes times too small: reduction='mean'"),
    ("no_T_squared", "T**2 times too small"),
    ("probs_as_input", "expects log-probabilities"),
    ("raw_logits_as_targets", "Targets must be probabilities"),
])
def test_hints_name_the_mistake_in_the_learners_words(mistake, words):
    assert words in KDLoss().check(BY_NAME[mistake].fn).message


def test_reverse_kl_is_explained_as_a_choice_not_only_a_bug():
    """Exercise 10: reverse KL is deliberate in LLM distillation; classification KD uses the forward KL."""
    message = KDLoss().check(BY_NAME["swapped"].fn).message
    for text in (message, FixSwapped.hint_text):
        assert "reverse kl" in text.lower() and "mode-seeking" in text and "forward KL(teacher || student)" in text
        assert "MiniLLM, Gu et al. ICLR 2024" in text and "GKD, Agarwal et al. ICLR 2024" in text


def test_a_detached_student_is_named_with_source_003s_stop_gradient():
    result = KDLoss().check(lambda z, v, T: losses.kd_loss(z.detach(), v, T))
    assert result.mistake == "detached" and "tf.stop_gradient" in result.message


@pytest.mark.parametrize("fn,words", [
    (lambda z, v, T: torch.zeros(2, 3, 4, 5), "shape"),
    (lambda z, v, T: "a string", "returned str"),
])
def test_wrong_shape_or_type_is_incorrect(fn, words):
    result = KDLoss().check(fn)
    assert result.outcome == "incorrect" and words in result.message


@settings(max_examples=10, deadline=None)
@given(scale=st.floats(0.05, 20.0).filter(lambda s: abs(s - 1) > 1e-2))
def test_any_rescaled_kd_loss_is_incorrect(scale):
    """A loss off by any constant factor is never accepted (T**2, K and B are special cases)."""
    assert KDLoss().check(lambda z, v, T: scale * losses.kd_loss(z, v, T)).outcome == "incorrect"
