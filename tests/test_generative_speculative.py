"""kd_lessons.generative.speculative: exact samples of the target (chi-square), the counts, the formulas, bad input.

The exactness test: a tiny random target and a deliberately different tiny draft over 5 ids; the 25
two-id continuations of a fixed prompt have an exact target probability (enumerated); N speculative
samples (fixed seed, so deterministic) are compared with it by Pearson's chi-square at a false-alarm rate
of 1e-3. The same test rejects two broken samplers (keep every proposal; resample from p instead of
max(0, p - q)), so it has power against the mistakes it is meant to catch.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from kd_lessons.generative import speculative as sp
from kd_lessons.generative.kv_cache import cached_generate
from kd_lessons.generative.transformer import CharTransformer
from kd_lessons.stats import chi_square_p

V, PROMPT, FALSE_ALARM = 5, torch.tensor([1, 3]), 1e-3


def tiny(seed: int, vocab: int = V, context: int = 8) -> CharTransformer:
    """A random CharTransformer with large weights, so its next-id distributions are peaked and depend on context."""
    torch.manual_seed(seed)
    model = CharTransformer(vocab, 8, 1, 2, context)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.7)
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(1)
    return tiny(0), tiny(1)


def exact_joint(target, prompt, T):
    """p(x1, x2 | prompt) of the target at T, enumerated: [V, V]."""
    with torch.no_grad():
        p1 = F.softmax(target(prompt[None])[0, -1] / T, -1)
        both = torch.cat([prompt.repeat(V, 1), torch.arange(V)[:, None]], dim=1)
        p2 = F.softmax(target(both)[:, -1] / T, -1)
    return (p1[:, None] * p2).double()


def sample_counts(target, draft, gamma, T, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(V, V)
    for _ in range(n):
        ids = sp.speculative_generate(target, draft, PROMPT, 2, gamma=gamma, T=T, generator=g).ids
        counts[ids[-2], ids[-1]] += 1
    return counts


@pytest.mark.parametrize("gamma, T", [(1, 1.0), (2, 0.7)])
def test_speculative_samples_are_the_targets_distribution(pair, gamma, T):
    target, draft = pair
    exact = exact_joint(target, PROMPT, T)
    with torch.no_grad():  # the draft really differs from the target here, so the test means something
        q1 = F.softmax(draft(PROMPT[None])[0, -1] / T, -1)
    assert 0.5 * (exact.sum(1) - q1.double()).abs().sum() > 0.3
    assert chi_square_p(sample_counts(target, draft, gamma, T, 1000), exact) > FALSE_ALARM


def keep_everything(p, q, tokens, u):
    return tokens.shape[0], p[tokens.shape[0]]


VERIFY = sp.verify


def resample_from_p(p, q, tokens, u):
    n, _ = VERIFY(p, q, tokens, u)
    return n, p[n]


@pytest.mark.parametrize("broken", [keep_everything, resample_from_p], ids=lambda f: f.__name__)
def test_the_test_rejects_a_broken_sampler(pair, monkeypatch, broken):
    target, draft = pair
    monkeypatch.setattr(sp, "verify", broken)
    assert chi_square_p(sample_counts(target, draft, 1, 1.0, 300), exact_joint(target, PROMPT, 1.0)) < FALSE_ALARM


def test_a_draft_equal_to_the_target_is_always_accepted(pair):
    target, _ = pair
    out = sp.speculative_generate(target, target, PROMPT, 6, gamma=3, generator=torch.Generator().manual_seed(0))
    # rounds of 3 proposals + 1 bonus id: 4 ids per target call; the last round proposes the 2 ids left
    assert (out.proposed, out.accepted, out.rejected, out.target_calls) == (5, 5, 0, 2)
    assert out.ids.shape == (len(PROMPT) + 6,) and out.ids[:2].tolist() == PROMPT.tolist()
    assert out.alpha_hat == 1.0 and out.tokens_per_call == 3.0


def test_counts_add_up_and_a_seed_repeats(pair):
    target, draft = pair
    a = sp.speculative_generate(target, draft, PROMPT, 6, gamma=2, generator=torch.Generator().manual_seed(4))
    b = sp.speculative_generate(target, draft, PROMPT, 6, gamma=2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.ids, b.ids) and a.ids.shape == (8,)
    assert a.draft_calls == a.proposed and a.accepted <= a.proposed <= 2 * a.target_calls  # one call per proposal
    assert a.rejected <= a.target_calls  # one target call per round, a round ends in at most one rejection
    assert 6 <= a.accepted + a.target_calls <= 7  # each round adds its kept ids + one; the last bonus may be cut


def test_verify_keeps_until_the_first_rejection_and_resamples_the_residual():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0]])
    q = torch.tensor([[0.25, 0.75, 0.0], [0.6, 0.2, 0.2]])
    # token 1 at step 0: p/q = 2/3; u = 0.5 keeps it; token 0 at step 1: p/q = 1/3, u = 0.9 rejects it
    n, dist = sp.verify(p, q, torch.tensor([1, 0]), torch.tensor([0.5, 0.9]))
    assert n == 1 and torch.allclose(dist, torch.tensor([0.0, 0.0, 1.0]))  # max(0, p - q) = [0, 0, 0.4]
    n, dist = sp.verify(p, q, torch.tensor([1, 0]), torch.tensor([0.7, 0.0]))
    assert n == 0 and torch.allclose(dist, torch.tensor([1.0, 0.0, 0.0]))  # max(0, p - q) = [0.25, 0, 0]
    n, dist = sp.verify(p, q, torch.tensor([1, 0]), torch.tensor([0.1, 0.2]))
    assert n == 2 and torch.equal(dist, p[2])  # all kept: the bonus id comes from p after the last proposal


def test_expected_tokens_per_call_matches_a_simulation():
    g = torch.Generator().manual_seed(0)
    for alpha, gamma in ((0.3, 1), (0.7, 4), (0.9, 8)):
        kept = torch.rand(20_000, gamma, generator=g) < alpha
        tokens = kept.int().cumprod(1).sum(1) + 1  # kept until the first rejection, then one more id
        mean, se = tokens.double().mean(), tokens.double().std() / math.sqrt(len(tokens))
        assert abs(mean - sp.expected_tokens_per_call(alpha, gamma)) < 4 * se
    assert sp.expected_tokens_per_call(1.0, 4) == 5.0 and sp.expected_tokens_per_call(0.0, 4) == 1.0


def test_theoretical_speedup_and_alpha_from_counts():
    assert sp.theoretical_speedup(0.8, 4, 0.0) == pytest.approx((1 - 0.8 ** 5) / 0.2)  # a free draft
    assert sp.theoretical_speedup(0.0, 3, 0.5) == pytest.approx(1 / 2.5)  # nothing kept: pure overhead
    assert sp.theoretical_speedup(0.6, 2, 0.1) == pytest.approx((1 - 0.6 ** 3) / (0.4 * 1.2))
    assert sp.alpha_from_counts(6, 2) == 0.75 and math.isnan(sp.alpha_from_counts(0, 0))


def test_acceptance_rate_is_one_minus_total_variation():
    g = torch.Generator().manual_seed(2)
    t, d = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    p, q = F.softmax(t / 0.8, -1), F.softmax(d / 0.8, -1)
    assert torch.allclose(sp.acceptance_rate(t, d, 0.8), 1 - 0.5 * (p - q).abs().sum(-1))
    assert torch.allclose(sp.acceptance_rate(t, t), torch.ones(4))


def test_measured_acceptance_estimates_exact_alpha_on_the_targets_samples(pair):
    target, draft = pair
    g = torch.Generator().manual_seed(1)
    outs = [sp.speculative_generate(target, draft, PROMPT, 6, gamma=1, generator=g) for _ in range(150)]
    accepted, rejected = sum(o.accepted for o in outs), sum(o.rejected for o in outs)
    samples = torch.stack([cached_generate(target, PROMPT, 6, generator=g) for _ in range(150)])
    exact = sp.exact_alpha(target, draft, samples[:, :-1])
    measured = sp.alpha_from_counts(accepted, rejected)
    assert 0.05 < exact < 0.95 and abs(measured - exact) < 4 * math.sqrt(exact * (1 - exact) / (accepted + rejected))


def test_target_only_is_the_cached_sampler(pair):
    target, _ = pair
    out = sp.target_only(target, PROMPT, 5, generator=torch.Generator().manual_seed(3))
    ref = cached_generate(target, PROMPT, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.ids, ref) and out.target_calls == 5


@pytest.mark.parametrize("kwargs, words", [
    ({"gamma": 0}, "gamma=0"), ({"gamma": 2.0}, "integer >= 1"), ({"T": 0.0}, "T=0.0"),
    ({"T": -1}, "temperature > 0"), ({"prompt_idx": torch.tensor([], dtype=torch.long)}, "empty"),
    ({"num_tokens": 7}, "exceeds the context of 8"), ({"draft": "wide"}, "the draft has 6 tokens and the target 5")])
def test_bad_input_says_what_to_do(pair, kwargs, words):
    target, draft = pair
    args = {"target": target, "draft": draft, "prompt_idx": PROMPT, "num_tokens": 3, **kwargs}
    if args["draft"] == "wide":
        args["draft"] = tiny(2, vocab=6)
    with pytest.raises(ValueError, match=words):
        sp.speculative_generate(**args)


def test_exact_alpha_from_a_position_scores_only_the_later_ones(pair):
    target, draft = pair
    windows = torch.randint(0, V, (3, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        rate = sp.acceptance_rate(target(windows), draft(windows))
    assert sp.exact_alpha(target, draft, windows, from_position=2) == pytest.approx(float(rate[:, 2:].mean()))
    with pytest.raises(ValueError, match="from_position=6"):
        sp.exact_alpha(target, draft, windows, from_position=6)
