"""kd_lessons.exercises.core: Result, the Exercise base class and the checking helpers never crash a notebook."""
import re
from pathlib import Path

import pytest
import torch

from kd_lessons import exercises
from kd_lessons.exercises.core import (
    EXERCISES,
    Incorrect,
    NotAttempted,
    Result,
    Variant,
    call,
    check_function,
    close,
    matching_variant,
)

PACKAGE = Path(exercises.__file__).parent

pytestmark = pytest.mark.usefixtures("one_thread")


def test_result_shows_each_outcome_as_text_and_escaped_html(capsys):
    for outcome, label in (("correct", "Correct"), ("incorrect", "Incorrect"), ("not_attempted", "Not attempted")):
        result = Result("Demo", outcome, "a <b> message", None)
        assert str(result) == f"[{label}] Demo: a <b> message"
        assert label in result._repr_html_() and "&lt;b&gt;" in result._repr_html_()
    result.show()
    result._ipython_display_()  # already shown: stays quiet
    assert capsys.readouterr().out == "[Not attempted] Demo: a <b> message\n"


def test_call_turns_learner_errors_into_outcomes():
    def stub():
        raise NotImplementedError("Your code here")

    with pytest.raises(NotAttempted, match="still raises NotImplementedError"):
        call(stub)
    with pytest.raises(Incorrect, match="your code raised ZeroDivisionError"):
        call(lambda: 1 / 0)
    assert call(lambda a, b: a + b, 1, 2) == 3


def test_close_compares_shape_and_values_only_for_tensors():
    a = torch.tensor([1.0, float("nan")])
    assert close(a, a.clone()) and not close(a, torch.tensor([1.1, float("nan")]))
    assert not close(a, a[:1]) and not close(a, [1.0, 2.0]) and not close("a", "a")


def test_matching_variant_needs_agreement_on_every_trial_it_can_compute():
    trials = [(torch.ones(2),), (torch.ones(3),)]
    double = Variant("double", "", lambda x: 2 * x)
    two_only = Variant("two_only", "", lambda x: 2 * x if len(x) == 2 else 1 / 0)  # cannot run on trial 2
    assert matching_variant([double], [2 * torch.ones(2), 2 * torch.ones(3)], trials) is double
    assert matching_variant([two_only, double], [2 * torch.ones(2), None], trials) is two_only
    assert matching_variant([double], [2 * torch.ones(2), 3 * torch.ones(3)], trials) is None
    assert matching_variant([double], [None, None], trials) is None  # nothing compared: no verdict


def test_check_function_reports_shape_type_and_gradient_problems():
    trials = [(torch.randn(3, 4),)]
    with pytest.raises(Incorrect, match=r"shape \[2\]; expected \[3, 4\]"):
        check_function(lambda x: torch.zeros(2), torch.exp, trials, ())
    with pytest.raises(Incorrect, match="returned str; expected a torch.Tensor"):
        check_function(lambda x: "a string", torch.exp, trials, ())
    with pytest.raises(Incorrect, match="no gradient reaches the student: say why") as error:
        check_function(lambda x: torch.exp(x.detach()), torch.exp, trials, (), detach_hint="say why")
    assert error.value.args[1] == "detached"
    with pytest.raises(Incorrect, match="the gradients differ"):
        check_function(lambda x: torch.exp(x).detach() + 0 * x, torch.exp, trials, ())
    assert check_function(torch.exp, torch.exp, trials, ()) is None


def test_check_handles_non_callables_and_crashing_checkers():
    result = exercises.KDLoss().check(3.0)
    assert result.outcome == "incorrect" and "pass the function itself" in result.message
    ex = exercises.KDLoss()
    ex._check = lambda fn: 1 / 0  # a bug in a checker still gives a Result
    result = ex.check(lambda *a: None)
    assert result.outcome == "incorrect" and "checking failed: ZeroDivisionError" in result.message


def test_check_does_not_disturb_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    exercises.SoftmaxWithTemperature().check(lambda z, T: torch.softmax(z / T, -1))
    assert torch.equal(torch.rand(3), expected)


def test_results_and_summary_track_the_latest_check(capsys):
    exercises.SoftmaxWithTemperature().check(None)
    assert exercises.results()["softmax_T"].outcome == "not_attempted"
    table = exercises.summary()
    assert list(table) == list(EXERCISES) and table["softmax_T"] == "not_attempted"
    assert " 1. Softmax with temperature" in capsys.readouterr().out


def test_registry_holds_every_exercise_once_in_notebook_order():
    numbers = [cls.number for cls in EXERCISES.values()]
    assert numbers == list(range(1, len(EXERCISES) + 1)) and all(key == cls.key for key, cls in EXERCISES.items())
    assert set(exercises.__all__) >= {cls.__name__ for cls in EXERCISES.values()}


def test_starter_code_is_the_signature_or_the_broken_code_made_to_raise():
    stub = exercises.SoftmaxWithTemperature().starter_code.splitlines()
    assert stub[0] == "def softmax_with_temperature(logits, T):" and stub[1].startswith('    """')
    assert stub[2] == '    raise NotImplementedError("Your code here")' and len(stub) == 3
    fix = exercises.FixReduction()
    lines = fix.starter_code.splitlines()
    assert lines[0] == fix.broken.splitlines()[0] and "Find the bug" in lines[1]
    assert lines[2:] == fix.broken.splitlines()[1:]


def test_hint_and_solution_print_outside_jupyter(capsys):
    ex = exercises.KDLoss()
    ex.hint()
    ex.solution()
    out = capsys.readouterr().out
    assert out.startswith("**Hint (KD loss):** F.kl_div(input, target)") and ex.solution_code in out


def test_package_reads_no_environment_and_no_files():
    """Settings come from kd_lessons.config, paths from the scripts: the library names neither."""
    for module in PACKAGE.glob("*.py"):
        text = module.read_text(encoding="utf-8")
        assert "os.environ" not in text and "__file__" not in text, module.name
        assert not re.search(r"""["']/\w""", text), f"{module.name} names an absolute path"
