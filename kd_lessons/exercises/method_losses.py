"""Methods beyond Hinton's loss, as interview exercises: DKD's split (18) and RKD's distance loss (19).

Introduced in notebook 09_coding_exercises; the methods are in notebook 11_methods_tour
(kd_lessons.methods). Both are checked against kd_lessons.methods (value and gradient). Deep mutual
learning's two-way step (20) is in exercises.mutual_step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call, check_function, logit_trials
from kd_lessons.methods.logits import dkd_terms
from kd_lessons.methods.relations import rkd_distance_loss

# ---------------------------------------------------------------- exercise 18: DKD's split


def _kl_rows(log_p, log_q):
    """KL(p || q) per row, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(1)


def _dkd_wrong(z, v, y, T, binary_from_student=False, renormalise=True, t_squared=True, full_kl=False):
    """DKD's (TCKD, NCKD) with one chosen mistake: the known wrong answers of exercise 18."""
    z, v = z / T, v / T
    mask = F.one_hot(y, z.shape[1]).bool()
    parts = []
    for s in (z, v):
        log_p = F.log_softmax(s, dim=1)
        p_t = log_p[mask]
        binary = torch.stack([p_t, torch.log1p(-p_t.exp().clamp(max=1 - 1e-7))], dim=1)
        others = (F.log_softmax(s.masked_fill(mask, float("-inf")), dim=1) if renormalise
                  else log_p.masked_fill(mask, 0.0))
        parts.append((binary, others, log_p))
    (b_s, o_s, l_s), (b_t, o_t, l_t) = parts
    tckd = _kl_rows(b_s if binary_from_student else b_t, b_s)
    if full_kl:
        nckd = _kl_rows(l_t, l_s)
    else:
        keep = ~mask
        nckd = ((o_t.exp() * (o_t - o_s)) * keep).sum(1)
    scale = T * T if t_squared else 1.0
    return scale * tckd, scale * nckd


def _coupled_nckd(z, v, y, T):
    """NCKD weighted by (1 - p_t of the teacher), as inside Hinton's KD."""
    tckd, nckd = dkd_terms(z, v, y, T)
    p_t = F.softmax(v / T, dim=1).gather(1, y[:, None]).squeeze(1)
    return tckd, (1 - p_t) * nckd


DKD_VARIANTS = (
    Variant("nckd_target_left_in", "Your NCKD is the KL over all classes, the target included. NCKD compares "
            "the teacher and student only among the non-target classes: drop the target column, then softmax "
            "the remaining logits (divided by T) again so they sum to 1.",
            lambda z, v, y, T: _dkd_wrong(z, v, y, T, full_kl=True)),
    Variant("nckd_not_renormalised", "Your NCKD sums over the non-target classes but uses the full softmax's "
            "probabilities, which no longer sum to 1 once the target is left out. Renormalise: softmax over the "
            "non-target logits only (e.g. set the target logit to -inf before the softmax).",
            lambda z, v, y, T: _dkd_wrong(z, v, y, T, renormalise=False)),
    Variant("no_T_squared", "Both terms are T**2 times too small: multiply TCKD and NCKD by T**2, as in "
            "Hinton's KD, so their gradients do not shrink like 1/T**2 when you raise T.",
            lambda z, v, y, T: _dkd_wrong(z, v, y, T, t_squared=False)),
    Variant("student_pt_both_sides", "Your TCKD is 0 on every row: the binary split [p_t, 1 - p_t] uses the "
            "student's p_t on both sides of the KL. The teacher's side takes p_t from "
            "softmax(teacher_logits / T), the student's from softmax(student_logits / T).",
            lambda z, v, y, T: _dkd_wrong(z, v, y, T, binary_from_student=True)),
    Variant("nckd_weighted", "Your NCKD is multiplied by (1 - p_t) of the teacher: that is the coupling inside "
            "Hinton's KD (KD = TCKD + (1 - p_t) NCKD in the paper's decomposition) which DKD removes. Return NCKD "
            "alone; DKD weighs it with its own beta.", _coupled_nckd),
    Variant("terms_swapped", "The two terms are in the wrong order: return (TCKD, NCKD), target-class "
            "knowledge first.", lambda z, v, y, T: dkd_terms(z, v, y, T)[::-1]),
)


def _stacked(fn):
    """fn returning (tckd, nckd) -> fn returning one [B, 2] tensor, so check_function compares both."""
    def run(*args):
        out = fn(*args)
        if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out) \
                and out[0].shape == out[1].shape:
            return torch.stack([out[0], out[1]], dim=-1)
        return out
    return run


class DKDSplit(Exercise):
    """Exercise 18 of notebook 09_coding_exercises: DKD's per-row (TCKD, NCKD), Zhao et al. (CVPR 2022)."""

    number, key, title, fn_name = 18, "dkd_split", "DKD: target / non-target split", "dkd_split"
    variants, other_mistakes = DKD_VARIANTS, ("detached", "not_a_pair")
    detach_hint = "remove the .detach() on the student's logits (only the teacher is detached)."
    hint_text = ("Divide both logits by T. TCKD: for each row build the binary distribution [p_t, 1 - p_t] from "
                 "each model's softmax and take KL(teacher || student). NCKD: drop the target column, softmax "
                 "the rest again, and take the KL of those. Multiply both by T**2; do not average over rows.")
    solution_code = '''def dkd_split(student_logits, teacher_logits, y, T):
    """Return per-row (TCKD, NCKD), each times T**2: DKD's target and non-target parts of the KD loss."""
    mask = F.one_hot(y, student_logits.shape[1]).bool()
    def parts(logits):
        log_p = F.log_softmax(logits / T, dim=1)
        log_pt = log_p[mask]                                    # log p_t, one per row
        log_rest = torch.logsumexp(log_p.masked_fill(mask, float("-inf")), dim=1)  # log(1 - p_t)
        binary = torch.stack([log_pt, log_rest], dim=1)         # log [p_t, 1 - p_t]
        others = F.log_softmax((logits / T).masked_fill(mask, float("-inf")), dim=1)  # renormalised
        return binary, others.masked_fill(mask, 0.0)
    (b_s, o_s), (b_t, o_t) = parts(student_logits), parts(teacher_logits.detach())
    tckd = (b_t.exp() * (b_t - b_s)).sum(1)
    nckd = (o_t.exp() * (o_t - o_s)).sum(1)                     # the target column adds 0
    return T**2 * tckd, T**2 * nckd
'''

    @staticmethod
    def reference(z, v, y, T):
        """dkd_terms as one [B, 2] tensor."""
        return torch.stack(dkd_terms(z, v, y, T), dim=-1)

    def trials(self):
        """Random logits and labels of varied K and T."""
        return [(z, v, torch.randint(0, z.shape[1], (z.shape[0],)), T) for z, v, T in logit_trials()]

    def _check(self, fn):
        """Insist on a (tckd, nckd) pair of [B] tensors, then compare both with dkd_terms."""
        trials = self.trials()
        z, v, y, T = trials[0]
        out = call(fn, z.clone(), v.clone(), y.clone(), T)
        if not (isinstance(out, (tuple, list)) and len(out) == 2
                and all(isinstance(t, torch.Tensor) and tuple(t.shape) == (len(y),) for t in out)):
            parts = [list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in out] \
                if isinstance(out, (tuple, list)) else None
            got = (f"{type(out).__name__} of {parts}" if parts is not None else
                   (f"a tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__))
            raise Incorrect(f"return a pair (tckd, nckd) of per-row tensors, each of shape [{len(y)}] for a batch "
                            f"of {len(y)} (no mean over rows); got {got}.", "not_a_pair")
        check_function(_stacked(fn), self.reference, trials,
                       tuple(Variant(w.name, w.hint, _stacked(w.fn)) for w in self.variants), self.detach_hint)


# ---------------------------------------------------------------- exercise 19: RKD distance loss


def _rkd_wrong(s, t, normalise=True, loss="huber", diag_in_loss=False, diag_in_mu=False, squared=False):
    """RKD-D with one chosen mistake: the known wrong answers of exercise 19."""
    n = len(s)
    off = 1.0 - torch.eye(n)

    def psi(e):
        d = torch.cdist(e, e)
        d = d.pow(2) if squared else d
        d = d * off
        if not normalise:
            return d
        return d / (d.mean() if diag_in_mu else d.sum() / (n * (n - 1)))
    fn = F.smooth_l1_loss if loss == "huber" else F.mse_loss
    per_pair = fn(psi(s), psi(t.detach()), reduction="none")
    return per_pair.mean() if diag_in_loss or diag_in_mu else (per_pair * off).sum() / (n * (n - 1))


RKD_VARIANTS = (
    Variant("no_normalisation", "You compared raw distances: divide each model's distances by their own mean "
            "over the pairs of the batch (Park et al.'s mu), so a student embedding of another scale "
            "or width is not penalised for its scale, only for the structure.",
            lambda s, t: _rkd_wrong(s, t, normalise=False)),
    Variant("squared_error", "You used the squared error. RKD uses the Huber loss (F.smooth_l1_loss, delta = 1)"
            ": quadratic for small differences, linear for large ones, so outlier pairs do not dominate.",
            lambda s, t: _rkd_wrong(s, t, loss="mse")),
    Variant("diagonal_in_mean", "Your loss is (B - 1) / B times the reference: the final mean included the B "
            "zero-distance pairs (i, i) on the diagonal. Average over the B(B - 1) pairs i != j (the authors' "
            "code averages over all B**2 entries; this course follows the paper's equation).",
            lambda s, t: _rkd_wrong(s, t, diag_in_loss=True)),
    Variant("diagonal_in_mu", "Your mean distance mu included the zero diagonal (d.mean() over the B x B "
            "matrix), so it is too small, and so was the loss's mean. Average distances and the loss over the "
            "pairs i != j only.", lambda s, t: _rkd_wrong(s, t, diag_in_mu=True)),
    Variant("squared_distances", "You used squared distances ||e_i - e_j||**2: take the square root "
            "(torch.cdist gives the Euclidean distance itself).", lambda s, t: _rkd_wrong(s, t, squared=True)),
)


class RKDDistance(Exercise):
    """Exercise 19 of notebook 09_coding_exercises: RKD's distance loss (Park et al., CVPR 2019)."""

    number, key, title, fn_name = 19, "rkd_distance", "RKD distance loss", "rkd_distance"
    variants, other_mistakes = RKD_VARIANTS, ("detached",)
    detach_hint = "remove the .detach() on the student's embeddings (only the teacher is detached)."
    hint_text = ("For each model: the B x B matrix of Euclidean distances (torch.cdist), keep the pairs i != j, "
                 "divide by their mean. Then F.smooth_l1_loss between the student's and the teacher's, "
                 "averaged over those pairs.")
    solution_code = '''def rkd_distance(student_emb, teacher_emb):
    """Return RKD-D: the Huber loss between the two batches' pairwise distances, each divided by its mean."""
    off = ~torch.eye(len(student_emb), dtype=torch.bool, device=student_emb.device)
    def psi(e):
        d = torch.cdist(e, e)[off]      # the B(B - 1) distances of pairs i != j
        return d / d.mean()             # normalised by the mean distance mu
    return F.smooth_l1_loss(psi(student_emb), psi(teacher_emb.detach()))  # Huber, delta = 1
'''
    reference = staticmethod(rkd_distance_loss)

    def trials(self):
        """Embeddings of different widths and scales (the teacher's wider and larger)."""
        return [(torch.randn(b, ds), 3 * torch.randn(b, dt)) for b, ds, dt in ((6, 8, 12), (5, 4, 4), (8, 3, 16))]
