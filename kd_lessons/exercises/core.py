"""What every exercise shares, so each topic module holds only its own exercises: Result, Exercise, checks.

Introduced in notebook 09_coding_exercises. A check runs the learner's function next to the reference
(kd_lessons.losses) on several inputs, compares values and gradients, and on a mismatch looks for a
known wrong answer (a Variant) to name the mistake. A check never raises: errors become a Result.
"""
from __future__ import annotations

import html
import warnings
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch

# The three outcomes of a check, with their colour and label.
_STYLE = {"correct": ("#1a7f37", "Correct"), "incorrect": ("#cf222e", "Incorrect"),
          "not_attempted": ("#0969da", "Not attempted")}


def _show(text: str, kind: str = "Markdown", rich: str | None = None) -> None:
    """Inside Jupyter display `rich` (or `text`) as Markdown or HTML; elsewhere print `text`."""
    try:
        from IPython import display, get_ipython
        if get_ipython() is not None:
            display.display(getattr(display, kind)(rich or text))
            return
    except ImportError:
        pass
    print(text)


@dataclass
class Result:
    """What check() found, for notebook 09_coding_exercises: correct, incorrect (with a hint), not_attempted."""

    exercise: str
    outcome: str
    message: str
    mistake: str | None = None  # the known mistake's name, when the checker recognised one
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
        """Coloured HTML inside Jupyter, a plain line elsewhere. Introduced in notebook 09_coding_exercises."""
        self._shown = True
        _show(str(self), "HTML", self._repr_html_())


class NotAttempted(Exception):
    """The learner's code still raises NotImplementedError."""


class Incorrect(Exception):
    """The answer is wrong; args = (message, the known mistake's name or None)."""


class Variant(NamedTuple):
    """A known wrong answer, so check() can name the mistake (name, hint, fn). Notebook 09_coding_exercises."""

    name: str
    hint: str
    fn: Callable


EXERCISES: dict[str, type[Exercise]] = {}  # every exercise by key, in notebook order (filled by subclasses)
_RESULTS: dict[str, Result] = {}


class Exercise:
    """One exercise of notebook 09_coding_exercises, learntools style: check(fn) -> Result, hint(), solution()."""

    number = 0  # its number in notebook 09_coding_exercises
    key = title = fn_name = ""
    hint_text = ""
    solution_code = ""  # self-contained: only the notebook's setup imports (torch, F, nn, distillation_loss)
    broken = ""  # find-and-fix exercises: the buggy starting point ...
    bug: str | None = None  # ... and the mistake check() must name when run on it
    variants: tuple[Variant, ...] = ()  # known wrong answers that check_function compares against
    other_mistakes: tuple[str, ...] = ()  # mistakes the checker names by itself, not by a variant
    detach_hint = ""  # what to say when no gradient reaches the student (check_function)

    def __init_subclass__(cls, **kwargs):
        """Register each exercise that sets its own key, keeping EXERCISES in notebook order."""
        super().__init_subclass__(**kwargs)
        if "key" in vars(cls):
            EXERCISES[cls.key] = cls
            ordered = sorted(EXERCISES.values(), key=lambda c: c.number)
            EXERCISES.clear()
            EXERCISES.update((c.key, c) for c in ordered)

    @property
    def mistakes(self) -> tuple[str, ...]:
        """Every mistake check() can name, so tests can cover each. Notebook 09_coding_exercises."""
        return tuple(v.name for v in self.variants) + self.other_mistakes

    @property
    def starter_code(self) -> str:
        """The learner's cell in notebook 09_coding_exercises: the signature or the broken code, made to raise."""
        if self.broken:
            first, rest = self.broken.split("\n", 1)
            stop = '    raise NotImplementedError("Find the bug, fix it, then delete this line.")'
            return f"{first}\n{stop}\n{rest}"
        signature, docstring = self.solution_code.split("\n")[:2]
        return f'{signature}\n{docstring}\n    raise NotImplementedError("Your code here")\n'

    def check(self, fn) -> Result:
        """Check the learner's fn, then show and return the Result (never raises). Notebook 09_coding_exercises."""
        if fn is None:
            result = Result(self.title, "not_attempted", f"define `{self.fn_name}` and pass it to check().")
        elif not callable(fn):
            result = Result(self.title, "incorrect", f"pass the function itself, e.g. check({self.fn_name}) "
                            f"(no parentheses); got a {type(fn).__name__}.")
        else:
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    note = self._check(fn)  # a str says which of several right answers fn is
                result = Result(self.title, "correct",
                                note if isinstance(note, str) else "matches the reference on every test input.")
            except NotAttempted:
                result = Result(self.title, "not_attempted", f"`{self.fn_name}` still raises "
                                "NotImplementedError: write your code, delete the raise, run the cells again.")
            except Incorrect as error:
                result = Result(self.title, "incorrect", error.args[0], error.args[1])
            except Exception as error:  # a checker must never crash the notebook
                result = Result(self.title, "incorrect", f"checking failed: {type(error).__name__}: {error}")
        _RESULTS[self.key] = result
        result.show()
        return result

    def _check(self, fn) -> str | None:
        """Raise Incorrect or NotAttempted, or return when fn is right (a str: the Result's message instead)."""
        check_function(fn, self.reference, self.trials(), self.variants, self.detach_hint)

    def hint(self) -> None:
        """Show a nudge in the right direction. Introduced in notebook 09_coding_exercises."""
        _show(f"**Hint ({self.title}):** {self.hint_text}")

    def solution(self) -> None:
        """Show the reference solution. Introduced in notebook 09_coding_exercises."""
        _show(f"**Solution ({self.title}):**\n\n```python\n{self.solution_code}```")


def results() -> dict[str, Result]:
    """The latest Result of every exercise checked in this session, by key. Notebook 09_coding_exercises."""
    return dict(_RESULTS)


def summary() -> dict[str, str]:
    """Print one line per exercise (latest outcome or 'not checked'); notebook 09_coding_exercises' score."""
    table = {key: (_RESULTS[key].outcome if key in _RESULTS else "not checked") for key in EXERCISES}
    for key, outcome in table.items():
        print(f"{EXERCISES[key].number:>2}. {EXERCISES[key].title:<36} {outcome}")
    return table


# ---------------------------------------------------------------- checking helpers


def call(fn, *args):
    """Run learner code; its errors become NotAttempted or Incorrect. Notebook 09_coding_exercises."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise NotAttempted("the code still raises NotImplementedError") from None
    except Exception as error:  # the learner's code may raise anything: report it
        raise Incorrect(f"your code raised {type(error).__name__}: {error}", None) from None


def close(a, b, rtol=1e-4, atol=1e-6) -> bool:
    """Same shape and values in float64 (NaN equals NaN), False for non-tensors. Notebook 09_coding_exercises."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def logit_trials(shapes=((4, 10, 4.0), (6, 5, 2.0), (3, 7, 3.0))):
    """Random (student_logits, teacher_logits, T) of varied K and T, for notebook 09_coding_exercises."""
    return [(torch.randn(B, C) * 3, torch.randn(B, C) * 3, T) for B, C, T in shapes]


def _fresh(args):
    """Copies of the inputs, the first one a new leaf tensor that records gradients."""
    out = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
    out[0].requires_grad_(True)
    return out


def _grad(out, leaf):
    """d (w * out).sum() / d leaf for a fixed random w (a plain sum would hide softmax gradients)."""
    if not out.requires_grad:
        return None
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (g,) = torch.autograd.grad((out.double() * w).sum(), leaf, allow_unused=True)
    return g


def _short(t: torch.Tensor) -> str:
    """A few numbers of a tensor, for messages."""
    flat = t.detach().flatten()[:4].tolist()
    return "[" + ", ".join(f"{v:.4g}" for v in flat) + (", ...]" if t.numel() > 4 else "]")


def _gradient_problem(out, leaf, expected, ref_leaf, detach_hint=""):
    """What is wrong with the gradient of out w.r.t. leaf, compared with the reference's; None if nothing."""
    g, g_ref = _grad(out, leaf), _grad(expected, ref_leaf)
    if g is None:
        return Incorrect("the values are right but no gradient reaches the student: "
                         + (detach_hint or "remove the .detach() on the student's side."),
                         "detached")
    if not close(g, g_ref):
        return Incorrect("the values are right but the gradients differ from the reference.", None)
    return None


def check_function(fn, reference, trials, variants, detach_hint=""):
    """Compare fn with reference on every trial, values then gradients (notebook 09_coding_exercises)."""
    outs, problems, grad_problems = [], [], []
    for args in trials:
        mine, ref = _fresh(args), _fresh(args)
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
            grad_problem = _gradient_problem(out, mine[0], expected, ref[0], detach_hint)
            if grad_problem is not None:
                grad_problems.append(grad_problem)
    if not problems:
        if grad_problems:
            raise grad_problems[0]
        return
    variant = matching_variant(variants, outs, trials)
    if variant is not None:
        raise Incorrect(variant.hint, variant.name)
    raise problems[0]


def matching_variant(variants, learner_outputs, trials) -> Variant | None:
    """The known wrong answer the learner gave, if any, so its hint names it. Notebook 09_coding_exercises."""
    for variant in variants:
        compared = 0
        for out, args in zip(learner_outputs, trials):
            if out is None:
                continue
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. reduction='mean' warns; that is the point here
                    expected = variant.fn(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
            except Exception:  # the variant cannot run here (e.g. channel counts differ): skip this trial
                continue
            if not close(out, expected):
                break
            compared += 1
        else:
            if compared:
                return variant
    return None
