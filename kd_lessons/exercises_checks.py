"""The machinery behind the coding exercises: results, safe calls and the comparison checkers.

Introduced in notebook 09_coding_exercises. Each checker runs the learner's function on several
random inputs next to the reference (kd_lessons.losses), compares values and gradients, and on a
mismatch looks for a known wrong variant (kd_lessons.exercises_variants) to name the mistake.
"""
from __future__ import annotations

import html
import math
import numbers
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from kd_lessons import losses
from kd_lessons.exercises_variants import DISTILL_VARIANTS, matching_variant

OUTCOMES = ("correct", "incorrect", "not_attempted")
_STYLE = {"correct": ("#1a7f37", "Correct"), "incorrect": ("#cf222e", "Incorrect"),
          "not_attempted": ("#0969da", "Not attempted")}


@dataclass
class Result:
    """What check() found: outcome is 'correct', 'incorrect' or 'not_attempted', plus a message."""

    exercise: str
    outcome: str
    message: str
    mistake: str | None = None  # the known variant's name, when the answer matched one
    _shown: bool = field(default=False, repr=False, compare=False)

    def __str__(self) -> str:
        return f"[{_STYLE[self.outcome][1]}] {self.exercise}: {self.message}"

    def _repr_html_(self) -> str:
        colour, label = _STYLE[self.outcome]
        return (f'<div style="border-left:4px solid {colour};padding:4px 8px">'
                f'<b style="color:{colour}">{label}</b> ({html.escape(self.exercise)}): '
                f"{html.escape(self.message)}</div>")

    def _ipython_display_(self) -> None:
        """Show once: check() already displayed it, so the cell's echo of the result stays quiet."""
        if not self._shown:
            self.show()

    def show(self) -> None:
        """Coloured HTML inside Jupyter, a plain line elsewhere."""
        self._shown = True
        try:
            from IPython import get_ipython
            from IPython.display import HTML, display
            if get_ipython() is not None:
                display(HTML(self._repr_html_()))
                return
        except ImportError:
            pass
        print(str(self))


class NotAttempted(Exception):
    """The learner's stub still raises NotImplementedError."""


class Incorrect(Exception):
    """The answer is wrong; args = (message, mistake name or None)."""


def call(fn, *args):
    """Run learner code; turn NotImplementedError into NotAttempted and any other error into Incorrect."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise NotAttempted() from None
    except Exception as error:  # the learner's code may raise anything: report it, never crash
        raise Incorrect(f"your code raised {type(error).__name__}: {error}", None) from None


def close(a, b, rtol=1e-4, atol=1e-6) -> bool:
    """Same shape and values (float64; NaN equals NaN, for NaN-producing variants); False for non-tensors."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def _fresh(args, grad_index):
    """Copies of the inputs, with a new leaf tensor that records gradients at grad_index."""
    out = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
    out[grad_index].requires_grad_(True)
    return out


def _grad(out, leaf):
    """d (w * out).sum() / d leaf for a fixed random w (a plain sum would hide softmax gradients)."""
    if not out.requires_grad:
        return None
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (g,) = torch.autograd.grad((out.double() * w).sum(), leaf, allow_unused=True)
    return g


def check_function(fn, reference, trials, variants, grad_index=0, detach_hint=""):
    """Compare fn to reference on every trial (values, then gradients); raise Incorrect if they differ."""
    outs, problems, grad_problems = [], [], []
    for args in trials:
        mine, ref = _fresh(args, grad_index), _fresh(args, grad_index)
        expected = reference(*ref)
        try:
            out = call(fn, *mine)
            if not isinstance(out, torch.Tensor):
                raise Incorrect(f"your function returned {type(out).__name__}; expected a torch.Tensor "
                                f"of shape {list(expected.shape)}.", None)
        except Incorrect as error:  # keep going: other inputs may still reveal a known mistake
            outs.append(None)
            problems.append(error)
            continue
        outs.append(out)
        if out.shape != expected.shape:
            problems.append(Incorrect(f"your output has shape {list(out.shape)}; expected "
                                      f"{list(expected.shape)}.", None))
        elif not close(out, expected):
            problems.append(Incorrect(f"the values differ from the reference (got {_short(out)}, "
                                      f"expected {_short(expected)}).", None))
        else:
            g, g_ref = _grad(out, mine[grad_index]), _grad(expected, ref[grad_index])
            if g is None:
                grad_problems.append(Incorrect("the values are right but no gradient reaches the student: "
                                               + (detach_hint or "remove the .detach() on the student's side."),
                                               "detached"))
            elif not close(g, g_ref):
                grad_problems.append(Incorrect("the values are right but the gradients differ from the "
                                               "reference.", None))
    if not problems:
        if grad_problems:
            raise grad_problems[0]
        return
    variant = matching_variant(variants, outs, trials, close)
    if variant is not None:
        raise Incorrect(variant.hint, variant.name)
    raise problems[0]


def _short(t: torch.Tensor) -> str:
    """A few numbers of a tensor, for messages."""
    flat = t.detach().flatten()[:4].tolist()
    return "[" + ", ".join(f"{v:.4g}" for v in flat) + (", ...]" if t.numel() > 4 else "]")


# ---------------------------------------------------------------- one training step


def reference_step(student, teacher, optimizer, x, y, T, alpha, loss_fn=None, zero_grad=True):
    """The correct step (or, with loss_fn / zero_grad=False, a known wrong one) for comparisons."""
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(x)
    student.train()
    loss = (loss_fn or losses.distillation_loss)(student(x), teacher_logits, y, T, alpha)
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _step_models(seed: int):
    """A teacher with BatchNorm (so train vs eval mode matters) and a small student, plus one batch."""
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5))
    student = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))
    x, y = torch.randn(8, 6) * 2 + 1, torch.randint(0, 5, (8,))
    for p in student.parameters():  # gradients left over from the previous step
        p.grad = torch.full_like(p, 0.05)
    return teacher.train(), student.train(), x, y


def _run_step(step, seed, T, alpha, **kwargs):
    """Run one step on fresh models; return (student, teacher, loss, grad-enabled flags in teacher forward)."""
    teacher, student, x, y = _step_models(seed)
    flags = []
    hook = teacher.register_forward_hook(lambda m, i, o: flags.append(torch.is_grad_enabled()))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    try:
        loss = step(student, teacher, optimizer, x, y, T, alpha, **kwargs)
    finally:
        hook.remove()
    return student, teacher, loss, flags


def _same_params(a: nn.Module, b: nn.Module) -> bool:
    return all(close(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def check_step(fn, trials=((0, 4.0, 0.7), (1, 2.0, 0.3))):
    """Check one distillation step: teacher untouched (eval, no grad), student updated like the reference."""
    for seed, T, alpha in trials:
        teacher0, student0, _, _ = _step_models(seed)
        student, teacher, loss, flags = _run_step(lambda *a: call(fn, *a), seed, T, alpha)
        ref_student, _, ref_loss, _ = _run_step(reference_step, seed, T, alpha)
        t_now, t_then = teacher.state_dict(), teacher0.state_dict()
        if not flags:
            raise Incorrect("the teacher was never called: compute teacher_logits = teacher(x).", "no_teacher")
        if any(not close(t_now[k], t_then[k]) for k in t_now if "running" not in k and "num_batches" not in k):
            raise Incorrect("the teacher's weights changed: only the student learns; give the optimizer "
                            "student.parameters() only.", "teacher_updated")
        if any(not close(t_now[k], t_then[k]) for k in t_now):
            raise Incorrect("the teacher ran in train mode: its BatchNorm used batch statistics and updated "
                            "its running averages. Call teacher.eval() before teacher(x) (source 000's "
                            "mistake).", "teacher_train_mode")
        if any(p.grad is not None for p in teacher.parameters()) or any(flags):
            raise Incorrect("the teacher's forward pass ran with autograd on: wrap it in torch.no_grad() so "
                            "no graph is built for it and it can never receive gradients.", "teacher_grad")
        if _same_params(student, student0):
            raise Incorrect("the student did not change: call loss.backward() and optimizer.step(), and make "
                            "sure no .detach() (stop-gradient) cuts the student's graph.", "student_not_updated")
        if not _same_params(student, ref_student):
            raise Incorrect(*_explain_step(student, seed, T, alpha))
        if isinstance(loss, torch.Tensor) or not isinstance(loss, numbers.Real):
            raise Incorrect(f"the update is right; return loss.item() (a Python float), not "
                            f"{type(loss).__name__}.", "return_type")
        if not math.isclose(loss, ref_loss, rel_tol=1e-4, abs_tol=1e-6):
            raise Incorrect(f"the update is right but you returned {loss:.5g}; return the loss of this "
                            f"batch, {ref_loss:.5g} (loss.item()).", "return_value")


def _explain_step(student, seed, T, alpha):
    """Name the mistake whose step produces the learner's student, if any."""
    no_zero, _, _, _ = _run_step(reference_step, seed, T, alpha, zero_grad=False)
    if _same_params(student, no_zero):
        return ("the update includes gradients left over from the previous step: call "
                "optimizer.zero_grad() before loss.backward().", "no_zero_grad")
    for variant in DISTILL_VARIANTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the wrong losses may warn (reduction='mean')
                candidate, _, _, _ = _run_step(reference_step, seed, T, alpha, loss_fn=variant.fn)
        except Exception:
            continue
        if _same_params(student, candidate):
            return ("the update matches a step with a wrong loss: " + variant.hint, variant.name)
    return ("the student's parameters after your step differ from the reference step "
            "(teacher.eval(), torch.no_grad(), distillation_loss, zero_grad, backward, step).", None)
