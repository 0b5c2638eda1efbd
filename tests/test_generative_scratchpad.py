"""kd_lessons.generative.scratchpad and kv_cache: the addition task, its tokenizer, masks, scoring and filtering."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kd_lessons.generative import scratchpad as R
from kd_lessons.generative.kv_cache import cached_generate
from kd_lessons.generative.transformer import CharTransformer, generate


@st.composite
def pairs(draw, max_digits=8):
    d = draw(st.integers(1, max_digits))
    low = 0 if d == 1 else 10 ** (d - 1)
    return draw(st.integers(low, 10**d - 1)), draw(st.integers(low, 10**d - 1))


@given(st.text(alphabet=R.VOCAB, max_size=60))
def test_tokenizer_round_trip(text):
    ids = R.encode(text)
    assert ids.dtype == torch.long and len(ids) == len(text) and R.decode(ids) == text
    assert R.decode(ids.tolist()) == text


def test_tokenizer_rejects_foreign_characters_and_ids():
    with pytest.raises(ValueError, match=r"characters \[' ', 'x'\] outside the vocabulary"):
        R.encode("12 x 3")
    with pytest.raises(ValueError, match="expects a str"):
        R.encode(123)
    with pytest.raises(ValueError, match="ids must lie in 0..16"):
        R.decode([0, 17])


def _replay(trace_text: str, a: int, b: int) -> int:
    """Rebuild the sum from the trace alone, checking each step against the digits it claims to add."""
    steps = trace_text.split(R.STEP)[:-1]
    assert len(steps) == len(str(a)), "one step per digit"
    carry, digits = 0, []
    for k, step in enumerate(steps):
        lhs, rhs = step.split("=")
        x, y, c = (int(v) for v in lhs.split("+"))
        assert (x, y, c) == (a // 10**k % 10, b // 10**k % 10, carry), (step, k)
        assert len(rhs) == 2 and int(rhs) == x + y + c
        carry, digits = int(rhs) // 10, [int(rhs) % 10] + digits
    return int("".join(map(str, [carry] + digits)))


@settings(max_examples=200)
@given(pairs())
def test_trace_is_correct_against_python_arithmetic(pair):
    a, b = pair
    assert _replay(R.trace(a, b), a, b) == a + b
    text = R.example(a, b)
    assert text == f"{a}+{b}|{R.trace(a, b)}>{a + b}$"
    assert R.parse_answer(text) == str(a + b) and R.is_correct(text, a, b)
    assert len(text) - len(R.prompt(a, b)) == R.completion_length(len(str(a))) - (a + b < 10 ** len(str(a)))
    assert R.example(a, b, with_trace=False) == f"{a}+{b}>{a + b}$"


def test_trace_of_a_known_problem():
    assert R.trace(357, 681) == "7+1+0=08;5+8+0=13;3+6+1=10;"
    assert R.example(99, 99) == "99+99|9+9+0=18;9+9+1=19;>198$"


def test_bad_problems_raise():
    with pytest.raises(ValueError, match="have 3 and 2 digits"):
        R.trace(123, 45)
    with pytest.raises(ValueError, match="non-negative ints"):
        R.prompt(-1, 2)
    with pytest.raises(ValueError, match=r"digits=0: use an int >= 1"):
        R.make_problems(3, 0)
    with pytest.raises(ValueError, match=r"n=101: use an int in 0..100"):
        R.make_problems(101, 1)


def test_make_problems_are_distinct_seeded_and_exclude():
    first = R.make_problems(500, [1, 2, 3], seed=4)
    assert first == R.make_problems(500, [1, 2, 3], seed=4) and len(set(first)) == 500
    assert {len(str(a)) for a, _ in first} == {1, 2, 3}
    assert all(len(str(a)) == len(str(b)) for a, b in first)
    other = R.make_problems(200, [1, 2, 3], seed=5, exclude=set(first))
    assert not set(other) & set(first)
    assert len(R.make_problems(100, 1)) == 100  # every one-digit problem, when asked for all of them


@pytest.mark.parametrize("text,expected", [("12+34|2+4+0=06;1+3+0=04;>46$", "46"), ("12+34>46$", "46"),
                                           ("12+34>46$>99", "46"), ("12+34>4 6$", None), ("12+34|2+4+0=0", None),
                                           ("12+34>$", None), ("1>2>3$", "3"), ("12+34> 46$", None)])
def test_parse_answer(text, expected):
    assert R.parse_answer(text) == expected


def test_exact_match_scores_the_final_answer_only():
    problems = [(12, 34), (5, 5), (99, 1)]
    texts = ["12+34|2+4+0=07;1+3+0=04;>46$",  # a wrong step but the right answer: counts
             "5+5>010$",                        # a leading zero is not an exact match
             "99+1>100$"]
    assert R.exact_match(texts, problems) == pytest.approx(2 / 3)
    assert [R.is_correct(t, *p) for t, p in zip(texts, problems)] == [True, False, True]
    with pytest.raises(ValueError, match="got 2 texts for 3 problems"):
        R.exact_match(texts[:2], problems)


def test_reversed_answers_are_written_and_scored_backwards():
    assert R.example(357, 681, False, reverse=True) == "357+681>8301$"
    assert R.example(50, 50, False, reverse=True) == "50+50>001$"  # the sum's digits backwards, zeros kept
    assert R.is_correct("50+50>001$", 50, 50, reverse=True) and not R.is_correct("50+50>001$", 50, 50)
    assert R.exact_match(["357+681>8301$", "357+681>1038$"], [(357, 681)] * 2, reverse=True) == 0.5


def test_text_batches_count_the_target_tokens_they_hand_out(one_thread):
    batches = R.TextBatches([R.example(12, 34), R.example(1, 2, False)], 4)
    _, y = batches(torch.Generator().manual_seed(0))
    assert batches.taught == int((y != R.IGNORE).sum()) > 0
    _, y2 = batches(torch.Generator().manual_seed(1))
    assert batches.taught == int((y != R.IGNORE).sum()) + int((y2 != R.IGNORE).sum())


def test_filter_keeps_only_right_answers():
    problems = [(12, 34), (5, 5), (99, 99), (1, 1)]
    texts = [R.example(12, 34), R.example(5, 5, answer=11), R.example(99, 99), "1+1|1+1+0=02;>2"]
    kept, kept_problems = R.filter_correct(texts, problems)
    assert kept == [texts[0], texts[2], texts[3]] and kept_problems == [(12, 34), (99, 99), (1, 1)]
    right_trace_wrong_answer = R.example(12, 34).replace(">46", ">47")
    assert R.filter_correct([right_trace_wrong_answer], [(12, 34)]) == ([], [])
    with pytest.raises(ValueError, match="got 1 texts for 2 problems"):
        R.filter_correct(texts[:1], problems[:2])


def test_masks_cover_trace_and_answer_not_prompt_or_padding():
    texts = [R.example(357, 681), R.example(4, 5, with_trace=False)]
    x, y, mask = R.encode_batch(texts)
    assert x.shape == y.shape == mask.shape == (2, len(texts[0]) - 1)
    for i, text in enumerate(texts):
        start = R._prompt_end(text)  # the prompt's last character: '|' or '>'
        taught = [t for t in range(x.shape[1]) if mask[i, t]]
        assert taught == list(range(start, len(text) - 1))        # predicting text[start + 1:] (to '$')
        assert R.decode(y[i, mask[i]]) == text[start + 1:]
        assert R.decode(x[i, :len(text) - 1]) == text[:-1]
        assert (y[i, ~mask[i]] == R.IGNORE).all()
    assert R.decode(x[1, len(texts[1]) - 1:]) == R.PAD * (x.shape[1] - len(texts[1]) + 1)
    assert texts[1][R._prompt_end(texts[1])] == ">" and mask[1].sum() == len("9$")
    with pytest.raises(ValueError, match="no prompt mark"):
        R.encode_batch(["1234"])
    with pytest.raises(ValueError, match="texts is empty"):
        R.encode_batch([])


def test_masked_cross_entropy_ignores_untaught_positions(one_thread):
    torch.manual_seed(0)
    model = CharTransformer(len(R.VOCAB), 16, 1, 2, 32)
    x, y, mask = R.encode_batch([R.example(12, 34), R.example(7, 8, with_trace=False)])
    logits = model(x)
    expected = F.cross_entropy(logits[mask], y[mask])
    torch.testing.assert_close(R.masked_cross_entropy(model, x, y), expected)


@pytest.mark.parametrize("greedy", [True, False])
def test_cached_generate_matches_generate(one_thread, greedy):
    torch.manual_seed(0)
    model = CharTransformer(len(R.VOCAB), 24, 2, 2, 40)
    for p in model.parameters():  # a spread-out model, so greedy choices are not all ties
        p.data.normal_(0, 0.3)
    prompt = torch.randint(0, len(R.VOCAB), (5, 7))
    slow = generate(model, prompt, 30, greedy=greedy, generator=torch.Generator().manual_seed(1))
    fast = cached_generate(model, prompt, 30, greedy=greedy, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fast, slow)
    assert torch.equal(cached_generate(model, prompt[0], 5, greedy=True), generate(model, prompt[0], 5, greedy=True))
    model.train()
    cached_generate(model, prompt, 2)
    assert model.training  # the caller's mode is restored
    longest = model.context + 1 - prompt.shape[1]  # the last new id needs no position of its own
    full = cached_generate(model, prompt, longest, greedy=True)
    assert full.shape[1] == model.context + 1 and torch.equal(full, generate(model, prompt, longest, greedy=True))
    with pytest.raises(ValueError, match="must be 1..41"):
        cached_generate(model, prompt, longest + 1)
    with pytest.raises(ValueError, match="T=0"):
        cached_generate(model, prompt, 3, T=0)


def test_solve_writes_one_text_per_problem_in_order(one_thread):
    torch.manual_seed(0)
    model = CharTransformer(len(R.VOCAB), 16, 1, 2, 48)
    problems = [(123, 456), (7, 8), (10, 90), (1, 2)]
    texts = R.solve(model, problems, batch_size=2)
    assert [t[:len(R.prompt(*p))] for t, p in zip(texts, problems)] == [R.prompt(*p) for p in problems]
    assert all(t.count(R.END) <= 1 and (t.endswith(R.END) or len(t) == len(R.prompt(*p)) + R.completion_length(
        len(str(p[0])))) for t, p in zip(texts, problems))
    answers_only = R.solve(model, problems, with_trace=False)
    assert all(t.startswith(R.prompt(*p, with_trace=False)) for t, p in zip(answers_only, problems))


def test_classify_sorts_what_rejection_sampling_keeps_and_drops():
    right = R.example(57, 68)
    wrong_step = "25+25|5+5+0=10;2+2+1=06;>50$"
    copy_slip = right.replace(">125$", ">135$")
    assert [R.classify(t, *p) for t, p in [(right, (57, 68)), (wrong_step, (25, 25)), (copy_slip, (57, 68)),
                                           ("25+25|5+5+0=11;>51$", (25, 25)), ("25+25|5+5+0=1", (25, 25))]] \
        == list(R.KINDS)
    kept, _ = R.filter_correct([right, wrong_step, copy_slip], [(57, 68), (25, 25), (57, 68)])
    assert kept == [right, wrong_step]  # the filter keeps a right answer reached through a wrong step
