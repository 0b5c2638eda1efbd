"""Interview coding exercises, learntools style: `ex.check(fn)`, `ex.hint()`, `ex.solution()`.

Introduced in notebook 09_coding_exercises. Six "implement" exercises and eleven "find and fix"
ones (bugs modelled on the source articles' real mistakes, see /work/shared/seeds/ERRATA.md).
check() reports correct / incorrect (naming the known mistake when it recognises one) /
not_attempted, and never raises. `python -m kd_lessons.exercises build-solutions` writes the
solved notebook from the learner copy (cells tagged `solution` replaced by `solution_code`).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

from kd_lessons import losses
from kd_lessons.exercises_bank import check_cached_batches, check_regressor, check_soft_targets
from kd_lessons.exercises_checks import Incorrect, NotAttempted, Result, check_function, check_step
from kd_lessons.exercises_variants import DISTILL_VARIANTS, HINT_VARIANTS, KD_VARIANTS, SOFTMAX_VARIANTS
from kd_lessons.exercises_text import BROKEN, HINTS, SOLUTIONS, STUBS

ROOT = Path(__file__).resolve().parents[1]
LEARNER = ROOT / "notebooks" / "09_coding_exercises.ipynb"
SOLVED = ROOT / "notebooks" / "solutions" / "09_coding_exercises_solved.ipynb"
_RESULTS: dict[str, Result] = {}


def _show(markdown: str) -> None:
    """Markdown inside Jupyter, plain text elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
        if get_ipython() is not None:
            display(Markdown(markdown))
            return
    except ImportError:
        pass
    print(markdown)


class Exercise:
    """One exercise: check(fn) -> Result, hint(), solution(); subclasses set key, title and _check."""

    key = ""
    title = ""
    fn_name = ""
    mistakes: tuple[str, ...] = ()  # names of the known mistakes this checker recognises
    bug: str | None = None  # find-and-fix only: the mistake the broken code must be recognised as

    def check(self, fn) -> Result:
        """Run the learner's fn against the reference; display and return the Result (never raises)."""
        if fn is None:
            result = Result(self.title, "not_attempted", f"define `{self.fn_name}` and pass it to check().")
        elif not callable(fn):
            result = Result(self.title, "incorrect", f"pass the function itself, e.g. check({self.fn_name}) "
                            f"(no parentheses); got a {type(fn).__name__}.")
        else:
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    self._check(fn)
                result = Result(self.title, "correct", "matches the reference on every test input.")
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

    def _check(self, fn) -> None:
        """Raise Incorrect or NotAttempted, or return None when fn is right (each subclass's checker)."""
        raise NotImplementedError

    def hint(self) -> None:
        """Show a nudge in the right direction."""
        _show(f"**Hint ({self.title}):** {HINTS[self.key]}")

    def solution(self) -> None:
        """Show the reference solution."""
        _show(f"**Solution ({self.title}):**\n\n```python\n{self.solution_code}```")

    @property
    def solution_code(self) -> str:
        """The reference answer as the solved notebook shows it (self-contained, setup imports only)."""
        return SOLUTIONS[self.key]

    def starter_code(self) -> str:
        """The learner's cell: a stub, or the broken code with a NotImplementedError line to delete."""
        if self.key in BROKEN:
            first, rest = BROKEN[self.key].split("\n", 1)
            return (f'{first}\n    raise NotImplementedError("Find the bug, fix it, then delete this line.")'
                    f"\n{rest}")
        return STUBS[self.key]


def _logit_trials(shapes=((4, 10, 4.0), (6, 5, 2.0), (3, 7, 3.0))):
    """Random (student_logits, teacher_logits, T); class counts and T differ so scale mistakes show."""
    return [(torch.randn(B, C) * 3, torch.randn(B, C) * 3, T) for B, C, T in shapes]


_STEP_MISTAKES = ("no_teacher", "teacher_updated", "teacher_train_mode", "teacher_grad", "student_not_updated",
                  "no_zero_grad", "return_type", "return_value") + tuple(v.name for v in DISTILL_VARIANTS)


class SoftmaxWithTemperature(Exercise):
    """Exercise 1 of notebook 09_coding_exercises: softmax(logits / T)."""

    mistakes = tuple(v.name for v in SOFTMAX_VARIANTS) + ("detached",)
    key, title, fn_name = "softmax_T", "Softmax with temperature", "softmax_with_temperature"

    def _check(self, fn):
        trials = [(z, T) for z, _, T in _logit_trials()] + [(torch.randn(5, 3) * 3, 0.5)]
        check_function(fn, losses.soften, trials, SOFTMAX_VARIANTS)


class KDLoss(Exercise):
    """Exercise 2 of notebook 09_coding_exercises: T^2 * KL(teacher || student), batchmean."""

    mistakes = tuple(v.name for v in KD_VARIANTS) + ("detached",)
    key, title, fn_name = "kd_loss", "KD loss", "my_kd_loss"

    def _check(self, fn):
        check_function(fn, losses.kd_loss, _logit_trials(), KD_VARIANTS,
                       detach_hint="a .detach() (stop-gradient) on the student's side means nothing "
                       "trains (source 003 put tf.stop_gradient on the student).")


class DistillationLoss(Exercise):
    """Exercise 3 of notebook 09_coding_exercises: alpha * KD + (1 - alpha) * CE."""

    mistakes = tuple(v.name for v in DISTILL_VARIANTS) + ("detached",)
    key, title, fn_name = "distillation_loss", "Distillation loss with alpha", "my_distillation_loss"

    def _check(self, fn):
        trials = [(z, v, torch.randint(0, z.shape[1], (z.shape[0],)), T, alpha)
                  for (z, v, T), alpha in zip(_logit_trials(), (0.7, 0.3, 0.9))]
        check_function(fn, losses.distillation_loss, trials, DISTILL_VARIANTS)


class MakeHintRegressor(Exercise):
    """Exercise 4 of notebook 09_coding_exercises: the FitNets regressor (student -> teacher width)."""

    mistakes = ("no_params", "linear_on_maps", "spatial_changed")
    key, title, fn_name = "hint_regressor", "FitNets regressor", "make_regressor"

    def _check(self, fn):
        check_regressor(fn)


class HintLoss(Exercise):
    """Exercise 5 of notebook 09_coding_exercises: MSE(regressor(student_features), teacher_features)."""

    mistakes = tuple(v.name for v in HINT_VARIANTS) + ("detached",)
    key, title, fn_name = "hint_loss", "FitNets hint loss", "my_hint_loss"

    def _check(self, fn):
        trials = [(torch.randn(B, cs, 4, 4), torch.randn(B, ct, 4, 4), losses.HintRegressor(cs, ct))
                  for B, cs, ct in ((2, 4, 4), (3, 3, 6), (2, 5, 5))]
        check_function(fn, losses.hint_loss, trials, HINT_VARIANTS)


class DistillationStep(Exercise):
    """Exercise 6 of notebook 09_coding_exercises: one step, teacher in eval mode without gradients."""

    mistakes = _STEP_MISTAKES
    key, title, fn_name = "distillation_step", "One distillation training step", "distillation_step"

    def _check(self, fn):
        check_step(fn)


def _fix(name, base, key, title, fn_name, bug):
    """A find-and-fix exercise: the base exercise's checker, a broken starting point, the bug it must name."""
    doc = f"Find-and-fix exercise of notebook 09_coding_exercises: {title[5:]} (base checker: {base.__name__})."
    return type(name, (base,),
                {"key": key, "title": title, "fn_name": fn_name, "bug": bug, "__doc__": doc})


FixReduction = _fix("FixReduction", KDLoss, "fix_reduction", "Fix: KL reduction", "kd_loss_fixed",
                    "reduction_mean")
FixTSquared = _fix("FixTSquared", KDLoss, "fix_T_squared", "Fix: the T squared factor", "kd_loss_fixed",
                   "no_T_squared")
FixLogProbs = _fix("FixLogProbs", KDLoss, "fix_log_probs", "Fix: KL input", "kd_loss_fixed", "probs_as_input")
FixSwapped = _fix("FixSwapped", KDLoss, "fix_swapped", "Fix: KL direction", "kd_loss_fixed", "swapped")
FixOneSided = _fix("FixOneSided", KDLoss, "fix_one_sided_T", "Fix: one-sided temperature", "kd_loss_fixed",
                   "teacher_not_softened")
FixStopGradient = _fix("FixStopGradient", KDLoss, "fix_stop_gradient", "Fix: stop-gradient", "kd_loss_fixed",
                       "detached")
FixRawTargets = _fix("FixRawTargets", KDLoss, "fix_raw_targets", "Fix: logits as targets", "kd_loss_fixed",
                     "raw_logits_as_targets")
FixHardTarget = _fix("FixHardTarget", DistillationLoss, "fix_hard_target", "Fix: the hard target",
                     "distillation_loss_fixed", "teacher_argmax_as_label")
FixTeacherMode = _fix("FixTeacherMode", DistillationStep, "fix_teacher_mode", "Fix: the teacher's mode",
                      "distillation_step_fixed", "teacher_train_mode")


class FixSofteningT(Exercise):
    """Find-and-fix exercise of notebook 09_coding_exercises: T < 1 used to "soften" (source 004)."""

    mistakes = ("not_probabilities", "T_equals_1", "sharpened", "not_temperature")
    key, title, fn_name, bug = "fix_softening_T", "Fix: softening temperature", "soft_targets", "sharpened"

    def _check(self, fn):
        check_soft_targets(fn)


class FixCachedLogits(Exercise):
    """Find-and-fix exercise of notebook 09_coding_exercises: cached logits vs shuffled batches."""

    mistakes = ("misaligned", "not_shuffled")
    key, title, fn_name, bug = "fix_cached_logits", "Fix: cached teacher logits", "aligned_batches", "misaligned"

    def _check(self, fn):
        check_cached_batches(fn)


EXERCISES = {cls.key: cls for cls in (
    SoftmaxWithTemperature, KDLoss, DistillationLoss, MakeHintRegressor, HintLoss, DistillationStep,
    FixReduction, FixTSquared, FixLogProbs, FixSwapped, FixOneSided, FixStopGradient, FixRawTargets,
    FixHardTarget, FixTeacherMode, FixSofteningT, FixCachedLogits)}


def results() -> dict[str, Result]:
    """The latest Result of every exercise checked in this session, by key."""
    return dict(_RESULTS)


def summary() -> dict[str, str]:
    """Print one line per exercise (its latest outcome, or 'not checked') and return them by key."""
    table = {key: (_RESULTS[key].outcome if key in _RESULTS else "not checked") for key in EXERCISES}
    for key, outcome in table.items():
        print(f"{EXERCISES[key].title:<36} {outcome}")
    return table


SOLVED_NOTE = ("> **Solved copy.** Generated from `09_coding_exercises.ipynb` by "
               "`python -m kd_lessons.exercises build-solutions`; do not edit it by hand. Try the "
               "learner copy first.")
ASSERT_ALL = ("# Solved copy only: every exercise above must report \"correct\".\n"
              "outcomes = {key: r.outcome for key, r in exercises.results().items()}\n"
              "assert set(outcomes) == set(exercises.EXERCISES), sorted(set(exercises.EXERCISES) - set(outcomes))\n"
              "assert all(o == \"correct\" for o in outcomes.values()), outcomes\n"
              "print(f\"all {len(outcomes)} exercises correct\")")


def build_solutions(nb):
    """The solved notebook for a learner notebook: solution cells filled in, an all-correct assert added."""
    import nbformat

    solved = copy.deepcopy(nb)
    for cell in solved.cells:
        if "solution" in cell.metadata.get("tags", []):
            key = cell.metadata.get("kd_exercise")
            if key not in EXERCISES:
                raise ValueError(f"a cell tagged 'solution' has kd_exercise={key!r}; set its metadata "
                                 f"'kd_exercise' to one of {sorted(EXERCISES)}.")
            cell.source = EXERCISES[key]().solution_code.rstrip("\n")
    solved.cells[0].source = solved.cells[0].source.rstrip("\n") + "\n\n" + SOLVED_NOTE
    summary = [i for i, c in enumerate(solved.cells) if "summary" in c.metadata.get("tags", [])]
    if len(summary) != 1:
        raise ValueError(f"the learner notebook needs exactly one cell tagged 'summary' (found "
                         f"{len(summary)}); the all-correct assertion goes right after it.")
    at = summary[0] + 1
    solved.cells.insert(at, nbformat.v4.new_code_cell(ASSERT_ALL, id="solved-assert-all",
                                                     metadata={"tags": ["solved-only"]}))
    return solved


def main(argv=None) -> int:
    """`build-solutions` writes the solved copy; `build-solutions --check` exits 1 if it is stale."""
    import nbformat

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "build-solutions":
        print("usage: python -m kd_lessons.exercises build-solutions [--check]")
        return 2
    text = nbformat.writes(build_solutions(nbformat.read(LEARNER, as_version=4)))
    if "--check" in argv:
        stale = not SOLVED.exists() or SOLVED.read_text(encoding="utf-8") != text
        print(f"{SOLVED.name} is {'stale: run build-solutions' if stale else 'up to date'}")
        return int(stale)
    from kd_lessons.storage import atomic_path

    SOLVED.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(SOLVED) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    print(f"wrote {SOLVED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
