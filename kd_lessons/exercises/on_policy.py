"""The three pieces of on-policy distillation and GRPO as exercises 31-33: the reward, the advantage, the clip.

Introduced in notebook 09_coding_exercises; the methods are the arms of notebook 15_on_policy_distillation
(kd_lessons.generative.rl is the reference). Each checker names the usual mistakes: a flipped sign, raw logits
or probabilities instead of log-probabilities, a reward that carries gradient, a zero-variance group turned
into NaN, a batch-wide instead of a per-group baseline, max instead of min, a ratio without the exp.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call, check_function, close, matching_variant
from kd_lessons.generative import rl


def _at(values, tokens):
    return values.gather(-1, tokens[..., None])[..., 0]


def _reward_trials():
    g = torch.Generator().manual_seed(3)
    out = []
    for B, L, V in ((2, 5, 7), (3, 4, 11)):
        s, t = torch.randn(B, L, V, generator=g) * 2, torch.randn(B, L, V, generator=g) * 2
        tokens = torch.randint(0, V, (B, L), generator=g)
        mask = torch.rand(B, L, generator=g) > 0.3
        out.append((s, t, tokens, mask))
    return out


REWARD_VARIANTS = (
    Variant("wrong_sign", "You returned log p_student - log p_teacher, the KL estimate itself. The reward is its "
            "negative: the student should be rewarded where the teacher finds its token *more* likely.",
            lambda s, t, x, m: rl.reverse_kl_per_token(s, t, x, m)),
    Variant("raw_logits", "You subtracted the raw logits. Logits are log-probabilities only up to a per-position "
            "constant (the log-sum-exp), which differs between the two models; apply log_softmax first.",
            lambda s, t, x, m: ((_at(t, x) - _at(s, x)) * m)),
    Variant("probabilities", "You subtracted probabilities. The reverse KL is an expectation of the *log* ratio: "
            "use log_softmax, not softmax.",
            lambda s, t, x, m: ((_at(F.softmax(t, -1), x) - _at(F.softmax(s, -1), x)) * m)),
    Variant("no_mask", "The prompt and what follows the end mark are not the student's completion: set the reward "
            "to 0 where mask is False.",
            lambda s, t, x, m: rl.reverse_kl_reward(s, t, x, None)),
    Variant("exact_kl", "You returned the exact KL over the whole vocabulary. That is the low-variance variant; "
            "this exercise asks for the one-sample estimate on the token the student sampled (use `tokens`).",
            lambda s, t, x, m: -((F.softmax(s, -1) * (F.log_softmax(s, -1) - F.log_softmax(t, -1))).sum(-1) * m)),
)


class ReverseKLReward(Exercise):
    """Exercise 31 of notebook 09_coding_exercises: OPD's per-token reward, minus the reverse-KL estimate."""

    number, key, title, fn_name = 31, "reverse_kl_reward", "On-policy distillation's per-token reward", "opd_reward"
    variants = REWARD_VARIANTS
    other_mistakes = ("carries_gradient",)
    hint_text = ("log_softmax both models' logits, pick the sampled token's value with .gather(-1, tokens[..., None]),"
                 " take teacher minus student, zero it off the mask, and compute it under torch.no_grad() (or "
                 ".detach()) because a reward is a number, not a path for the gradient.")
    solution_code = '''def opd_reward(student_logits, teacher_logits, tokens, mask):
    """Minus the per-token reverse-KL estimate, log p_teacher(token) - log p_student(token), 0 off the mask."""
    with torch.no_grad():                                          # a reward: no gradient flows through it
        log_s = F.log_softmax(student_logits, dim=-1).gather(-1, tokens[..., None])[..., 0]
        log_t = F.log_softmax(teacher_logits, dim=-1).gather(-1, tokens[..., None])[..., 0]
        return (log_t - log_s) * mask
'''

    def _check(self, fn) -> None:
        """fn(student_logits, teacher_logits, tokens, mask) -> [B, L] reward, detached."""
        trials, outs, wrong = _reward_trials(), [], None
        for s, t, x, m in trials:
            out = call(fn, s.clone().requires_grad_(True), t.clone(), x.clone(), m.clone())
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                raise Incorrect(f"return a tensor of shape {list(x.shape)} (one reward per token); got "
                                f"{getattr(out, 'shape', type(out).__name__)}.", None)
            outs.append(out)
            if not close(out, rl.reverse_kl_reward(s, t, x, m)) and wrong is None:
                wrong = out
        if wrong is None:
            if any(o.requires_grad for o in outs):
                raise Incorrect("the values are right, but the reward carries gradient: the loss would then also "
                                "differentiate the reward. Compute it under torch.no_grad() or .detach() it.",
                                "carries_gradient")
            return
        variant = matching_variant(self.variants, outs, trials)
        if variant is not None:
            raise Incorrect(variant.hint, variant.name)
        raise Incorrect("the rewards differ from the reference, log p_teacher(token) - log p_student(token) on the "
                        "mask.", None)


ADVANTAGE_TRIALS = (torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]]),
                    torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.5, 1.0]]))


def _per_group(r, std):
    return (r - r.mean(1, keepdim=True)) / std


ADVANTAGE_VARIANTS = (
    Variant("nan_on_equal", "A group whose rewards are all equal has std 0, and (r - mean) / std is 0/0 = NaN: one "
            "such group poisons the whole step. Return 0 for those groups (no sample is better than another).",
            lambda r: _per_group(r, r.std(1, unbiased=False, keepdim=True))),
    Variant("batch_baseline", "You normalised over the whole batch. GRPO compares each completion with the other "
            "completions *of the same prompt*: mean and std per row (group).",
            lambda r: torch.nan_to_num((r - r.mean()) / r.std(unbiased=False))),
    Variant("no_std", "You only subtracted the group's mean: that is REINFORCE's baseline. GRPO also divides by the "
            "group's standard deviation.",
            lambda r: r - r.mean(1, keepdim=True)),
    Variant("unbiased_std", "torch's .std() divides by n - 1 by default; this exercise (and kd_lessons.generative.rl)"
            " uses the group's population std: .std(dim=1, unbiased=False).",
            lambda r: rl.group_advantages(r) * r.std(1, unbiased=False, keepdim=True)
            / r.std(1, keepdim=True).clamp_min(1e-12)),
)


class GRPOAdvantage(Exercise):
    """Exercise 32 of notebook 09_coding_exercises: GRPO's group-normalised advantage, safe on equal rewards."""

    number, key, title, fn_name = 32, "grpo_advantage", "GRPO's group-normalised advantage", "grpo_advantage"
    variants = ADVANTAGE_VARIANTS
    hint_text = ("Per row: centred = r - r.mean(dim=1, keepdim=True); std = r.std(dim=1, unbiased=False, "
                 "keepdim=True); where std is (nearly) 0 return 0, else centred / std (torch.where).")
    solution_code = '''def grpo_advantage(rewards):
    """(r - group mean) / group std per row of rewards [groups, G]; exactly 0 for a group of equal rewards."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, unbiased=False, keepdim=True)
    return torch.where(std > 1e-6, centred / std.clamp_min(1e-6), torch.zeros_like(centred))
'''

    def _check(self, fn) -> None:
        """fn(rewards [groups, G]) -> advantages of the same shape."""
        outs, wrong = [], None
        for r in ADVANTAGE_TRIALS:
            out = call(fn, r.clone())
            if not isinstance(out, torch.Tensor) or out.shape != r.shape:
                raise Incorrect(f"return a tensor of shape {list(r.shape)}; got "
                                f"{getattr(out, 'shape', type(out).__name__)}.", None)
            outs.append(out)
            if not close(out, rl.group_advantages(r)) and wrong is None:
                wrong = out
        if wrong is None:
            return
        variant = matching_variant(self.variants, outs, [(r,) for r in ADVANTAGE_TRIALS])
        if variant is not None:
            raise Incorrect(variant.hint, variant.name)
        raise Incorrect("the advantages differ from (r - group mean) / group std (0 for equal groups).", None)


def _clip_trials():
    new = torch.tensor([[0.0, 0.5, -0.5, 0.1, 0.5, -0.5]])
    adv = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]])
    g = torch.Generator().manual_seed(5)
    return [(new, torch.zeros(1, 6), adv, 0.2),
            (torch.randn(3, 4, generator=g) * 0.4, torch.randn(3, 4, generator=g) * 0.4,
             torch.randn(3, 4, generator=g), 0.1)]


def _surrogate(ratio, adv, clip, pick):
    return pick(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()


CLIP_VARIANTS = (
    Variant("max_not_min", "max(...) is the optimistic side: it lets a token whose ratio already moved the way its "
            "advantage wants keep pushing. PPO and GRPO take the min.",
            lambda n, o, a, c: _surrogate(torch.exp(n - o), a, c, torch.maximum)),
    Variant("clipped_only", "You kept only the clipped term. Without the min, a token whose ratio moved the *wrong* "
            "way is counted at 1 +- clip instead of its real, worse ratio: take the min of both terms.",
            lambda n, o, a, c: (torch.exp(n - o).clamp(1 - c, 1 + c) * a).mean()),
    Variant("no_exp", "The ratio is p_new / p_old = exp(logp_new - logp_old); you used the difference of "
            "log-probabilities itself.",
            lambda n, o, a, c: _surrogate(n - o, a, c, torch.minimum)),
    Variant("unclipped", "You left out the clip: that is the plain importance-weighted objective, which lets one "
            "batch push the policy arbitrarily far.",
            lambda n, o, a, c: (torch.exp(n - o) * a).mean()),
)


class ClippedRatio(Exercise):
    """Exercise 33 of notebook 09_coding_exercises: PPO / GRPO's clipped importance-ratio objective."""

    number, key, title, fn_name = 33, "clipped_ratio", "The clipped importance ratio", "clipped_objective"
    variants = CLIP_VARIANTS
    detach_hint = "compute the ratio from logp_new (do not .detach() it); only logp_old is fixed."
    hint_text = ("ratio = torch.exp(logp_new - logp_old); the objective is the mean of torch.minimum(ratio * A, "
                 "ratio.clamp(1 - clip, 1 + clip) * A).")
    solution_code = '''def clipped_objective(logp_new, logp_old, advantages, clip):
    """Mean of min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A), ratio = p_new / p_old per token."""
    ratio = torch.exp(logp_new - logp_old.detach())
    clipped = ratio.clamp(1 - clip, 1 + clip)
    return torch.minimum(ratio * advantages, clipped * advantages).mean()
'''

    @staticmethod
    def reference(n, o, a, c):
        return rl.clipped_objective(n, o, a, None, c)

    @staticmethod
    def trials():
        return _clip_trials()

    def _check(self, fn) -> None:
        check_function(fn, self.reference, self.trials(), self.variants, self.detach_hint)
