"""Deep mutual learning's two-way step as an interview exercise (20): two peers, each the other's teacher.

Introduced in notebook 09_coding_exercises; the scheme is in notebook 11_methods_tour
(kd_lessons.methods.schemes.mutual_learning). The learner's step runs next to a reference step from the
same weights, and the weights are compared; a known wrong step (a MutualMistake) names the mistake.
Two steps are right: the simultaneous one (both peers step on one forward pass, as methods.schemes does)
and Zhang et al.'s Algorithm 1 (model_a steps, the predictions are recomputed, then model_b steps).
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

    detach=False lets each loss reach the other model; swapped=True reverses the KL; t_squared=False drops
    T**2; zero_grad=False keeps stale gradients.
    """

    detach: bool = True
    swapped: bool = False
    t_squared: bool = True
    zero_grad: bool = True


def _dml_loss(z, other, y, T, mistake: MutualMistake):
    """CE(y) + T^2 KL(other's softmax at T || own softmax at T), the other detached; or one mistake."""
    other = other.detach() if mistake.detach else other
    own, target = (other, z) if mistake.swapped else (z, other)
    kl = F.kl_div(F.log_softmax(own / T, dim=1), F.softmax(target / T, dim=1), reduction="batchmean")
    return F.cross_entropy(z, y) + (T * T if mistake.t_squared else 1.0) * kl


def reference_mutual_step(model_a, model_b, opt_a, opt_b, x, y, T=1.0, mistake: MutualMistake | None = None):
    """The simultaneous DML step (or, given a MutualMistake, a known wrong one), for notebook 09_coding_exercises."""
    mistake = MutualMistake() if mistake is None else mistake
    za, zb = model_a(x), model_b(x)
    if mistake.zero_grad:
        opt_a.zero_grad()
        opt_b.zero_grad()
    (_dml_loss(za, zb, y, T, mistake) + _dml_loss(zb, za, y, T, mistake)).backward()
    opt_a.step()
    opt_b.step()


def sequential_mutual_step(model_a, model_b, opt_a, opt_b, x, y, T=1.0, b_first: bool = False):
    """Zhang et al.'s Algorithm 1: a peer steps, predictions recomputed, the other steps. Notebook 09_coding_exercises.

    The paper updates Theta_1 (model_a) first; b_first=True is the same algorithm with the peers' order swapped.
    """
    peers = [(model_a, opt_a, model_b), (model_b, opt_b, model_a)]
    for own, opt, other in (peers[::-1] if b_first else peers):
        z_own, z_other = own(x), other(x)  # recomputed: the second peer sees the first one's update
        opt.zero_grad()
        _dml_loss(z_own, z_other, y, T, MutualMistake()).backward()
        opt.step()


def _wrong_step(**mistake):
    """A DML step with one known mistake (MutualMistake's fields), with the learner's signature."""
    wrong = MutualMistake(**mistake)
    return lambda a, b, opt_a, opt_b, x, y, T=1.0: reference_mutual_step(a, b, opt_a, opt_b, x, y, T, wrong)


DML_VARIANTS = (
    Variant("not_detached", "Each model's loss also sent gradients into the other model: the other model's "
            "predictions are a fixed target within a step. Use softmax(other_logits.detach() / T) inside the KL.",
            _wrong_step(detach=False)),
    Variant("sequential_b_first", "model_a learned from model_b's predictions after model_b's update: Zhang et "
            "al.'s Algorithm 1 with the order swapped. The paper updates model_a (Theta_1) first, recomputes the "
            "predictions, then updates model_b; or step both on one forward pass. Either is accepted.",
            lambda a, b, opt_a, opt_b, x, y, T=1.0: sequential_mutual_step(a, b, opt_a, opt_b, x, y, T, True)),
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


def _same_pair(pair1, pair2) -> bool:
    """Whether two (model_a, model_b) pairs hold the same parameters."""
    return _same(pair1[0], pair2[0]) and _same(pair1[1], pair2[1])


SEQUENTIAL_NOTE = ("your step is Zhang et al.'s Algorithm 1 (model_a steps, the predictions are recomputed, "
                   "then model_b steps), the paper's own order. The simultaneous step (both peers on "
                   "one forward pass, as kd_lessons.methods.schemes does) is accepted too; the two differ only in "
                   "whether model_b sees model_a's update within the step.")


class MutualStep(Exercise):
    """Exercise 20 of notebook 09_coding_exercises: one deep mutual learning step (Zhang et al., CVPR 2018)."""

    number, key, title, fn_name = 20, "mutual_step", "Deep mutual learning step", "mutual_step"
    variants = DML_VARIANTS
    other_mistakes = ("a_not_updated", "b_not_updated")
    hint_text = ("Forward both models first. For each: loss = F.cross_entropy(own, y) + T**2 * KL(softmax(other "
                 "/ T) || softmax(own / T)), the other's logits detached. Zero both optimizers' gradients, "
                 "backward both losses, step both. (The paper's Algorithm 1, which steps model_a, recomputes the "
                 "predictions and then steps model_b, is accepted too.)")
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
    # Zhang et al.'s Algorithm 1 is sequential instead: step model_a, recompute both logits, then step model_b
'''

    def _check(self, fn, trials=((0, 1.0), (1, 3.0))):
        """Run fn next to both right steps from the same weights; name the mistake when it matches neither.

        Returns SEQUENTIAL_NOTE (the Result's message) when fn is the paper's sequential Algorithm 1.
        """
        sequential = []
        for seed, T in trials:
            a0, b0, x, y = _dml_setup(seed)
            learner = _run_dml(lambda *args: call(fn, *args), (a0, b0), x, y, T)
            if _same_pair(learner, _run_dml(reference_mutual_step, (a0, b0), x, y, T)):
                sequential.append(False)
            elif _same_pair(learner, _run_dml(sequential_mutual_step, (a0, b0), x, y, T)):
                sequential.append(True)
            else:
                raise self._mistake(learner, (a0, b0), x, y, T)
        return SEQUENTIAL_NOTE if all(sequential) else None

    def _mistake(self, learner, models, x, y, T) -> Incorrect:
        """The Incorrect naming what the learner's updated pair got wrong (a known variant, a frozen peer, or other)."""
        for variant in self.variants:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    wrong = _run_dml(variant.fn, models, x, y, T)
            except Exception:  # a variant that cannot run here names nothing
                continue
            if _same_pair(learner, wrong):
                return Incorrect(variant.hint, variant.name)
        for model, model0, name in zip(learner, models, "ab"):
            if _same(model, model0):
                return Incorrect(f"model_{name} did not change: backward its loss and call opt_{name}.step() "
                                 "(and make sure its own logits are not detached).", f"{name}_not_updated")
        return Incorrect(f"after your step (T={T:g}) the weights differ from the reference step: both forward "
                         "passes first, each loss = CE(own, y) + T**2 * KL(other, detached || own), zero_grad, "
                         "backward, step for both (or the paper's order: step model_a, recompute, step model_b).",
                         None)
