"""Extra checkers for the find-and-fix exercises: soft targets, cached logits and the hint regressor.

Introduced in notebook 09_coding_exercises. Each function raises Incorrect (with a hint naming the
mistake) or NotAttempted from kd_lessons.exercises_checks, and returns None when the answer is right.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.exercises_checks import Incorrect, call, close
from kd_lessons.losses import entropy


def check_soft_targets(fn, shapes=((4, 10), (6, 5), (3, 7))):
    """fn(teacher_logits) must return softmax(teacher_logits / T) for one T > 1: softer, same ranking."""
    for B, C in shapes:
        z = torch.randn(B, C) * 3
        p = call(fn, z.clone())
        if not isinstance(p, torch.Tensor) or p.shape != z.shape:
            got = list(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise Incorrect(f"return a tensor of shape {list(z.shape)} (one distribution per row), got {got}.", None)
        p = p.detach().double()
        if bool((p < 0).any()) or not close(p.sum(dim=1), torch.ones(B)):
            raise Incorrect("each row must be a probability distribution (non-negative, summing to 1 over "
                            "the classes).", "not_probabilities")
        hard = F.softmax(z.double(), dim=1)
        if close(p, hard):
            raise Incorrect("these are the T=1 probabilities: nothing was softened. Use T > 1.", "T_equals_1")
        h, h_hard = entropy(p), entropy(hard)
        if bool((h < h_hard).all()):
            raise Incorrect("your targets are *sharper* than the teacher's plain softmax (lower entropy): "
                            "T < 1 sharpens (source 004 'softened' with temp=0.5). Softening needs T > 1, "
                            "typically 2-20.", "sharpened")
        if bool((p.argmax(dim=1) != z.argmax(dim=1)).any()):
            raise Incorrect("the most likely class changed: a temperature keeps the teacher's ranking.", None)
        centred_z = z.double() - z.double().mean(dim=1, keepdim=True)
        log_p = p.clamp_min(1e-300).log()
        centred_l = log_p - log_p.mean(dim=1, keepdim=True)
        inv_T = float((centred_z * centred_l).sum() / (centred_z**2).sum())
        if not (0 < inv_T < 1) or not close(p, F.softmax(z.double() * inv_T, dim=1), rtol=1e-3, atol=1e-5):
            raise Incorrect("your targets are softer, but they are not softmax(teacher_logits / T) for one "
                            "T > 1 shared by all samples (label smoothing or added noise is not KD's "
                            "softening).", "not_temperature")


def check_cached_batches(fn, N=10, C=4, batch_size=4):
    """fn(x, y, teacher_logits, batch_size, generator) must yield shuffled (xb, yb, tb) that line up."""
    x = torch.arange(N, dtype=torch.float32)[:, None].repeat(1, 3)  # row i is all i: xb reveals its rows
    y, teacher_logits = torch.randint(0, C, (N,)), torch.randn(N, C)
    batches = call(lambda *a: list(fn(*a)), x, y, teacher_logits, batch_size, torch.Generator().manual_seed(1))
    seen, start = [], 0
    for item in batches:
        if not (isinstance(item, (tuple, list)) and len(item) == 3
                and all(isinstance(t, torch.Tensor) for t in item)):
            raise Incorrect("yield (xb, yb, tb) triples of tensors, one per batch.", None)
        xb, yb, tb = item
        idx = xb[:, 0].round().long()
        if not torch.equal(yb, y[idx]):
            raise Incorrect("yb does not line up with xb: index x and y with the same idx.", None)
        if not torch.equal(tb, teacher_logits[idx]):
            positional = teacher_logits[start:start + len(xb)]
            if tb.shape == positional.shape and torch.equal(tb, positional):
                raise Incorrect("the teacher logits are taken by batch position, but the batches are "
                                "shuffled, so batch k's cached logits belong to other images. Index them "
                                "with the same positions as x: teacher_logits[idx].", "misaligned")
            raise Incorrect("tb is not teacher_logits for the rows in xb: use teacher_logits[idx].", None)
        seen += idx.tolist()
        start += len(xb)
    if sorted(seen) != list(range(N)):
        raise Incorrect("one epoch must visit every example exactly once.", None)
    if seen == list(range(N)):
        raise Incorrect("the batches come in order: keep the shuffle (it helps SGD) and index the cached "
                        "logits with idx instead.", "not_shuffled")


def check_regressor(fn, cases=((3, 8, 5, 4), (6, 4, 3, 3), (5, 5, 2, 6))):
    """fn(student_channels, teacher_channels) must return a trainable module [B, Cs, H, W] -> [B, Ct, H, W]."""
    for cs, ct, h, w in cases:
        reg = call(fn, cs, ct)
        if not isinstance(reg, nn.Module):
            raise Incorrect(f"return an nn.Module (e.g. nn.Conv2d), got {type(reg).__name__}.", None)
        params = [p for p in reg.parameters() if p.requires_grad]
        if not params:
            raise Incorrect("the regressor has no trainable parameters: FitNets learns it together with the "
                            "student, so it can map the student's width to the teacher's.", "no_params")
        feats = torch.randn(2, cs, h, w, requires_grad=True)
        try:
            out = call(reg, feats)
        except Incorrect as error:
            msg, name = error.args[0], None
            if "mat1" in msg or "shapes cannot be multiplied" in msg:
                msg += (" nn.Linear acts on the last dimension; for [B, C, H, W] feature maps use "
                        "nn.Conv2d(student_channels, teacher_channels, kernel_size=1).")
                name = "linear_on_maps"
            raise Incorrect(msg, name) from None
        want = (2, ct, h, w)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[1] == ct:
                raise Incorrect(f"channels are right but H, W changed ({got}, expected {list(want)}): use "
                                "kernel_size=1 (or padding) so each pixel stays in place.", "spatial_changed")
            raise Incorrect(f"for [2, {cs}, {h}, {w}] student features the output must be {list(want)} "
                            f"(the teacher's channel count), got {got}.", None)
        out.sum().backward()
        if feats.grad is None or any(p.grad is None for p in params):
            raise Incorrect("no gradient flows through the regressor: remove any .detach() inside it.", None)
