"""What every checked exercise's tests assert: three outcomes, and each known bug named with its own hint."""
import torch
import torch.nn.functional as F
from torch import nn


def define(code: str, name: str):
    """The function `name` that `code` (a solution or a starter) defines, with torch, F and nn in scope."""
    namespace = {"torch": torch, "F": F, "nn": nn}
    exec(code, namespace)
    return namespace[name]


def assert_three_outcomes(ex, solution=None):
    """Correct for the solution, not attempted for None and the starter, incorrect for a crash (never raised)."""
    assert ex.check(solution or define(ex.solution_code, ex.fn_name)).outcome == "correct"
    assert ex.check(None).outcome == "not_attempted"
    assert ex.check(define(ex.starter_code, ex.fn_name)).outcome == "not_attempted"
    assert ex.check(lambda *a: 1 / 0).outcome == "incorrect"


def assert_named(ex, variant):
    """A known bug gets 'incorrect' with its own name and hint."""
    result = ex.check(variant.fn)
    assert (result.outcome, result.mistake, result.message) == ("incorrect", variant.name, variant.hint)
