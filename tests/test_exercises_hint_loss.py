"""kd_lessons.exercises.hint_loss: the FitNets regressor (4) and hint loss (5)."""
import pytest
import torch.nn.functional as F
from torch import nn

from kd_lessons.exercises import HintLoss, MakeHintRegressor

pytestmark = pytest.mark.usefixtures("one_thread")

# One regressor for each outcome the checker can name (None: a right answer).
REGRESSORS = {
    None: lambda cs, ct: nn.Conv2d(cs, ct, kernel_size=1),
    "no_params": lambda cs, ct: nn.Identity(),
    "linear_on_maps": lambda cs, ct: nn.Linear(cs, ct),
    "spatial_changed": lambda cs, ct: nn.Conv2d(cs, ct, kernel_size=3),
}


@pytest.mark.parametrize("mistake", [None, *MakeHintRegressor().mistakes])
def test_each_regressor_mistake_is_named(mistake):
    result = MakeHintRegressor().check(REGRESSORS[mistake])
    expected = ("correct", None) if mistake is None else ("incorrect", mistake)
    assert (result.outcome, result.mistake) == expected


@pytest.mark.parametrize("make,words", [
    (lambda cs, ct: "conv", "return an nn.Module"),
    (lambda cs, ct: nn.Conv2d(cs, cs, kernel_size=1), "the teacher's channel count"),
    (lambda cs, ct: nn.Sequential(nn.Conv2d(cs, ct, 1), nn.Flatten(2)), "the output must be"),
])
def test_other_wrong_regressors_are_incorrect(make, words):
    result = MakeHintRegressor().check(make)
    assert result.outcome == "incorrect" and words in result.message


def test_a_detached_student_in_the_hint_loss_is_named():
    """The regressor would still train, but the student would not."""
    result = HintLoss().check(lambda s, t, r: F.mse_loss(r(s.detach()), t))
    assert (result.outcome, result.mistake) == ("incorrect", "detached")
