"""Data-free distillation as an interview exercise: DeepInversion's BatchNorm-statistics loss (ex 29).

Introduced in notebook 09_coding_exercises; the method is in notebook 12_data_free_kd
(kd_lessons.methods.deep_inversion). The learner's loss is checked against `bn_statistics_loss` (value and
gradient with respect to the images' activations), and the usual wrong answers get their own hints.
"""
from __future__ import annotations

import torch

from kd_lessons.exercises.core import Exercise, Variant
from kd_lessons.methods.deep_inversion import bn_statistics_loss


def _norm(t):
    return torch.linalg.vector_norm(t)


def _stats(x):
    return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)


def _no_variance(x, m, v):
    return _norm(_stats(x)[0] - m)


def _no_mean(x, m, v):
    return _norm(_stats(x)[1] - v)


def _unbiased(x, m, v):
    return _norm(x.mean(dim=(0, 2, 3)) - m) + _norm(x.var(dim=(0, 2, 3), unbiased=True) - v)


def _view_without_permute(x, m, v):
    flat = x.reshape(x.shape[1], -1)  # mixes images and channels: needs x.transpose(0, 1) first
    return _norm(flat.mean(1) - m) + _norm(flat.var(1, unbiased=False) - v)


def _per_image(x, m, v):
    mean = x.mean(dim=(2, 3))  # [N, C]: one statistic per image, not per batch
    var = x.var(dim=(2, 3), unbiased=False)
    return (_norm(mean - m) + _norm(var - v)) / len(x)


def _squared(x, m, v):
    mean, var = _stats(x)
    return (mean - m).pow(2).sum() + (var - v).pow(2).sum()


def _mse(x, m, v):
    mean, var = _stats(x)
    return torch.nn.functional.mse_loss(mean, m) + torch.nn.functional.mse_loss(var, v)


def _std(x, m, v):
    mean, var = _stats(x)
    return _norm(mean - m) + _norm(var.sqrt() - v)


BN_VARIANTS = (
    Variant("no_variance", "You matched only the means. A BatchNorm layer stores two statistics per channel, "
            "running_mean and running_var; add the norm of (batch variance - running_var) too, or the images can "
            "have any contrast the teacher never saw.", _no_variance),
    Variant("no_mean", "You matched only the variances: add the norm of (batch mean - running_mean) as well.",
            _no_mean),
    Variant("unbiased_variance", "Your variance is the unbiased one (divided by n - 1). BatchNorm normalises with "
            "the biased variance of the batch (divided by n = N*H*W), and DeepInversion matches that: use "
            "x.var(dim=(0, 2, 3), unbiased=False).", _unbiased),
    Variant("view_without_permute", "Your per-channel statistics mix images and channels: x.reshape(C, -1) (or "
            ".view) on an [N, C, H, W] tensor does not group a channel's values. Average over dims (0, 2, 3), or "
            "move the channels first with x.transpose(0, 1) before flattening.", _view_without_permute),
    Variant("per_image_statistics", "You computed a mean and variance per image (over H, W) and averaged the "
            "losses. BatchNorm's statistics are over the whole batch: one mean and one variance per channel over "
            "N, H and W together (dims (0, 2, 3)).", _per_image),
    Variant("squared_norms", "You summed squared differences. DeepInversion uses the plain Euclidean norms, "
            "||mu - running_mean||_2 + ||sigma^2 - running_var||_2 (torch.linalg.vector_norm), not their squares.",
            _squared),
    Variant("mean_squared_error", "You used the mean squared error per channel. Use the Euclidean norm over "
            "channels of each difference (not squared, not averaged), then add the two norms.", _mse),
    Variant("std_not_variance", "You compared the standard deviation with running_var. running_var is a "
            "variance: compare it with the batch variance (no square root).", _std),
)


class BNStatisticsLoss(Exercise):
    """Exercise 29 of notebook 09_coding_exercises: DeepInversion's BN-statistics loss (Yin et al., CVPR 2020)."""

    number, key, title, fn_name = 29, "bn_statistics_loss", "DeepInversion: BN statistics loss", "bn_stats_loss"
    variants, other_mistakes = BN_VARIANTS, ("detached",)
    detach_hint = ("remove the .detach() on x: the images are what DeepInversion optimises, so the gradient must "
                   "reach them.")
    hint_text = ("x is what enters one BatchNorm layer, [N, C, H, W]. Per channel, take the batch mean and the "
                 "biased variance over N, H and W (dims (0, 2, 3)), as BatchNorm does in training mode. Return "
                 "||mean - running_mean||_2 + ||var - running_var||_2 (torch.linalg.vector_norm of each difference).")
    solution_code = '''def bn_stats_loss(x, running_mean, running_var):
    """Return ||batch mean - running_mean||_2 + ||batch variance - running_var||_2 for one BN layer's input x."""
    mean = x.mean(dim=(0, 2, 3))                    # one value per channel, over N, H and W
    var = x.var(dim=(0, 2, 3), unbiased=False)      # biased: what BatchNorm normalises with
    return torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)
'''

    @staticmethod
    def reference(x, running_mean, running_var):
        """kd_lessons.methods.deep_inversion.bn_statistics_loss."""
        return bn_statistics_loss(x, running_mean, running_var)

    def trials(self):
        """Activations of several shapes (N != C, so a mixed-up reshape shows), with stored statistics."""
        out = []
        for n, c, h, w in ((8, 3, 5, 5), (4, 6, 3, 4), (16, 2, 2, 2)):
            x = torch.randn(n, c, h, w) * 1.5 + torch.randn(1, c, 1, 1)
            out.append((x, torch.randn(c) * 0.5, torch.rand(c) * 2 + 0.2))
        return out
