"""Deep mutual learning's two-way step as an interview exercise (20): two peers, each the other's teacher.

Introduced in notebook 09_coding_exercises; the scheme is in notebook 11_methods_tour
(kd_lessons.methods.schemes.mutual_learning). The learner's step runs next to a reference step from the
same weights, and the weights are compared; a known wrong step (a MutualMistake) names the mistake.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call, close


@dataclass(frozen=True)
class MutualMistake:
    """Which known mistake reference_mutual_step makes; the defaults make none. Notebook 09_coding_exercises.

    detach=False lets each loss reach the other model; sequential=True steps a before b learns from it;
    swapped=True reverses the KL; t_squared=False drops T**2; zero_grad=False keeps stale gradients.
    """

    detach: bool = True
    swapped: bool = False
    t_squared: bool = True
    sequential: bool = False
    zero_grad: bool = True


def _dml_loss(z, other, y, T, mistake: MutualMistake):
    """CE(y) + T^2 KL(other's softmax at T || own softmax at T), the other detached; or one mistake."""
    other = other.detach() if mistake.detach else other
    own, target = (other, z) if mistake.swapped else (z, other)
    kl = F.kl_div(F.log_softmax(own / T, dim=1), F.softmax(target / T, dim=1), reduction="batchmean")
    return F.cross_entropy(z, y) + (T * T if mistake.t_squared else 1.0) * kl


def reference_mutual_step(model_a, model_b, opt_a, opt_b, x, y, T=1.0, mistake: MutualMistake | None = None):
    """The correct DML step (or, given a MutualMistake, a known wrong one), for notebook 09_coding_exercises."""
    mistake = MutualMistake() if mistake is None else mistake
    za, zb = model_a(x), model_b(x)
    if mistake.sequential:  # wrong: a steps first, then b learns from a's updated predictions
        opt_a.zero_grad()
        _dml_loss(za, zb, y, T, MutualMistake()).backward()
        opt_a.step()
        za = model_a(x)
        opt_b.zero_grad()
        _dml_loss(zb, za, y, T, MutualMistake()).backward()
        opt_b.step()
        return
    if mistake.zero_grad:
        opt_a.zero_grad()
        opt_b.zero_grad()
    (_dml_loss(za, zb, y, T, mistake) + _dml_loss(zb, za, y, T, mistake)).backward()
    opt_a.step()
    opt_b.step()


def _wrong_step(**mistake):
    """A DML step with one known mistake (MutualMistake's fields), with the learner's signature."""
    wrong = MutualMistake(**mistake)
    return lambda a, b, opt_a, opt_b, x, y, T=1.0: reference_mutual_step(a, b, opt_a, opt_b, x, y, T, wrong)


DML_VARIANTS = (
    Variant("not_detached", "Each model's loss also sent gradients into the other model: the other model's "
            "predictions are a fixed target within a step. Use softmax(other_logits.detach() / T) inside the KL.",
            _wrong_step(detach=False)),
    Variant("sequential", "model_b learned from model_a's predictions after model_a's update. DML updates both "
            "from the same forward pass: compute both logits first, both losses, then step both optimizers.",
            _wrong_step(sequential=True)),
    Variant("kl_swapped", "KL direction swapped: each model must minimise KL(other || own), with the other "
            "model's probabilities as the target: F.kl_div(F.log_softmax(own / T, dim=1), "
            "F.softmax(other.detach() / T, dim=1), reduction='batchmean').", _wrong_step(swapped=True)),
    Variant("no_T_squared", "The KL terms are not multiplied by T**2, so at T > 1 the mimicry term's gradient "
            "shrinks like 1/T**2 next to the cross-entropy.", _wrong_step(t_squared=False)),
    Variant("no_zero_grad", "The update includes gradients left over from the previous step: call "
            "opt_a.zero_grad() and opt_b.zero_grad() before backward().", _wrong_step(zero_grad=False)),
)


def _dml_setup(seed: int):
    """Two different small peers and one batch."""
    torch.manual_seed(seed)
    model_a = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 5))
    model_b = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5))
    x, y = torch.randn(8, 6) * 2, torch.randint(0, 5, (8,))
    return model_a, model_b, x, y


def _run_dml(step, models, x, y, T):
    """Run step on deep copies (stale gradients, an SGD optimizer each); return the updated copies."""
    a, b = copy.deepcopy(models[0]), copy.deepcopy(models[1])
    for p in list(a.parameters()) + list(b.parameters()):  # gradients left over from a previous step
        p.grad = torch.full_like(p, 0.05)
    step(a, b, torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5),
         x.clone(), y.clone(), T)
    return a, b


def _same(m1: nn.Module, m2: nn.Module) -> bool:
    """Whether two modules hold the same parameters."""
    p1, p2 = list(m1.parameters()), list(m2.parameters())
    return len(p1) == len(p2) and all(close(p, q) for p, q in zip(p1, p2))


class MutualStep(Exercise):
    """Exercise 20 of notebook 09_coding_exercises: one deep mutual learning step (Zhang et al., CVPR 2018)."""

    number, key, title, fn_name = 20, "mutual_step", "Deep mutual learning step", "mutual_step"
    variants = DML_VARIANTS
    other_mistakes = ("a_not_updated", "b_not_updated")
    hint_text = ("Forward both models first. For each: loss = F.cross_entropy(own, y) + T**2 * KL(softmax(other "
                 "/ T) || softmax(own / T)), the other's logits detached. Zero both optimizers' gradients, "
                 "backward both losses, step both.")
    solution_code = '''def mutual_step(model_a, model_b, opt_a, opt_b, x, y, T=1.0):
    """Update two peers on (x, y) at once: each learns from the labels and the other's soft predictions."""
    za, zb = model_a(x), model_b(x)               # one forward pass each, before any update
    def loss(own, other):
        kl = F.kl_div(F.log_softmax(own / T, dim=1), F.softmax(other.detach() / T, dim=1),
                      reduction="batchmean")      # KL(other || own): the other is the target
        return F.cross_entropy(own, y) + T**2 * kl
    loss_a, loss_b = loss(za, zb), loss(zb, za)
    opt_a.zero_grad()
    opt_b.zero_grad()
    loss_a.backward()
    loss_b.backward()
    opt_a.step()
    opt_b.step()
'''

    def _check(self, fn, trials=((0, 1.0), (1, 3.0))):
        """Run fn and the reference step from the same weights; name the mistake when the weights differ."""
        for seed, T in trials:
            a0, b0, x, y = _dml_setup(seed)
            a, b = _run_dml(lambda *args: call(fn, *args), (a0, b0), x, y, T)
            ref_a, ref_b = _run_dml(reference_mutual_step, (a0, b0), x, y, T)
            if _same(a, ref_a) and _same(b, ref_b):
                continue
            for variant in self.variants:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        va, vb = _run_dml(variant.fn, (a0, b0), x, y, T)
                except Exception:  # a variant that cannot run here names nothing
                    continue
                if _same(a, va) and _same(b, vb):
                    raise Incorrect(variant.hint, variant.name)
            for model, model0, name in ((a, a0, "a"), (b, b0, "b")):
                if _same(model, model0):
                    raise Incorrect(f"model_{name} did not change: backward its loss and call opt_{name}.step() "
                                    "(and make sure its own logits are not detached).", f"{name}_not_updated")
            raise Incorrect(f"after your step (T={T:g}) the weights differ from the reference step: both "
                            "forward passes first, each loss = CE(own, y) + T**2 * KL(other, detached || own), "
                            "zero_grad, backward, step for both.", None)
