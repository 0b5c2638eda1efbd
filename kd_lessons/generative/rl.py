"""The few lines of math behind RL and on-policy distillation of a language model, as pure functions.

Introduced in notebook 15_on_policy_distillation. A student samples completions; each sampled token gets
an advantage, and the loss is -(advantage * log p_student(token)) over the completion (the policy
gradient). The three arms of the lesson differ only in where the advantage comes from:

* REINFORCE with a baseline: a 0/1 verifier reward per completion, minus its group's mean;
* GRPO: the same reward, normalised within the group of completions of one prompt, with a clipped
  importance ratio so that several gradient steps can reuse one batch of samples;
* on-policy distillation (OPD): a dense, per-token reward, minus the reverse KL's one-sample estimate
  log p_student(token) - log p_teacher(token), computed by letting the teacher score every sampled token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_same_vocab", "sampled_log_probs", "reverse_kl_per_token", "reverse_kl_reward",
           "group_advantages", "baseline_advantages", "clipped_objective", "policy_gradient_loss", "reverse_kl_full"]


def check_same_vocab(student_size: int, teacher_size: int) -> None:
    """Raise unless teacher and student share one vocabulary. Notebook 15_on_policy_distillation.

    The teacher must score the very tokens the student sampled; with two tokenizers they are not the same
    tokens, and per-token KL is undefined.
    """
    if int(student_size) != int(teacher_size):
        raise ValueError(f"the student has a vocabulary of {student_size} tokens and the teacher {teacher_size}: "
                         "on-policy distillation needs one shared tokenizer (the teacher scores the student's own "
                         "tokens). Cross-tokenizer KD is a different lesson; use a teacher with the student's "
                         "vocabulary")


def sampled_log_probs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] per position: [B, L, V] and [B, L] -> [B, L]. Notebook 15_on_policy_distillation."""
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(f"logits must be [batch, length, vocab] and tokens [batch, length], got "
                         f"{tuple(logits.shape)} and {tuple(tokens.shape)}")
    return F.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None].long())[..., 0]


def _mask_like(mask, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    if mask.shape != like.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but the values {tuple(like.shape)}; pass one flag "
                         "per sampled token (True on the completion)")
    return mask.bool()


def reverse_kl_per_token(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tokens: torch.Tensor,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """log p_student(token) - log p_teacher(token) on each sampled token, 0 off the mask. Notebook 15.

    Its expectation over tokens sampled from the student is KL(student || teacher) at that position (the
    reverse KL); one sample is an unbiased, noisy estimate of it. No gradient flows through it.
    """
    check_same_vocab(student_logits.shape[-1], teacher_logits.shape[-1])
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)}: score the same sampled sequences with both models")
    with torch.no_grad():
        gap = sampled_log_probs(student_logits, tokens) - sampled_log_probs(teacher_logits, tokens)
    return gap.masked_fill(~_mask_like(mask, gap), 0.0)


def reverse_kl_reward(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tokens: torch.Tensor,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """OPD's dense reward: minus the per-token reverse KL estimate, [B, L]. Notebook 15_on_policy_distillation.

    Positive where the teacher finds the student's token more likely than the student did.
    """
    return -reverse_kl_per_token(student_logits, teacher_logits, tokens, mask)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's advantage: (r - group mean) / group std, per row of rewards [groups, G]. Notebook 15.

    A group whose rewards are all equal (all right or all wrong) carries no signal about which sample is
    better: its advantages are exactly 0, never NaN. An empty group raises.
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.dim() != 2 or rewards.shape[0] == 0 or rewards.shape[1] == 0:
        raise ValueError(f"rewards must be [groups, samples per group] with at least one of each, got shape "
                         f"{tuple(rewards.shape)}: an empty group has no mean to compare a sample with")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards hold NaN or inf; the verifier must give a number to every completion")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, unbiased=False, keepdim=True)
    return torch.where(std > eps, centred / std.clamp_min(eps), torch.zeros_like(centred))


def baseline_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE with a baseline: r - group mean, per row of rewards [groups, G]. Notebook 15.

    The baseline cuts the variance of the gradient without biasing it (a constant has zero expected score).
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.dim() != 2 or rewards.shape[0] == 0 or rewards.shape[1] == 0:
        raise ValueError(f"rewards must be [groups, samples per group] with at least one of each, got shape "
                         f"{tuple(rewards.shape)}")
    return rewards - rewards.mean(dim=1, keepdim=True)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not mask.any():
        raise ValueError("the mask selects no token: every completion is empty, so there is nothing to train on")
    return (values * mask).sum() / mask.sum()


def clipped_objective(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor | None = None, clip: float = 0.2) -> torch.Tensor:
    """PPO/GRPO's surrogate: mean of min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A). Notebook 15.

    ratio = exp(logp_new - logp_old) per token, logp_old from the policy that sampled (no gradient).
    Maximise it (the loss is its negative). Once a token's ratio has moved past 1 +- clip in the
    direction its advantage favours, its gradient is 0: one batch cannot push the policy too far.
    """
    if not 0 < clip < 1:
        raise ValueError(f"clip={clip!r}: use a fraction in (0, 1) such as 0.2")
    if logp_new.shape != logp_old.shape or advantages.shape != logp_new.shape:
        raise ValueError(f"logp_new {tuple(logp_new.shape)}, logp_old {tuple(logp_old.shape)} and advantages "
                         f"{tuple(advantages.shape)} must have one shape (broadcast a sequence's advantage first)")
    mask = _mask_like(mask, logp_new)
    ratio = torch.exp(logp_new - logp_old.detach())
    advantages = advantages.detach()
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    return _masked_mean(surrogate, mask)


def policy_gradient_loss(logp: torch.Tensor, advantages: torch.Tensor,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """-mean(A * log p(token)) over the completion: the REINFORCE / OPD loss to minimise. Notebook 15.

    A (per token, [B, L]) carries no gradient; its gradient is the score-function estimate of the
    gradient of the expected reward.
    """
    if advantages.shape != logp.shape:
        raise ValueError(f"advantages {tuple(advantages.shape)} and logp {tuple(logp.shape)} must have one shape")
    return -_masked_mean(advantages.detach() * logp, _mask_like(mask, logp))


def reverse_kl_full(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the mask of the exact KL(student || teacher) at each position (sum over the vocabulary). Notebook 15.

    The same objective as the sampled estimate, with the sum over next tokens done exactly at each visited
    prefix: lower variance, one teacher forward pass per sequence all the same (GKD's on-policy loss).
    """
    check_same_vocab(student_logits.shape[-1], teacher_logits.shape[-1])
    log_s = F.log_softmax(student_logits.float(), dim=-1)
    log_t = F.log_softmax(teacher_logits.float().detach(), dim=-1)
    kl = (log_s.exp() * (log_s - log_t)).sum(-1)
    return _masked_mean(kl, _mask_like(mask, kl))
