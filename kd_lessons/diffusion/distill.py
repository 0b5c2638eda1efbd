"""Progressive distillation (Salimans & Ho, 2022): a student learns in one DDIM step what its teacher does in two.

Introduced in lesson 17. Round k: the student starts as a copy of the teacher (the 2N-step sampler) and, on the
N-step grid t_i = i / N, learns to land in one step where the teacher lands in two (t -> t - 1/2N -> t - 1/N).
Its target is the x-prediction x~ that makes one DDIM step t -> t'' reach the teacher's z_t'' (`pd_target_x`,
exercise 38), given to the v-prediction student as v~ = (alpha_t z_t - x~) / sigma_t (`pd_target_v`). The student
then becomes the teacher, and the steps halve: 64 -> 32 -> ... -> 1. Step counts must be powers of two.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from tqdm.auto import tqdm

from kd_lessons.diffusion.model import _lr_at, alpha_sigma, check_finite, ddim_step

__all__ = ["check_steps", "pd_target_x", "pd_target_v", "teacher_two_steps", "distill_round",
           "progressive_distillation", "halvings"]


def _power_of_two(n) -> bool:
    return not isinstance(n, bool) and isinstance(n, int) and n >= 1 and n & (n - 1) == 0


def check_steps(teacher_steps, final_steps=1) -> None:
    """ValueError unless both counts are powers of two and final_steps < teacher_steps: PD halves. Lesson 17."""
    for name, n in (("teacher_steps", teacher_steps), ("final_steps", final_steps)):
        if not _power_of_two(n):
            raise ValueError(f"{name}={n!r}: progressive distillation halves the number of steps each round, so it "
                             "must be a power of two (1, 2, 4, ..., 64, ...)")
    if not final_steps < teacher_steps:
        raise ValueError(f"final_steps={final_steps} must be smaller than teacher_steps={teacher_steps}: each round "
                         "halves the steps")


def halvings(teacher_steps: int, final_steps: int = 1) -> list[int]:
    """The students' step counts, teacher_steps / 2 down to final_steps (e.g. 64 -> [32, 16, 8, 4, 2, 1])."""
    check_steps(teacher_steps, final_steps)
    out, n = [], teacher_steps // 2
    while n >= final_steps:
        out.append(n)
        n //= 2
    return out


def pd_target_x(z_t, z_tpp, alpha_t, sigma_t, alpha_tpp, sigma_tpp) -> torch.Tensor:
    """x~: the x-prediction whose one DDIM step t -> t'' lands on the teacher's z_t'' (Salimans & Ho, eq. 7).

    Lesson 17 (exercise 38). From z_t'' = alpha'' x~ + sigma'' (z_t - alpha_t x~) / sigma_t:
    x~ = (z_t'' - (sigma''/sigma_t) z_t) / (alpha'' - (sigma''/sigma_t) alpha_t). A target: no gradient.
    """
    ratio = sigma_tpp / sigma_t
    return ((z_tpp - ratio * z_t) / (alpha_tpp - ratio * alpha_t)).detach()


def pd_target_v(z_t, x_tilde, alpha_t, sigma_t) -> torch.Tensor:
    """v~ = (alpha_t z_t - x~) / sigma_t: the same target for a v-prediction student. Lesson 17."""
    return ((alpha_t * z_t - x_tilde) / sigma_t).detach()


@torch.no_grad()
def teacher_two_steps(teacher: nn.Module, z_t, t, t_mid, t_next) -> torch.Tensor:
    """The teacher's two DDIM steps z_t -> z_t' -> z_t'': what the student must do in one. Lesson 17."""
    return ddim_step(teacher, ddim_step(teacher, z_t, t, t_mid), t_mid, t_next)


def distill_round(teacher: nn.Module, student_steps: int, x: torch.Tensor, iters: int, batch_size: int = 256,
                  lr: float = 1e-3, generator: torch.Generator | None = None,
                  progress: bool = True) -> tuple[nn.Module, list[float]]:
    """One PD round: a copy of the 2N-step teacher trained to be an N-step sampler; (student, losses). Lesson 17."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    teacher.eval()
    student = copy.deepcopy(teacher).train()
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    history, n = [], student_steps
    for i in tqdm(range(iters), desc=f"PD {2 * n} -> {n} steps", disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = _lr_at(lr, i, iters)
        xb = x[torch.randint(0, x.shape[0], (batch_size,), generator=g)]
        t = torch.randint(1, n + 1, (batch_size, 1), generator=g).float() / n
        t_mid, t_next = t - 0.5 / n, t - 1.0 / n
        a_t, s_t = alpha_sigma(t)
        a_n, s_n = alpha_sigma(t_next.clamp_min(0))
        z_t = a_t * xb + s_t * torch.randn(xb.shape, generator=g)
        z_tpp = teacher_two_steps(teacher, z_t, t, t_mid, t_next.clamp_min(0))
        v_target = pd_target_v(z_t, pd_target_x(z_t, z_tpp, a_t, s_t, a_n, s_n), a_t, s_t)
        loss = ((student(z_t, t) - v_target) ** 2).mean()
        check_finite(loss, i, f"progressive distillation ({2 * n} -> {n} steps)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return student.eval(), history


def progressive_distillation(teacher: nn.Module, teacher_steps: int, x: torch.Tensor, iters: int,
                             final_steps: int = 1, batch_size: int = 256, lr: float = 1e-3,
                             generator: torch.Generator | None = None,
                             progress: bool = True) -> tuple[dict[int, nn.Module], dict[int, list[float]]]:
    """Rounds teacher_steps -> teacher_steps/2 -> ... -> final_steps: ({steps: student}, {steps: losses}). Lesson 17."""
    counts = halvings(teacher_steps, final_steps)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters={iters!r}: each round needs a whole number of training steps >= 1")
    students, losses, current = {}, {}, teacher
    for n in tqdm(counts, desc="progressive distillation", disable=not progress):
        current, losses[n] = distill_round(current, n, x, iters, batch_size, lr, generator, progress)
        students[n] = current
    return students, losses
