"""kd_lessons.exercises.logit_store: exercise 36 (top-k with a rest bucket), its three outcomes and its hints."""
import pytest
import torch
import torch.nn.functional as F
from exercise_harness import assert_three_outcomes

from kd_lessons.exercises.core import EXERCISES
from kd_lessons.exercises.logit_store import VARIANTS, TopKRestBucket, reference, trials


def solution():
    namespace = {"torch": torch, "F": F}
    exec(TopKRestBucket.solution_code, namespace)
    return namespace[TopKRestBucket.fn_name]


def test_registered_as_exercise_36():
    assert EXERCISES["topk_rest_bucket"].number == 36 and EXERCISES["topk_rest_bucket"] is TopKRestBucket


def test_three_outcomes():
    assert_three_outcomes(TopKRestBucket())


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_each_known_bug_gets_its_own_hint(variant):
    result = TopKRestBucket().check(variant.fn)
    assert (result.outcome, result.mistake, result.message) == ("incorrect", variant.name, variant.hint)


def test_the_full_k_trial_really_rounds_below_zero():
    """The k = V trial is there to catch a log of a negative: its teacher's 1 - sum p is < 0 in float32."""
    z, v, k = trials()[-1]
    assert k == v.shape[-1] and len(v) > 0
    rest = 1 - F.log_softmax(v, -1).topk(k, -1).values.exp().sum(-1)
    assert bool((rest < 0).all())
    assert torch.isfinite(reference(z, v, k))


def test_an_unclamped_rest_is_named():
    def unclamped(student_logits, teacher_logits, k):
        top_lp, idx = F.log_softmax(teacher_logits, -1).topk(k, -1)
        top_lq = F.log_softmax(student_logits, -1).gather(-1, idx)
        p_rest, q_rest = 1 - top_lp.exp().sum(-1), 1 - top_lq.exp().sum(-1)
        return ((top_lp.exp() * (top_lp - top_lq)).sum(-1) + p_rest * (p_rest.log() - q_rest.log())).mean()

    result = TopKRestBucket().check(unclamped)
    assert (result.outcome, result.mistake) == ("incorrect", "log_of_negative")


def test_a_detached_student_is_named():
    right = solution()
    result = TopKRestBucket().check(lambda z, v, k: right(z.detach(), v, k))
    assert (result.outcome, result.mistake) == ("incorrect", "detached")


def test_the_stable_logsumexp_rest_is_also_correct():
    """log(rest) as the logsumexp of the other log-probs (what logit_store.encode_topk stores) passes too."""
    def via_logsumexp(student_logits, teacher_logits, k):
        log_p, log_q = F.log_softmax(teacher_logits, -1), F.log_softmax(student_logits, -1)
        top_lp, idx = log_p.topk(k, -1)
        outside = torch.finfo(log_q.dtype).min / 2
        lp = torch.cat([top_lp, torch.logsumexp(log_p.scatter(-1, idx, float("-inf")), -1, keepdim=True)], -1)
        lq = torch.cat([log_q.gather(-1, idx), torch.logsumexp(log_q.scatter(-1, idx, outside), -1, keepdim=True)], -1)
        return torch.where(lp > float("-inf"), lp.exp() * (lp - lq), 0.0).sum(-1).mean()

    assert TopKRestBucket().check(via_logsumexp).outcome == "correct"
