"""kd_lessons.generative.rl and runs.on_policy: the RL / on-policy distillation math and the arms' plumbing."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from kd_lessons.generative import rl
from kd_lessons.generative import scratchpad as task
from kd_lessons.runs import on_policy as op
from kd_lessons.runs import trace_students as rr

from strategies import FAST, seeds


def test_reverse_kl_per_token_is_an_unbiased_estimate_of_the_exact_kl():
    g = torch.Generator().manual_seed(0)
    s, t = (torch.randn(1, 1, 6, generator=g, dtype=torch.float64) for _ in range(2))
    tokens = torch.multinomial(F.softmax(s[0, 0], -1), 40_000, replacement=True, generator=g)
    n = len(tokens)
    est = rl.reverse_kl_per_token(s.expand(1, n, 6), t.expand(1, n, 6), tokens[None]).mean()
    exact = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=s[0, 0]),
                                              torch.distributions.Categorical(logits=t[0, 0]))
    assert est.item() == pytest.approx(exact.item(), abs=0.02)
    assert rl.reverse_kl_full(s, t).item() == pytest.approx(exact.item(), rel=1e-6)


@FAST
@given(seeds)
def test_reverse_kl_reward_is_minus_the_log_ratio_of_the_sampled_token_and_zero_off_the_mask(seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    tokens = torch.randint(0, 7, (2, 5), generator=g)
    mask = torch.rand(2, 5, generator=g) > 0.3
    reward = rl.reverse_kl_reward(s, t, tokens, mask)
    want = (F.log_softmax(t, -1) - F.log_softmax(s, -1)).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(reward[mask], want[mask])
    assert (reward[~mask] == 0).all()
    assert not reward.requires_grad  # a reward, not a path for the gradient


def test_different_vocabularies_raise_a_clear_error():
    with pytest.raises(ValueError, match="Cross-tokenizer KD is a different lesson"):
        rl.reverse_kl_reward(torch.zeros(1, 2, 5), torch.zeros(1, 2, 6), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shared tokenizer"):
        rl.check_same_vocab(17, 50257)


@FAST
@given(st.lists(st.lists(st.sampled_from([0.0, 1.0, 0.5, 2.0]), min_size=2, max_size=6), min_size=1, max_size=5)
       .filter(lambda rows: len({len(r) for r in rows}) == 1), st.floats(0.1, 10), st.floats(-5, 5))
def test_group_advantages_are_standardised_per_group_and_ignore_affine_rescaling(rows, scale, shift):
    r = torch.tensor(rows)
    a = rl.group_advantages(r)
    assert torch.isfinite(a).all()
    for row, adv in zip(r, a):
        if row.std(unbiased=False) > 1e-6:
            assert adv.mean().item() == pytest.approx(0, abs=1e-5)
            assert adv.std(unbiased=False).item() == pytest.approx(1, abs=1e-4)
        else:
            assert (adv == 0).all()
    torch.testing.assert_close(rl.group_advantages(scale * r + shift), a, atol=1e-4, rtol=1e-4)


def test_zero_variance_group_gives_zeros_and_an_empty_group_raises():
    a = rl.group_advantages(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    assert (a[:2] == 0).all() and not torch.isnan(a).any() and a[2, 0] < 0 < a[2, 1]
    for empty in (torch.zeros(0, 4), torch.zeros(3, 0)):
        with pytest.raises(ValueError, match="empty group"):
            rl.group_advantages(empty)
    with pytest.raises(ValueError, match="NaN"):
        rl.group_advantages(torch.tensor([[1.0, float("nan")]]))
    torch.testing.assert_close(rl.baseline_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]])),
                               torch.tensor([[0.5, -0.5, -0.5, 0.5]]))


def _naive_clipped(new, old, adv, clip):
    out = []
    for n, o, a in zip(new.tolist(), old.tolist(), adv.tolist()):
        ratio = math.exp(n - o)
        out.append(min(ratio * a, max(1 - clip, min(1 + clip, ratio)) * a))
    return sum(out) / len(out)


@FAST
@given(seeds, st.floats(0.05, 0.5))
def test_clipped_objective_matches_a_plain_loop_and_is_a_lower_bound(seed, clip):
    g = torch.Generator().manual_seed(seed)
    new, old, adv = torch.randn(8, generator=g) * 0.5, torch.randn(8, generator=g) * 0.5, torch.randn(8, generator=g)
    value = rl.clipped_objective(new[None], old[None], adv[None], clip=clip)
    assert value.item() == pytest.approx(_naive_clipped(new, old, adv, clip), rel=1e-5, abs=1e-6)
    assert value.item() <= (torch.exp(new - old) * adv).mean().item() + 1e-6  # pessimistic: never above unclipped


def test_clipped_tokens_get_no_gradient_and_unclipped_ones_the_policy_gradient():
    old = torch.zeros(1, 3)
    new = torch.tensor([[0.0, 0.5, -0.5]], requires_grad=True)  # ratios 1, 1.65, 0.61
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    rl.clipped_objective(new, old, adv, clip=0.2).backward()
    assert new.grad[0, 0].item() == pytest.approx(1 / 3) and new.grad[0, 1:].abs().max() == 0
    with pytest.raises(ValueError, match="clip"):
        rl.clipped_objective(new, old, adv, clip=1.5)


def test_policy_gradient_loss_raises_the_log_prob_of_good_tokens():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    rl.policy_gradient_loss(logp, torch.tensor([[1.0, -1.0]])).backward()
    assert logp.grad[0, 0] < 0 < logp.grad[0, 1]  # minimising: push good up, bad down
    with pytest.raises(ValueError, match="selects no token"):
        rl.policy_gradient_loss(logp, torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool))


def test_verify_counts_malformed_output_as_unparseable_not_a_crash():
    problems = [(12, 34)] * 6
    texts = ["12+34|>46$", "12+34|>47$", "12+34|;;;", "12+34|>4x6$", "", None]
    rewards, counts = op.verify(texts, problems)
    assert rewards.tolist() == [1, 0, 0, 0, 0, 0]
    assert counts == {"right": 1, "wrong": 1, "unparseable": 4}
    with pytest.raises(ValueError, match="one completion per problem"):
        op.verify(["x"], problems)


def test_completion_mask_covers_the_completion_up_to_its_first_end():
    seq = task.encode("12+34|>46$$7$")[None]
    mask = op.completion_mask(seq, prompt_len=6)
    targets = task.decode(seq[0, 1:][mask[0]])
    assert targets == ">46$"
    with pytest.raises(ValueError, match="prompt_len"):
        op.completion_mask(seq, 0)


def test_an_arm_runs_keeps_its_ledger_and_rejects_a_foreign_teacher():
    rec = op.recipe(warm_traces=40, warm_steps=3, rounds=2, sequences=8, n_val=8, n_test=8, eval_every=1)
    trec = rr.recipe(digits=2, teacher_problems=50)
    torch.manual_seed(0)
    teacher = rr._model((16, 1, 2), trec.context)
    sets = op.problem_sets(rec, trec)
    assert not set(sets["test"]) & (set(sets["prompts"]) | set(sets["warm"]))
    warm, ledger = op.warm_start(teacher, sets, rec, seed=0, teacher_rec=trec)
    seen = {}
    for arm in op.ARMS:
        _, rows = op.run_arm(arm, warm, teacher, sets, rec, seed=0, warm_ledger=ledger)
        seen[arm] = rows[-1]
        assert [r["round"] for r in rows] == [0, 1, 2]
    assert seen["SFT"]["student_tokens"] == ledger.student_tokens == 0 and seen["SFT"]["teacher_scored"] == 0
    assert seen["OPD"]["teacher_scored"] > 0 and seen["REINFORCE"]["teacher_scored"] == 0
    assert seen["OPD"]["student_tokens"] == seen["GRPO"]["student_tokens"] == 2 * 8 * task.completion_length(2)
    assert seen["REINFORCE"]["grad_steps"] == ledger.grad_steps + 2
    foreign = rr._model((16, 1, 2), trec.context)
    foreign.vocab_size = 30
    with pytest.raises(ValueError, match="Cross-tokenizer"):
        op.run_arm("OPD", warm, foreign, sets, rec, seed=0)
    with pytest.raises(ValueError, match="arm="):
        op.run_arm("DPO", warm, teacher, sets, rec, seed=0)


def test_carryless_addition_and_the_forgetting_run():
    from kd_lessons.runs import on_policy_forgetting as forgetting

    assert forgetting.carryless(357, 681) == "938" and forgetting.carryless(55, 55) == "00"
    with pytest.raises(ValueError, match="equal length"):
        forgetting.carryless(5, 55)
    rec = op.recipe(warm_traces=40, warm_steps=3, rounds=2, sequences=8, n_val=8, n_test=8, eval_every=1)
    trec = rr.recipe(digits=2, teacher_problems=50)
    torch.manual_seed(0)
    teacher = rr._model((16, 1, 2), trec.context)
    sets = op.problem_sets(rec, trec)
    new = forgetting.new_skill_sets(sets, 2, n_train=30, n_test=10)
    assert not set(new["test"]) & set(new["train"])
    out = forgetting.forget_and_recover(teacher, teacher, sets, new, rec, seed=0, steps=2)
    assert set(out) == {"old_before", "old_after_ft", "old_after_opd", "new_before", "new_after_ft", "new_after_opd"}
    assert all(0 <= v <= 1 for v in out.values())
    with pytest.raises(ValueError, match="old teacher on-policy"):
        forgetting.forget_and_recover(teacher, teacher, sets, new, rec, seed=0, arm="GRPO")
