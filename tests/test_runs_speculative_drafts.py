"""kd_lessons.runs.speculative_drafts: the drafts' rows, their counts, the cache, the tables and the TVD loss."""
import math

import pytest
import torch

from kd_lessons.generative import speculative as sp
from kd_lessons.generative.transformer import CharTransformer
from kd_lessons.runs import speculative_drafts as sd

TINY = dict(context=16, steps=2, batch_size=4, onpolicy_prompt=8, gammas=(1, 3), prompts=1, prompt_len=4,
            new_tokens=8, alpha_windows=4, alpha_samples=2, eval_chars=400, repeats=1, timing_calls=3)


def test_run_rows_counts_tables_and_cache(corpus, teacher, tmp_cache):
    rec = sd.recipe(**TINY)
    result = sd.cached_run(rec, teacher, corpus, seeds=(0, 1))
    assert [(r["seed"], r["draft"]) for r in result["drafts"]] == [(s, d) for s in (0, 1) for d in sd.DRAFTS]
    for r in result["drafts"]:
        assert 0 < r["alpha_heldout"] <= 1 and 0 < r["alpha_target"] <= 1 and r["c"] > 0
    speed = result["speed"]
    assert len(speed) == 2 * len(rec.gammas) * len(sd.DRAFTS)
    for r in speed:
        assert r["new_tokens"] == rec.prompts * rec.new_tokens and r["draft_calls"] == r["proposed"]
        assert r["accepted"] + r["target_calls"] >= r["new_tokens"] and r["rejected"] <= r["target_calls"]
        assert r["alpha_hat"] == sp.alpha_from_counts(r["accepted"], r["rejected"])
        assert r["theoretical_speedup"] == pytest.approx(sp.theoretical_speedup(r["alpha_hat"], r["gamma"],
                                                                                 next(d["c"] for d in result["drafts"]
                                                                                      if d["seed"] == r["seed"] and
                                                                                      d["draft"] == r["draft"])))
    assert list(tmp_cache.glob("sweeps/speculative-quick-*.pt"))
    again = sd.cached_run(rec, teacher, corpus, seeds=(0, 1))
    assert again["speed"] == speed  # read back from the cache, timings included
    table = sd.alpha_table(result)
    assert list(table["draft"]) == list(sd.DRAFTS) and (table["seeds"] == 2).all()
    assert ((0 < table["alpha_measured"]) & (table["alpha_measured"] <= 1)).all()
    st = sd.speed_table(result)
    assert len(st) == len(sd.DRAFTS) * len(rec.gammas) and {"speedup", "cpu_speedup"} <= set(st.columns)
    d = sd.paired_alpha(result, "token KD")
    assert d.n == 2 and d.values[0] == pytest.approx(result["drafts"][1]["alpha_target"]
                                                     - result["drafts"][0]["alpha_target"])


def test_the_same_seed_gives_every_draft_the_same_init(corpus, teacher, one_thread, monkeypatch):
    monkeypatch.setenv("KD_QUICK", "1")
    rec = sd.recipe(**{**TINY, "steps": 1, "lr": 1e-9})  # one step at a negligible rate: the init shows through
    a, _, _ = sd.train_draft("scratch", teacher, corpus, rec, seed=3)
    b, _, _ = sd.train_draft("on-policy TVD", teacher, corpus, rec, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_total_variation_is_one_minus_the_acceptance_rate_and_trains():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 7, generator=g, requires_grad=True), torch.randn(2, 5, 7, generator=g)
    mask = torch.rand(2, 5, generator=g) > 0.4
    tv = sd.total_variation(s, t, mask)
    assert tv.item() == pytest.approx(1 - sp.acceptance_rate(t, s)[mask].mean().item(), rel=1e-5)
    tv.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and s.grad[~mask].abs().sum() == 0


def test_the_tvd_draft_learns_on_its_own_samples(corpus, teacher):
    loss = sd.OnPolicyTVD(teacher, lam=1.0, prompt_len=8, seed=0)
    student = CharTransformer(corpus.vocab_size, 8, 1, 2, 16)
    x = corpus.train[:32].view(2, 16)
    value = loss(student, x, x)
    assert loss.last_sampled and 0 < value.item() < 1 and not torch.equal(loss.last_x[:, 8:], x[:, 8:])
    assert not math.isnan(value.item())


@pytest.mark.parametrize("overrides, words", [({"prompt_len": 10, "new_tokens": 10, "context": 16}, "exceeds"),
                                              ({"drafts": ("scratch", "magic")}, "use some of"),
                                              ({"gammas": (0, 2)}, "integers >= 1"),
                                              ({"onpolicy_prompt": 16, "context": 16}, "shorter than")])
def test_bad_recipes_say_what_to_fix(overrides, words):
    with pytest.raises(ValueError, match=words):
        sd.recipe(**{**TINY, **overrides})
