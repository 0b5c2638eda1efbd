"""The progressive-distillation target as exercise 38: the x~ whose one DDIM step lands where the teacher's two do.

Introduced in lesson 17 (the exercise belongs to lesson 09's set; kd_lessons.diffusion.distill.pd_target_x is the
reference). Each checker hint names a usual mistake: the teacher's z_t'' taken as the target, the sigma ratio upside
down, the denominator left out, z_t'' divided by alpha'' as if it held no noise, the noise eps~ solved for instead
of x~, the v target returned, and a target that carries the teacher's gradient.
"""
from __future__ import annotations

import math

import torch

from kd_lessons.diffusion.distill import pd_target_v, pd_target_x
from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call, close, matching_variant


def _schedule(t):
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1)
    return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)


def _trials():
    """(z_t, z_t'', alpha_t, sigma_t, alpha_t'', sigma_t'') on the cosine schedule, t'' > 0 so the noise matters."""
    g = torch.Generator().manual_seed(38)
    out = []
    for t, gap in ((torch.rand(6, generator=g) * 0.6 + 0.4, 0.25), (torch.tensor([1.0, 1.0, 0.5, 0.75]), 0.125)):
        a_t, s_t = _schedule(t)
        a_n, s_n = _schedule(t - gap)
        z_t = torch.randn(len(t), 2, generator=g)
        z_tpp = a_n * torch.randn(len(t), 2, generator=g) * 0.5 + s_n * z_t
        out.append((z_t, z_tpp, a_t, s_t, a_n, s_n))
    return out


def _x(z_t, z_n, a_t, s_t, a_n, s_n):
    return pd_target_x(z_t, z_n, a_t, s_t, a_n, s_n)


VARIANTS = (
    Variant("teacher_endpoint", "You returned the teacher's z_t'' itself. The student predicts x (or v), not the "
            "next noisy state: find the x~ such that one DDIM step from z_t with x~ lands on z_t''. Only at t'' = 0, "
            "where sigma'' = 0, are the two the same.",
            lambda z_t, z_n, a_t, s_t, a_n, s_n: z_n),
    Variant("inverted_ratio", "The sigma ratio is upside down. A DDIM step keeps the noise direction "
            "eps = (z_t - alpha_t x) / sigma_t and rescales it to sigma'': the ratio is sigma'' / sigma_t.",
            lambda z_t, z_n, a_t, s_t, a_n, s_n: (z_n - (s_t / s_n) * z_t) / (a_n - (s_t / s_n) * a_t)),
    Variant("no_denominator", "You stopped at z_t'' - (sigma'' / sigma_t) z_t. That is x~ times "
            "(alpha'' - (sigma'' / sigma_t) alpha_t): divide by it to get x~.",
            lambda z_t, z_n, a_t, s_t, a_n, s_n: z_n - (s_n / s_t) * z_t),
    Variant("no_noise", "You divided z_t'' by alpha'', as if z_t'' held no noise. At t'' > 0 it holds "
            "sigma'' eps, and eps is the one from z_t: eps = (z_t - alpha_t x~) / sigma_t. Solve "
            "z_t'' = alpha'' x~ + sigma'' (z_t - alpha_t x~) / sigma_t for x~.",
            lambda z_t, z_n, a_t, s_t, a_n, s_n: z_n / a_n),
    Variant("solved_for_eps", "You solved for the noise eps~ (the alpha ratio, divided by sigma'' - ...). The "
            "student's target here is the clean point x~: use the sigma ratio sigma'' / sigma_t and divide by "
            "alpha'' - (sigma'' / sigma_t) alpha_t.",
            lambda z_t, z_n, a_t, s_t, a_n, s_n: (z_n - (a_n / a_t) * z_t) / (s_n - (a_n / a_t) * s_t)),
    Variant("v_target", "You returned the v target (alpha_t z_t - x~) / sigma_t. It is the right target for a "
            "v-prediction student (kd_lessons.diffusion.distill.pd_target_v), but this exercise asks for x~ itself.",
            lambda z_t, z_n, a_t, s_t, a_n, s_n: pd_target_v(z_t, _x(z_t, z_n, a_t, s_t, a_n, s_n), a_t, s_t)),
)


class ProgressiveDistillationTarget(Exercise):
    """Exercise 38 (lesson 09's set, the method of lesson 17): Salimans & Ho's x~ from the teacher's two steps."""

    number, key, title, fn_name = 38, "pd_target", "The progressive-distillation target", "pd_target"
    variants = VARIANTS
    other_mistakes = ("carries_gradient",)
    hint_text = ("One DDIM step with prediction x from z_t lands at alpha'' x + sigma'' (z_t - alpha_t x) / sigma_t. "
                 "Set that equal to the teacher's z_t'' and solve for x: with r = sigma'' / sigma_t, "
                 "x~ = (z_t'' - r z_t) / (alpha'' - r alpha_t); then .detach() it, since it is a target.")
    solution_code = '''def pd_target(z_t, z_tpp, alpha_t, sigma_t, alpha_tpp, sigma_tpp):
    """x~ whose single DDIM step z_t -> z_t'' lands on the teacher's two-step result z_tpp (a target: detached)."""
    ratio = sigma_tpp / sigma_t                     # the step keeps eps and rescales it from sigma_t to sigma''
    return ((z_tpp - ratio * z_t) / (alpha_tpp - ratio * alpha_t)).detach()
'''

    def _check(self, fn) -> None:
        """fn(z_t, z_tpp, alpha_t, sigma_t, alpha_tpp, sigma_tpp) -> x~ [B, 2], detached."""
        trials, outs, wrong = _trials(), [], False
        for args in trials:
            z_t, z_n, *coefs = [a.clone() for a in args]
            out = call(fn, z_t, z_n.requires_grad_(True), *coefs)  # as if the teacher's graph were kept
            if not isinstance(out, torch.Tensor) or out.shape != z_t.shape:
                raise Incorrect(f"return a tensor of shape {list(z_t.shape)} (one x~ per point); got "
                                f"{getattr(out, 'shape', type(out).__name__)}.", None)
            outs.append(out)
            wrong = wrong or not close(out, _x(*args))
        if not wrong:
            if any(o.requires_grad for o in outs):
                raise Incorrect("the values are right, but the target carries gradient back into the teacher's "
                                "two steps: .detach() it (or compute it under torch.no_grad()); only the student "
                                "learns.", "carries_gradient")
            return
        variant = matching_variant(self.variants, outs, trials)
        if variant is not None:
            raise Incorrect(variant.hint, variant.name)
        raise Incorrect("x~ differs from the reference (z_t'' - r z_t) / (alpha'' - r alpha_t), r = sigma'' / sigma_t.",
                        None)
