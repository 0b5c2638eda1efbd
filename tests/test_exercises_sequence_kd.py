"""exercises.sequence_kd, teacher_sequences and sequence_kd_fixes: exercises 21-28 (generative / LLM distillation).

tests/test_exercises.py already runs every exercise's solution, starter code, broken code and each known
wrong answer; this file checks what is special here: the references are kd_lessons.generative's losses,
the generation and batch-loss checkers catch the teacher's mode and autograd, and garbage never crashes.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.exercises import (
    FixJSDCrossEntropy,
    FixSameLogits,
    FixSwappedRoles,
    FixVocabMismatch,
    GeneralizedJSD,
    SequenceReverseKL,
    TeacherSequences,
    TopKRenormalized,
)
from kd_lessons.exercises.teacher_sequences import GenerationMistake, _run_generation, reference_generate

pytestmark = pytest.mark.usefixtures("one_thread")
EXERCISES = [SequenceReverseKL, GeneralizedJSD, TeacherSequences, TopKRenormalized, FixVocabMismatch,
             FixSwappedRoles, FixSameLogits, FixJSDCrossEntropy]


def define(code: str, name: str):
    namespace = {"torch": torch, "F": F, "nn": nn}
    exec(code, namespace)
    return namespace[name]


def test_numbers_are_21_to_28():
    assert [cls.number for cls in EXERCISES] == list(range(21, 29))


@pytest.mark.parametrize("cls", EXERCISES, ids=lambda c: c.key)
def test_three_outcomes(cls):
    ex = cls()
    assert ex.check(define(ex.solution_code, ex.fn_name)).outcome == "correct"
    assert ex.check(define(ex.starter_code, ex.fn_name)).outcome == "not_attempted"
    assert ex.check(None).outcome == "not_attempted"
    wrong = ex.check(cls.variants[0].fn)
    assert (wrong.outcome, wrong.mistake, wrong.message) == ("incorrect", cls.variants[0].name, cls.variants[0].hint)


CASES = [pytest.param(cls, v, id=f"{cls.key}-{v.name}") for cls in EXERCISES for v in cls.variants]


@pytest.mark.parametrize("cls,variant", CASES)
def test_each_wrong_answer_gets_its_own_hint(cls, variant):
    result = cls().check(variant.fn)
    assert (result.outcome, result.mistake, result.message) == ("incorrect", variant.name, variant.hint)


def test_the_briefs_mistakes_are_all_known():
    names = lambda cls: {v.name for v in cls.variants}  # noqa: E731
    assert {"forward_kl", "mask_ignored"} <= names(SequenceReverseKL)
    assert {"mixture_swapped", "log_space_mixture", "kl_weights_swapped"} <= names(GeneralizedJSD)
    assert {"teacher_train_mode", "teacher_grad", "always_greedy", "always_sampling"} <= names(TeacherSequences)
    assert {"not_renormalised", "student_renormalised_too", "rest_bucket"} <= names(TopKRenormalized)
    assert (FixVocabMismatch.bug, FixSwappedRoles.bug, FixSameLogits.bug, FixJSDCrossEntropy.bug) == \
        ("softmax_then_truncate", "swapped_roles", "same_logits", "cross_entropy_in_jsd")


GARBAGE = [lambda *a: "a string", lambda *a: None, lambda *a: torch.zeros(3), lambda *a: (1, 2),
           lambda *a: torch.tensor(float("nan")), lambda *a: 1 / 0, lambda: None, 42,
           lambda *a: torch.zeros(3, 9, dtype=torch.long)]


@pytest.mark.parametrize("cls", EXERCISES, ids=lambda c: c.key)
@pytest.mark.parametrize("fn", GARBAGE)
def test_garbage_never_raises(cls, fn):
    result = cls().check(fn)
    assert result.outcome == "incorrect" and result.message, result


def test_reverse_kl_of_a_fully_masked_sequence_is_the_mean_over_the_other_tokens():
    """The solution's token mean is the library's (generative.divergences.reverse_kl with a mask)."""
    from kd_lessons.generative.divergences import reverse_kl

    solution = define(SequenceReverseKL.solution_code, "seq_reverse_kl")
    z, v = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, True, False], [False, False, False, False]])
    torch.testing.assert_close(solution(z, v, mask), reverse_kl(z, v, mask=mask))


def test_generation_that_restores_nothing_but_samples_right_is_correct():
    """Sampling with the given generator, in eval mode, under no_grad, is all the checker asks."""
    def mine(teacher, prompt, n, greedy, generator):
        teacher.eval()
        with torch.no_grad():
            return reference_generate(teacher, prompt, n, greedy, generator)

    assert TeacherSequences().check(mine).outcome == "correct"


@pytest.mark.parametrize("mistake", [GenerationMistake(position=0), GenerationMistake(feed_back=False),
                                     GenerationMistake(mode="train"), GenerationMistake(grad=True)])
def test_reference_generation_makes_the_mistake_it_is_given(mistake):
    right, right_flags = _run_generation(reference_generate, 0, False)
    same, same_flags = _run_generation(lambda *a: reference_generate(*a, GenerationMistake()), 0, False)
    assert torch.equal(same, right) and same_flags == right_flags  # the defaults make no mistake
    wrong, wrong_flags = _run_generation(lambda *a: reference_generate(*a, mistake), 0, False)
    assert not torch.equal(wrong, right) or wrong_flags != right_flags


def test_generation_without_the_generator_is_incorrect_with_a_pointer_to_it():
    def global_rng(teacher, prompt, n, greedy, generator):
        return reference_generate(teacher, prompt, n, greedy, None)

    result = TeacherSequences().check(global_rng)
    assert result.outcome == "incorrect" and "generator=generator" in result.message


def test_a_detached_student_in_the_batch_loss_is_named():
    def detached(student, teacher, x):
        teacher.eval()
        with torch.no_grad():
            student_logits, teacher_logits = student(x), teacher(x)
        log_q, log_p = F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1)
        return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1).mean()

    result = FixSameLogits().check(detached)
    assert (result.outcome, result.mistake) == ("incorrect", "no_student_gradient")
