"""FitNets feature distillation needs a trainable regressor and a hint loss: exercises 4 and 5.

Introduced in notebook 09_coding_exercises; the method is in notebook 05_feature_distillation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons import losses
from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call

# ---------------------------------------------------------------- exercise 4: the regressor


class MakeHintRegressor(Exercise):
    """Exercise 4 of notebook 09_coding_exercises: a trainable map from the student's width to the teacher's."""

    number, key, title, fn_name = 4, "hint_regressor", "FitNets regressor", "make_regressor"
    other_mistakes = ("no_params", "linear_on_maps", "spatial_changed")
    hint_text = "A 1x1 convolution is the same linear map between channel counts at every pixel."
    solution_code = '''def make_regressor(student_channels, teacher_channels):
    """Return a trainable module mapping [B, student_channels, H, W] to [B, teacher_channels, H, W]."""
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
'''

    def _check(self, fn, trials=((3, 8, 5, 4), (6, 4, 3, 3), (5, 5, 2, 6))):
        """fn(student_channels, teacher_channels) must map [B, Cs, H, W] to [B, Ct, H, W] and train."""
        for cs, ct, h, w in trials:
            regressor = call(fn, cs, ct)
            if not isinstance(regressor, nn.Module):
                raise Incorrect(f"return an nn.Module (e.g. nn.Conv2d), got {type(regressor).__name__}.", None)
            params = [p for p in regressor.parameters() if p.requires_grad]
            if not params:
                raise Incorrect("the regressor has no trainable parameters: FitNets learns it together with "
                                "the student, so it can map the student's width to the teacher's.", "no_params")
            features = torch.randn(2, cs, h, w, requires_grad=True)
            out = _run_regressor(regressor, features)
            want = (2, ct, h, w)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
                got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[1] == ct:
                    raise Incorrect(f"channels are right but H, W changed ({got}, expected {list(want)}): "
                                    "use kernel_size=1 (or padding) so each pixel stays in place.",
                                    "spatial_changed")
                raise Incorrect(f"for [2, {cs}, {h}, {w}] student features the output must be {list(want)} "
                                f"(the teacher's channel count), got {got}.", None)
            out.sum().backward()
            if features.grad is None or any(p.grad is None for p in params):
                raise Incorrect("no gradient flows through the regressor: remove any .detach() inside it.", None)


def _run_regressor(regressor, features):
    """regressor(features), naming nn.Linear on [B, C, H, W] maps when that is why it failed."""
    try:
        return call(regressor, features)
    except Incorrect as error:
        message, mistake = error.args[0], None
        if "mat1" in message or "shapes cannot be multiplied" in message:
            message += (" nn.Linear acts on the last dimension; for [B, C, H, W] feature maps use "
                        "nn.Conv2d(student_channels, teacher_channels, kernel_size=1).")
            mistake = "linear_on_maps"
        raise Incorrect(message, mistake) from None


# ---------------------------------------------------------------- exercise 5: the hint loss

HINT_VARIANTS = (
    Variant("regressor_on_teacher", "The regressor maps the *student's* features to the teacher's width: "
            "regressor(student_features), not regressor(teacher_features) (source 001 writes z_S = W z_T).",
            lambda s, t, r: F.mse_loss(s, r(t))),
    Variant("no_regressor", "You compared the raw student features: pass them through the regressor "
            "first, regressor(student_features).", lambda s, t, r: F.mse_loss(s, t)),
    Variant("reduction_sum", "Your loss is numel times too large: reduction='sum'. Average over all "
            "elements (F.mse_loss's default 'mean').", lambda s, t, r: F.mse_loss(r(s), t, reduction="sum")),
    Variant("sum_per_sample", "You summed over channels and pixels and averaged over the batch; this "
            "course's hint loss averages over all elements (F.mse_loss).",
            lambda s, t, r: F.mse_loss(r(s), t, reduction="sum") / s.shape[0]),
    Variant("half", "You kept FitNets' 1/2 factor; this course's hint_loss is the plain mean squared "
            "error (F.mse_loss).", lambda s, t, r: 0.5 * F.mse_loss(r(s), t)),
    Variant("l1", "You used the absolute error (L1); the FitNets hint is the squared error (F.mse_loss).",
            lambda s, t, r: F.l1_loss(r(s), t)),
    Variant("rmse", "You took a square root (RMSE); the hint loss is the mean squared error itself.",
            lambda s, t, r: F.mse_loss(r(s), t).sqrt()),
)


class HintLoss(Exercise):
    """Exercise 5 of notebook 09_coding_exercises: MSE(regressor(student_features), teacher_features)."""

    number, key, title, fn_name = 5, "hint_loss", "FitNets hint loss", "my_hint_loss"
    variants, other_mistakes = HINT_VARIANTS, ("detached",)
    hint_text = ("Map the student's features with the regressor, then take the mean squared error to the "
                 "teacher's features (detached: the teacher does not learn).")
    solution_code = '''def my_hint_loss(student_features, teacher_features, regressor):
    """Return the mean squared error between regressor(student_features) and the teacher's features."""
    return F.mse_loss(regressor(student_features), teacher_features.detach())
'''
    reference = staticmethod(losses.hint_loss)

    def trials(self):
        """Feature maps of equal and of different widths, each with a fresh regressor."""
        return [(torch.randn(B, cs, 4, 4), torch.randn(B, ct, 4, 4), losses.HintRegressor(cs, ct))
                for B, cs, ct in ((2, 4, 4), (3, 3, 6), (2, 5, 5))]
