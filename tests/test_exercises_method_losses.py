"""kd_lessons.exercises.method_losses (DKD's split, 18; RKD distance, 19) and exercises.mutual_step (DML, 20)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.exercises import DKDSplit, MutualStep, RKDDistance
from kd_lessons.exercises.method_losses import DKD_VARIANTS, RKD_VARIANTS
from kd_lessons.exercises.mutual_step import (
    DML_VARIANTS,
    SEQUENTIAL_NOTE,
    MutualMistake,
    reference_mutual_step,
    sequential_mutual_step,
)
from kd_lessons.methods.logits import dkd_terms
from kd_lessons.methods.relations import rkd_distance_loss

pytestmark = pytest.mark.usefixtures("one_thread")
EXERCISES = [DKDSplit, RKDDistance, MutualStep]


def solution(cls):
    namespace = {"torch": torch, "F": F, "nn": nn}
    exec(cls.solution_code, namespace)
    return namespace[cls.fn_name]


@pytest.mark.parametrize("cls", EXERCISES, ids=lambda c: c.key)
def test_three_outcomes(cls):
    ex = cls()
    assert ex.check(solution(cls)).outcome == "correct"
    assert ex.check(None).outcome == "not_attempted"
    starter = {"torch": torch, "F": F, "nn": nn}
    exec(ex.starter_code, starter)
    assert ex.check(starter[cls.fn_name]).outcome == "not_attempted"
    wrong = ex.check(cls.variants[0].fn)
    assert (wrong.outcome, wrong.mistake, wrong.message) == ("incorrect", cls.variants[0].name, cls.variants[0].hint)


CASES = [pytest.param(cls, v, id=f"{cls.key}-{v.name}") for cls in EXERCISES for v in cls.variants]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("cls,variant", CASES)
def test_each_wrong_answer_gets_its_own_hint(cls, variant):
    result = cls().check(variant.fn)
    assert (result.outcome, result.mistake, result.message) == ("incorrect", variant.name, variant.hint)


def test_the_briefs_mistakes_are_all_known():
    assert {"nckd_target_left_in", "nckd_not_renormalised", "no_T_squared", "student_pt_both_sides"} \
        <= {v.name for v in DKD_VARIANTS}
    assert {"no_normalisation", "squared_error", "diagonal_in_mean"} <= {v.name for v in RKD_VARIANTS}
    assert {"not_detached", "kl_swapped"} <= {v.name for v in DML_VARIANTS}
    assert "sequential" not in {v.name for v in DML_VARIANTS}  # the paper's Algorithm 1 is no mistake


GARBAGE = [lambda *a: "a string", lambda *a: None, lambda *a: torch.zeros(3), lambda *a: (1, 2),
           lambda *a: (torch.zeros(2, 2), torch.zeros(5)), lambda *a: torch.tensor(float("nan")),
           lambda *a: 1 / 0, lambda: None, 42]


@pytest.mark.parametrize("cls", EXERCISES, ids=lambda c: c.key)
@pytest.mark.parametrize("fn", GARBAGE)
def test_garbage_never_raises(cls, fn):
    result = cls().check(fn)
    assert result.outcome == "incorrect" and result.message, result


def test_dkd_wants_a_pair_of_per_row_terms():
    result = DKDSplit().check(lambda z, v, y, T: torch.stack(dkd_terms(z, v, y, T)).mean(1))
    assert (result.mistake, "return a pair (tckd, nckd)" in result.message) == ("not_a_pair", True)


def test_dkd_mdistiller_style_mask_is_accepted():
    """The authors' -1000 mask renormalises over the non-target classes too: a correct answer."""
    def masked(z, v, y, T):
        mask = F.one_hot(y, z.shape[1]).bool()
        out = []
        for s in (z, v.detach()):
            p = F.softmax(s / T, dim=1)
            pt = (p * mask).sum(1, keepdim=True)
            out.append((torch.cat([pt, 1 - pt], 1), F.log_softmax(s / T - 1000.0 * mask, dim=1)))
        (b_s, o_s), (b_t, o_t) = out
        tckd = F.kl_div(b_s.log(), b_t, reduction="none").sum(1)
        nckd = F.kl_div(o_s, o_t.exp(), reduction="none").sum(1)
        return T**2 * tckd, T**2 * nckd
    assert DKDSplit().check(masked).outcome == "correct"


def test_detached_student_is_named():
    r1 = DKDSplit().check(lambda z, v, y, T: dkd_terms(z.detach(), v, y, T))
    r2 = RKDDistance().check(lambda s, t: rkd_distance_loss(s.detach(), t))
    assert (r1.mistake, r2.mistake) == ("detached", "detached")
    assert "student's logits" in r1.message and "student's embeddings" in r2.message


def test_rkd_scaled_loss_is_incorrect_without_a_known_name():
    result = RKDDistance().check(lambda s, t: 1.5 * rkd_distance_loss(s, t))
    assert (result.outcome, result.mistake) == ("incorrect", None) and "values differ" in result.message


def test_mutual_step_that_updates_one_model_names_it():
    def only_a(model_a, model_b, opt_a, opt_b, x, y, T=1.0):
        za, zb = model_a(x), model_b(x).detach()
        loss = F.cross_entropy(za, y) + T**2 * F.kl_div(F.log_softmax(za / T, dim=1), F.softmax(zb / T, dim=1),
                                                        reduction="batchmean")
        opt_a.zero_grad()
        loss.backward()
        opt_a.step()
    result = MutualStep().check(only_a)
    assert (result.outcome, result.mistake) == ("incorrect", "b_not_updated") and "model_b" in result.message
    assert MutualStep().check(lambda *a: None).mistake == "a_not_updated"


def test_mutual_step_unknown_mistake_gets_the_general_message():
    def ce_only(model_a, model_b, opt_a, opt_b, x, y, T=1.0):
        for model, opt in ((model_a, opt_a), (model_b, opt_b)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    result = MutualStep().check(ce_only)
    assert (result.outcome, result.mistake) == ("incorrect", None) and "differ from the reference" in result.message


def test_reference_step_updates_both_peers_and_leaves_the_batch_alone():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3), torch.randint(0, 2, (4,))
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    x0 = x.clone()
    reference_mutual_step(a, b, torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1),
                          x, y, 2.0)
    after = list(a.parameters()) + list(b.parameters())
    assert all(not torch.equal(p, q) for p, q in zip(after, before)) and torch.equal(x, x0)


@pytest.mark.parametrize("field, value", [("detach", False), ("swapped", True), ("t_squared", False),
                                          ("zero_grad", False)])
def test_each_mutual_mistake_changes_the_update_and_the_defaults_make_none(field, value):
    def run(mistake):
        torch.manual_seed(0)
        a, b = nn.Linear(3, 4), nn.Linear(3, 4)
        for p in (*a.parameters(), *b.parameters()):  # gradients left over from a previous step
            p.grad = torch.full_like(p, 0.3)
        x, y = torch.randn(6, 3), torch.randint(0, 4, (6,))
        reference_mutual_step(a, b, torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5),
                              x, y, 2.0, mistake)
        return torch.cat([p.detach().flatten() for p in (*a.parameters(), *b.parameters())])

    right = run(None)
    assert torch.equal(run(MutualMistake()), right)
    assert not torch.allclose(run(MutualMistake(**{field: value})), right)


def _algorithm_1(model_a, model_b, opt_a, opt_b, x, y, T=1.0):
    """Zhang et al.'s Algorithm 1 as a learner would write it from the paper (independent of the reference)."""
    def loss(own, other):
        kl = F.kl_div(F.log_softmax(own / T, dim=1), F.softmax(other.detach() / T, dim=1), reduction="batchmean")
        return F.cross_entropy(own, y) + T**2 * kl
    p1, p2 = model_a(x), model_b(x)  # 1: compute p1 and p2
    opt_a.zero_grad()
    loss(p1, p2).backward()          # 2: update Theta_1
    opt_a.step()
    p1, p2 = model_a(x), model_b(x)  # 3: recompute p1 and p2
    opt_b.zero_grad()
    loss(p2, p1).backward()          # 4: update Theta_2
    opt_b.step()


def test_the_papers_sequential_algorithm_1_is_correct_and_says_so():
    result = MutualStep().check(_algorithm_1)
    assert (result.outcome, result.message) == ("correct", SEQUENTIAL_NOTE) and "Algorithm 1" in result.message
    simultaneous = MutualStep().check(solution(MutualStep))
    assert simultaneous.outcome == "correct" and "Algorithm 1" not in simultaneous.message


def test_sequential_step_differs_from_the_simultaneous_one_so_the_checker_tells_them_apart():
    def run(step):
        torch.manual_seed(0)
        a, b = nn.Linear(3, 4), nn.Linear(3, 4)
        x, y = torch.randn(6, 3), torch.randint(0, 4, (6,))
        step(a, b, torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5), x, y, 2.0)
        return torch.cat([p.detach().flatten() for p in (*a.parameters(), *b.parameters())])

    simultaneous, sequential = run(reference_mutual_step), run(sequential_mutual_step)
    n_a = sum(p.numel() for p in nn.Linear(3, 4).parameters())
    assert torch.allclose(simultaneous[:n_a], sequential[:n_a])       # model_a steps on the same predictions
    assert not torch.allclose(simultaneous[n_a:], sequential[n_a:])   # model_b sees model_a's update
    assert torch.allclose(run(_algorithm_1), sequential)
    b_first = run(lambda *args: sequential_mutual_step(*args, b_first=True))
    assert not torch.allclose(b_first, sequential) and not torch.allclose(b_first, simultaneous)
