"""Tests for kd_lessons.exercises: references pass, every known mistake is named, nothing crashes."""
import copy
from pathlib import Path

import nbformat
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn.functional as F
from torch import nn

from kd_lessons import exercises
from kd_lessons.exercises_checks import reference_step
from kd_lessons.exercises_questions import QUESTIONS
from kd_lessons.exercises_text import BROKEN
from kd_lessons.exercises_variants import DISTILL_VARIANTS, HINT_VARIANTS, KD_VARIANTS, SOFTMAX_VARIANTS
from kd_lessons.losses import distillation_loss

ROOT = Path(__file__).resolve().parents[1]
KEYS = list(exercises.EXERCISES)


pytestmark = pytest.mark.usefixtures("one_thread")


def define(code: str, name: str):
    """Run a cell's code with the notebook's setup imports and return the function it defines."""
    namespace = {"torch": torch, "F": F, "nn": nn, "distillation_loss": distillation_loss}
    exec(code, namespace)
    return namespace[name]


def check(key, fn):
    return exercises.EXERCISES[key]().check(fn)


@pytest.mark.parametrize("key", KEYS)
def test_reference_solution_is_correct(key):
    ex = exercises.EXERCISES[key]()
    result = ex.check(define(ex.solution_code, ex.fn_name))
    assert result.outcome == "correct", result.message


@pytest.mark.parametrize("key", KEYS)
def test_stub_is_not_attempted(key):
    ex = exercises.EXERCISES[key]()
    result = ex.check(define(ex.starter_code(), ex.fn_name))
    assert result.outcome == "not_attempted"
    assert "NotImplementedError" in result.message
    assert check(key, None).outcome == "not_attempted"


@pytest.mark.parametrize("key", KEYS)
def test_every_exercise_lists_its_mistakes(key):
    ex = exercises.EXERCISES[key]()
    assert ex.mistakes and len(set(ex.mistakes)) == len(ex.mistakes)
    assert ex.bug is None or ex.bug in ex.mistakes
    assert key in BROKEN or ex.bug is None


@pytest.mark.parametrize("key", sorted(BROKEN))
def test_broken_snippet_is_named(key):
    ex = exercises.EXERCISES[key]()
    result = ex.check(define(BROKEN[key], ex.fn_name))
    assert result.outcome == "incorrect" and result.mistake == ex.bug, result


def _variant_cases():
    for key, variants in (("softmax_T", SOFTMAX_VARIANTS), ("kd_loss", KD_VARIANTS),
                          ("distillation_loss", DISTILL_VARIANTS), ("hint_loss", HINT_VARIANTS)):
        for v in variants:
            yield pytest.param(key, v, id=f"{key}-{v.name}")


@pytest.mark.parametrize("key,variant", _variant_cases())
def test_each_known_variant_gets_its_hint(key, variant):
    result = check(key, variant.fn)
    assert result.outcome == "incorrect"
    assert result.mistake == variant.name
    assert result.message == variant.hint


def test_specific_hint_texts():
    """The messages name the mistake in words a learner recognises."""
    by_name = {v.name: v for v in KD_VARIANTS}
    assert "num_classes times too small: reduction='mean'" in check("kd_loss", by_name["reduction_mean"].fn).message
    assert "T**2 times too small" in check("kd_loss", by_name["no_T_squared"].fn).message
    assert "log-probabilities" in check("kd_loss", by_name["probs_as_input"].fn).message
    assert "swapped" in check("kd_loss", by_name["swapped"].fn).message


@pytest.mark.parametrize("key", ["softmax_T", "kd_loss", "distillation_loss", "hint_loss", "hint_regressor",
                                 "distillation_step", "fix_softening_T", "fix_cached_logits"])
def test_learner_errors_are_reported_not_raised(key):
    def boom(*args):
        raise ValueError("oops")

    result = check(key, boom)
    assert result.outcome == "incorrect" and "ValueError: oops" in result.message


@pytest.mark.parametrize("key", ["softmax_T", "kd_loss", "distillation_loss", "hint_loss"])
def test_wrong_shape_or_type_is_incorrect(key):
    result = check(key, lambda *args: torch.zeros(2, 3, 4, 5))
    assert result.outcome == "incorrect" and "shape" in result.message
    result = check(key, lambda *args: "a string")
    assert result.outcome == "incorrect" and "returned str" in result.message


def test_non_callable_is_incorrect():
    result = check("kd_loss", 3.0)
    assert result.outcome == "incorrect" and "pass the function itself" in result.message


def test_detached_student_gradient_is_named():
    def detached(student_logits, teacher_logits, T):
        return exercises.losses.kd_loss(student_logits.detach(), teacher_logits, T)

    result = check("kd_loss", detached)
    assert result.mistake == "detached" and "stop-gradient" in result.message
    assert check("softmax_T", lambda z, T: torch.softmax(z.detach() / T, -1)).mistake == "detached"
    detached_hint = check("hint_loss", lambda s, t, r: F.mse_loss(r(s.detach()), t))
    assert detached_hint.mistake == "detached"  # the regressor still trains, the student would not


# ---------------------------------------------------------------- the training step


def _step(teacher_mode="eval", no_grad=True, zero_grad=True, detach=False, loss_fn=distillation_loss,
          update_teacher=False, as_tensor=False, use_teacher=True, scale_return=1.0):
    def step(student, teacher, optimizer, x, y, T, alpha):
        teacher.train() if teacher_mode == "train" else teacher.eval()
        with torch.set_grad_enabled(not no_grad):
            teacher_logits = teacher(x) if use_teacher else student(x).detach()
        student_logits = student(x)
        loss = loss_fn(student_logits.detach() if detach else student_logits, teacher_logits, y, T, alpha)
        if zero_grad:
            optimizer.zero_grad()
        if loss.requires_grad:
            loss.backward()
        optimizer.step()
        if update_teacher:
            with torch.no_grad():
                for p in teacher.parameters():
                    p.add_(0.01)
        return loss if as_tensor else scale_return * loss.item()
    return step


@pytest.mark.parametrize("kwargs,mistake", [
    ({}, None),
    ({"teacher_mode": "train"}, "teacher_train_mode"),
    ({"no_grad": False}, "teacher_grad"),
    ({"zero_grad": False}, "no_zero_grad"),
    ({"detach": True}, "student_not_updated"),
    ({"update_teacher": True}, "teacher_updated"),
    ({"as_tensor": True}, "return_type"),
    ({"scale_return": 2.0}, "return_value"),
    ({"use_teacher": False}, "no_teacher"),
    ({"loss_fn": next(v.fn for v in DISTILL_VARIANTS if v.name == "alpha_swapped")}, "alpha_swapped"),
    ({"loss_fn": next(v.fn for v in DISTILL_VARIANTS if v.name == "no_T_squared")}, "no_T_squared"),
])
def test_step_mistakes_are_named(kwargs, mistake):
    result = check("distillation_step", _step(**kwargs))
    assert result.outcome == ("correct" if mistake is None else "incorrect"), result
    assert result.mistake == mistake


def test_reference_step_leaves_teacher_alone():
    teacher = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    student = nn.Linear(3, 2)
    before = copy.deepcopy(teacher.state_dict())
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    loss = reference_step(student, teacher, torch.optim.SGD(student.parameters(), lr=0.1), x, y, 2.0, 0.5)
    assert isinstance(loss, float)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


# ---------------------------------------------------------------- the other checkers


@pytest.mark.parametrize("make,mistake", [
    (lambda cs, ct: nn.Conv2d(cs, ct, kernel_size=1), None),
    (lambda cs, ct: nn.Identity(), "no_params"),
    (lambda cs, ct: nn.Linear(cs, ct), "linear_on_maps"),
    (lambda cs, ct: nn.Conv2d(cs, ct, kernel_size=3), "spatial_changed"),
])
def test_regressor_mistakes(make, mistake):
    result = check("hint_regressor", make)
    assert result.mistake == mistake and result.outcome == ("correct" if mistake is None else "incorrect")


@pytest.mark.parametrize("fn,mistake", [
    (lambda z: F.softmax(z / 3.0, dim=1), None),
    (lambda z: F.softmax(z / 0.5, dim=1), "sharpened"),
    (lambda z: F.softmax(z, dim=1), "T_equals_1"),
    (lambda z: 0.8 * F.softmax(z, dim=1) + 0.2 / z.shape[1], "not_temperature"),
    (lambda z: F.softmax(z / 3.0, dim=1) * 2, "not_probabilities"),
])
def test_soft_target_mistakes(fn, mistake):
    result = check("fix_softening_T", fn)
    assert result.mistake == mistake and result.outcome == ("correct" if mistake is None else "incorrect")


@settings(max_examples=15, deadline=None)
@given(T=st.floats(1.2, 30.0), sharp=st.floats(0.1, 0.9))
def test_soft_targets_any_T_above_one_passes_and_below_one_is_named(T, sharp):
    assert check("fix_softening_T", lambda z: F.softmax(z / T, dim=1)).outcome == "correct"
    assert check("fix_softening_T", lambda z: F.softmax(z / sharp, dim=1)).mistake == "sharpened"


@settings(max_examples=10, deadline=None)
@given(scale=st.floats(0.05, 20.0).filter(lambda s: abs(s - 1) > 1e-2))
def test_any_rescaled_kd_loss_is_incorrect(scale):
    """A loss off by any constant factor is never accepted (T**2, K and B are special cases)."""
    result = check("kd_loss", lambda z, v, T: scale * exercises.losses.kd_loss(z, v, T))
    assert result.outcome == "incorrect"


def test_cli(capsys):
    assert exercises.main(["build-solutions", "--check"]) == 0
    assert exercises.main([]) == 2
    assert "up to date" in capsys.readouterr().out


def test_build_solutions_rejects_a_notebook_without_summary():
    nb = _learner()
    nb.cells = [c for c in nb.cells if "summary" not in c.metadata.get("tags", [])]
    with pytest.raises(ValueError, match="summary"):
        exercises.build_solutions(nb)


def test_cached_batches_unshuffled_is_named():
    def in_order(x, y, teacher_logits, batch_size, generator):
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size], teacher_logits[start:start + batch_size]

    assert check("fix_cached_logits", in_order).mistake == "not_shuffled"


def test_results_and_summary_track_the_latest_check(capsys):
    check("softmax_T", None)
    assert exercises.results()["softmax_T"].outcome == "not_attempted"
    table = exercises.summary()
    assert set(table) == set(KEYS) and table["softmax_T"] == "not_attempted"
    assert "Softmax with temperature" in capsys.readouterr().out


def test_result_display_forms():
    result = exercises.Result("Demo", "incorrect", "a <b> message", "x")
    assert "Incorrect" in str(result) and "&lt;b&gt;" in result._repr_html_()


def test_check_does_not_disturb_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check("distillation_step", _step())
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- notebooks


def _learner():
    return nbformat.read(exercises.LEARNER, as_version=4)


def test_solved_notebook_is_generated_from_the_learner_copy():
    """Regenerate in memory; the committed solved copy must match byte for byte."""
    expected = nbformat.writes(exercises.build_solutions(_learner()))
    assert exercises.SOLVED.read_text(encoding="utf-8") == expected, \
        "run: python -m kd_lessons.exercises build-solutions"


def test_learner_cells_are_the_stubs_and_cover_every_exercise():
    cells = [c for c in _learner().cells if "solution" in c.metadata.get("tags", [])]
    keys = [c.metadata["kd_exercise"] for c in cells]
    assert sorted(keys) == sorted(KEYS)
    for cell in cells:
        assert cell.source.rstrip("\n") == exercises.EXERCISES[cell.metadata["kd_exercise"]]().starter_code().rstrip("\n")


def test_question_bank_matches_notebook_08():
    """Every listed question has its heading (in order) in notebook 08, with its source label."""
    nb = nbformat.read(ROOT / "notebooks" / "08_interview_questions.ipynb", as_version=4)
    headings = [c.source.splitlines()[0] for c in nb.cells
                if c.cell_type == "markdown" and c.source.startswith("### Q")]
    assert [h.split(".")[0][4:] for h in headings] == [q["id"] for q in QUESTIONS]
    text = "\n".join(c.source for c in nb.cells)
    for q in QUESTIONS:
        assert q["source"] is None or q["source"][:3] in {"000", "001", "002", "003", "004"}
        if q["zh"]:
            assert q["zh"] in text, q["id"]
    answered = sum(c.source.count("<details>") for c in nb.cells if c.cell_type == "markdown")
    assert answered == len(QUESTIONS)
