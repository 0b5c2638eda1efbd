"""Rejection sampling of a teacher's reasoning traces: keep only those whose final answer is right (exercise 30).

Introduced in notebook 09_coding_exercises; the method is student (e) of notebook
13_reasoning_distillation (`kd_lessons.generative.scratchpad.filter_correct`), after STaR (Zelikman et
al., NeurIPS 2022): sample traces, keep those that reach the right answer, train on them. The checker
names the usual mistakes: judging the trace instead of the answer, comparing raw strings that still
carry the end mark or a newline, looking for the sum anywhere in the text, accepting '046' for 46, and
trusting the teacher's confidence instead of checking.
"""
from __future__ import annotations

from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call


def _answer(text: str):
    """The written answer: digits after the last '>' and before '$' (surrounding whitespace ignored)."""
    body = text.strip().split("$")[0]
    return body.rsplit(">", 1)[1] if ">" in body else None


def _trace(a: int, b: int) -> str:
    """The true scratchpad of a + b (as generative.reasoning.trace), for the trace-checking variant."""
    steps, carry = [], 0
    for x, y in zip(reversed(str(a)), reversed(str(b))):
        total = int(x) + int(y) + carry
        steps.append(f"{x}+{y}+{carry}={total:02d};")
        carry = total // 10
    return "".join(steps)


def reference_keep_correct(texts, problems, confidences):
    """Keep the texts whose final answer is exactly a + b, in their order."""
    return [t for t, (a, b) in zip(texts, problems) if _answer(t) == str(a + b)]


def _int_answer(text, a, b):
    answer = _answer(text)
    return answer is not None and answer.isdigit() and int(answer) == a + b


def _median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


VARIANTS = (
    Variant("checked_the_trace", "You kept the texts whose *trace* is right, so a trace whose steps are right but "
            "whose answer was copied wrongly stays in, and a slip in a step that still ends in the right answer is "
            "thrown out. Rejection sampling (STaR, R1's distillation data) checks only what can be verified cheaply: "
            "the final answer after '>'.",
            lambda texts, problems, c: [t for t, (a, b) in zip(texts, problems) if _trace(a, b) in t]),
    Variant("raw_string", "You compared the raw end of the text, so texts that end in a newline (as generated text "
            "read back from a file does) are all dropped. Strip the whitespace and the '$' end mark, then compare "
            "the answer string.",
            lambda texts, problems, c: [t for t, (a, b) in zip(texts, problems) if t.endswith(f">{a + b}$")]),
    Variant("sum_anywhere", "You kept every text that contains the right sum somewhere, e.g. inside the prompt or a "
            "step. Only the final answer counts: the digits after the last '>'.",
            lambda texts, problems, c: [t for t, (a, b) in zip(texts, problems) if str(a + b) in t]),
    Variant("compared_as_int", "int('046') == 46, but exact match compares the written answer: a student trained on "
            "'046' learns to write a leading zero. Compare the answer string with str(a + b).",
            lambda texts, problems, c: [t for t, (a, b) in zip(texts, problems) if _int_answer(t, a, b)]),
    Variant("trusted_confidence", "You filtered on the teacher's confidence. A confident teacher can be wrong and a "
            "hesitant one right; rejection sampling checks each answer against a + b instead (confidence is what "
            "you use when you *cannot* check).",
            lambda texts, problems, c: [t for t, p in zip(texts, c) if p >= _median(c)]),
)


def _trials():
    """(texts, problems, confidences) cases with every kind of text the mistakes disagree on."""
    right = f"12+34|{_trace(12, 34)}>46$\n"                     # right, ends in a newline
    slip_copy = f"57+68|{_trace(57, 68)}>135$\n"                # steps right, answer copied wrongly (125)
    slip_step = "25+25|5+5+0=10;2+2+1=06;>50$"                  # a wrong step (2+2+1=06) but the right answer
    zero = "20+26>046$"                                         # a leading zero: not an exact match
    cut = f"88+11|{_trace(88, 11)}"                             # cut off before the answer
    both_wrong = "50+49|0+9+0=08;5+4+0=09;>98$"                 # a wrong step and a wrong answer
    in_step = "4+5|4+5+0=09;>8$"                                # wrong answer, but '9' = a + b sits in the step
    plain = f"31+45|{_trace(31, 45)}>76$"                        # right, no newline
    texts = [right, slip_copy, slip_step, zero, cut, both_wrong, in_step, plain]
    problems = [(12, 34), (57, 68), (25, 25), (20, 26), (88, 11), (50, 49), (4, 5), (31, 45)]
    confidences = [-0.9, -0.1, -1.5, -0.2, -0.3, -0.05, -0.15, -2.0]  # the wrong ones look confident
    order = [6, 2, 7, 0, 4, 1, 5, 3]
    return [(texts, problems, confidences),
            ([texts[i] for i in order], [problems[i] for i in order], [confidences[i] for i in order])]


class KeepCorrectTraces(Exercise):
    """Exercise 30 of notebook 09_coding_exercises: filter teacher traces by their final answer (rejection sampling)."""

    number, key, title, fn_name = 30, "keep_correct_traces", "Rejection sampling of traces", "keep_correct"
    variants = VARIANTS
    other_mistakes = ("not_a_list", "reordered")
    hint_text = ("Find the final answer: the digits after the last '>' and before the '$' end mark, with any "
                 "surrounding whitespace stripped. Keep a text when that string equals str(a + b). The trace and "
                 "the confidences are distractions here.")
    solution_code = '''def keep_correct(texts, problems, confidences):
    """Keep the teacher's texts whose final answer is exactly a + b (rejection sampling)."""
    kept = []
    for text, (a, b) in zip(texts, problems):
        body = text.strip().split("$")[0]            # drop whitespace and the end mark
        answer = body.rsplit(">", 1)[1] if ">" in body else None
        if answer == str(a + b):                      # exact match: '046' is not 46's answer
            kept.append(text)
    return kept                                       # the confidences are not needed: we can check
'''

    def _check(self, fn) -> None:
        """fn(texts, problems, confidences) must return the right texts, as a list, in their order."""
        outs, wrong = [], None
        for texts, problems, confidences in _trials():
            out = call(fn, list(texts), list(problems), list(confidences))
            if not isinstance(out, (list, tuple)) or not all(isinstance(t, str) for t in out):
                raise Incorrect(f"return a list of the kept texts (str); got {type(out).__name__}.", "not_a_list")
            expected = reference_keep_correct(texts, problems, confidences)
            outs.append(list(out))
            if list(out) != expected and wrong is None:
                wrong = (list(out), expected)
        if wrong is None:
            return
        for variant in self.variants:
            if all(out == variant.fn(*trial) for out, trial in zip(outs, _trials())):
                raise Incorrect(variant.hint, variant.name)
        out, expected = wrong
        if sorted(out) == sorted(expected):
            raise Incorrect("you kept the right texts but changed their order; keep them in the order given.",
                            "reordered")
        raise Incorrect(f"kept {len(out)} texts where {len(expected)} have the right final answer; e.g. you kept "
                        f"{[t for t in out if t not in expected][:1]} and dropped "
                        f"{[t for t in expected if t not in out][:1]}.", None)
