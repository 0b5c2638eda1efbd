"""kd_lessons.generative.lm_objectives (and transfer_data, which it re-exports): each plug-in against an independent
computation (value and gradient), who generates what, the teacher's mode, and the cost meter against counted forward
passes."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kd_lessons.generative import lm_objectives as gm
from kd_lessons.generative import transfer_data
from kd_lessons.generative.divergences import forward_kl
from kd_lessons.generative.kv_cache import cached_positions, uncached_positions
from kd_lessons.generative.lm import LMOptions, train_lm
from kd_lessons.generative.transformer import CharTransformer

V, L, B = 11, 12, 5


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def model(seed=0, d=16, layers=1):
    torch.manual_seed(seed)
    return CharTransformer(V, d, layers, 2, L)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (B, L), generator=g)
    return x, torch.randint(0, V, (B, L), generator=g)


class Recorder(torch.nn.Module):
    """Wraps a model and records, per forward call, its train mode, grad mode and number of positions."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []
        self.vocab_size, self.context = inner.vocab_size, inner.context

    def forward(self, idx):
        self.calls.append((self.training, torch.is_grad_enabled(), idx.numel()))
        return self.inner(idx)


def grads(m):
    return torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None])


def explicit_forward_kl(student_logits, teacher_logits, T, mask=None):
    p = torch.softmax(teacher_logits / T, -1)
    log_q = torch.log_softmax(student_logits / T, -1)
    per = (p * (p.log() - log_q)).sum(-1)
    return per.mean() if mask is None else per[mask].mean()


def test_scratch_loss_is_cross_entropy_skipping_ignored_targets():
    s, (x, y) = model(), batch()
    y[:, :3] = gm.IGNORE
    meter = gm.CostMeter()
    loss = gm.scratch_loss(s, x, y, meter)
    logits = s(x)
    manual = -torch.log_softmax(logits, -1)[:, 3:].gather(-1, y[:, 3:, None]).mean()
    torch.testing.assert_close(loss, manual)
    assert meter.trained_positions == B * (L - 3)


@pytest.mark.parametrize("T, alpha", [(1.0, 1.0), (2.0, 0.7)])
def test_token_kd_matches_an_explicit_formula_value_and_gradient(T, alpha):
    s, t, (x, y) = model(0), model(1, 24, 2), batch()
    t.train()
    plug = gm.TokenKD(t, T=T, alpha=alpha)
    loss = plug(s, x, y)
    loss.backward()
    g_plug = grads(s).clone()
    s.zero_grad()
    with torch.no_grad():
        t.eval()
        teacher_logits = t(x)
    student_logits = s(x)
    ce = F.cross_entropy(student_logits.reshape(-1, V), y.reshape(-1))
    manual = alpha * T ** 2 * explicit_forward_kl(student_logits, teacher_logits, T) + (1 - alpha) * ce
    manual.backward()
    torch.testing.assert_close(loss, manual)
    torch.testing.assert_close(g_plug, grads(s))
    assert all(p.grad is None for p in t.parameters()), "the teacher must get no gradient"


def test_teacher_runs_in_eval_mode_without_grad_and_keeps_its_mode():
    t = Recorder(model(1))
    t.train()
    gm.TokenKD(t)(model(0), *batch())
    assert t.calls == [(False, False, B * L)]
    assert t.training, "the teacher's train mode must be restored"


def test_transfer_corpus_teacher_eval_no_grad_mode_restored_and_prompts_from_the_data():
    data = torch.arange(200) % V
    t = Recorder(model(1))
    t.train()
    out = gm.transfer_corpus(t, data, gm.TransferSettings(n_sequences=6, prompt_len=4, length=L, seed=3), batch_size=4,
                             progress=False)
    ids = out["ids"]
    assert ids.shape == (6, L + 1) and out["prompt_len"] == 4
    assert t.training and all(not training and not grad for training, grad, _ in t.calls)
    for row in ids:  # every prompt is a real window of the data (consecutive ids mod V)
        assert torch.equal((row[1:4] - row[:3]) % V, torch.ones(3, dtype=torch.long))
    counted = sum(n for _, _, n in t.calls)
    assert out["meter"].teacher_generation_positions == counted
    assert out["meter"].teacher_generated == 6 * (L + 1 - 4)


def test_greedy_transfer_corpus_takes_the_teachers_argmax():
    data = torch.arange(200) % V
    t = model(1)
    ids = gm.transfer_corpus(t, data, gm.TransferSettings(3, 4, L, greedy=True), progress=False)["ids"]
    with torch.no_grad():
        for i in range(4, L + 1):
            nxt = t(ids[:, max(0, i - L):i])[:, -1].argmax(-1)
            assert torch.equal(nxt, ids[:, i])


def test_transfer_corpus_with_a_kv_cache_writes_the_same_text_for_fewer_positions():
    data, t = torch.arange(200) % V, model(1)
    slow = gm.transfer_corpus(t, data, gm.TransferSettings(5, 4, L, seed=3), progress=False)
    fast = gm.transfer_corpus(t, data, gm.TransferSettings(5, 4, L, seed=3, kv_cache=True), progress=False)
    assert torch.equal(fast["ids"], slow["ids"])  # the same generator: the same samples
    n = L + 1 - 4
    assert fast["meter"].teacher_generation_positions == cached_positions(5, 4, n)
    assert slow["meter"].teacher_generation_positions == uncached_positions(5, 4, n, L)


def test_sequence_kd_trains_on_the_teachers_part_only():
    transfer = gm.transfer_corpus(model(1), torch.arange(200) % V, gm.TransferSettings(8, 4, L), progress=False)
    plug = gm.SequenceKD(transfer, batch_size=3)
    x, y = plug.batch_fn(torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, L)
    assert (y[:, :3] == gm.IGNORE).all() and (y[:, 3:] >= 0).all()
    s = model(0)
    logits = s(x)
    manual = F.cross_entropy(logits[:, 3:].reshape(-1, V), y[:, 3:].reshape(-1))
    torch.testing.assert_close(plug(s, x, y), manual)
    assert plug.meter.trained_positions == 3 * (L - 3)


def test_sequence_kd_reads_its_rows_in_epochs():
    ids = torch.arange(7)[:, None].repeat(1, 5)  # row r holds r everywhere: x[:, 0] names the row
    plug = gm.SequenceKD({"ids": ids, "prompt_len": 2}, batch_size=3)
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat([plug.batch_fn(gen)[0][:, 0] for _ in range(7)])  # 21 rows = 3 epochs of 7
    for epoch in drawn.view(3, 7):
        assert sorted(epoch.tolist()) == list(range(7))  # every row once before any repeats
    assert not torch.equal(drawn[:7], drawn[7:14])      # each epoch has its own shuffle


def confident_student(token=3):
    s = model(0)
    with torch.no_grad():
        s.head.bias[token] = 60.0  # samples are always `token`
    return s


@pytest.mark.parametrize("divergence", ["jsd", "reverse", "forward"])
def test_on_policy_samples_come_from_the_student_and_the_loss_matches(divergence):
    s, t, (x, y) = confident_student(), model(1), batch()
    x[:, 4:] = 7  # the corpus continues with 7s, the student writes 3s
    plug = gm.OnPolicyKD(t, divergence, beta=0.3, lam=1.0, prompt_len=4, seed=0)
    loss = plug(s, x, y)
    assert plug.last_sampled
    assert torch.equal(plug.last_x[:, :4], x[:, :4]) and (plug.last_x[:, 4:] == 3).all()
    xs = plug.last_x
    with torch.no_grad():
        p = torch.softmax(t(xs), -1)[:, 3:]
    q = torch.softmax(s(xs), -1)[:, 3:]
    if divergence == "reverse":
        manual = (q * (q.log() - p.log())).sum(-1).mean()
    elif divergence == "forward":
        manual = (p * (p.log() - q.log())).sum(-1).mean()
    else:
        m = 0.3 * p + 0.7 * q
        manual = (0.3 * (p * (p.log() - m.log())).sum(-1) + 0.7 * (q * (q.log() - m.log())).sum(-1)).mean()
    torch.testing.assert_close(loss, manual, rtol=1e-4, atol=1e-6)
    s.zero_grad()
    loss.backward()
    g = grads(s).clone()
    s.zero_grad()
    manual.backward()
    torch.testing.assert_close(g, grads(s), rtol=1e-3, atol=1e-6)


def test_on_policy_with_lam_zero_uses_the_corpus_on_every_position():
    s, t, (x, y) = model(0), model(1), batch()
    plug = gm.OnPolicyKD(t, "forward", lam=0.0, prompt_len=4)
    loss = plug(s, x, y)
    assert not plug.last_sampled and torch.equal(plug.last_x, x)
    with torch.no_grad():
        teacher_logits = t(x)
    torch.testing.assert_close(loss, explicit_forward_kl(s(x), teacher_logits, 1.0))


def test_cost_meter_counts_what_the_models_actually_computed():
    data = torch.arange(500) % V
    s, t = Recorder(model(0)), Recorder(model(1))
    plug = gm.OnPolicyKD(t, "jsd", lam=0.5, prompt_len=5, seed=1)
    train_lm(s, data, steps=8, batch_size=B, loss_fn=plug, options=LMOptions(context=L, progress=False, device="cpu"))
    m = plug.meter
    sampling = sum(n for training, _, n in s.calls if not training)  # generate runs the student in eval mode
    training = sum(n for tr, _, n in s.calls if tr)
    assert m.sampled_batches + m.corpus_batches == 8 and 0 < m.sampled_batches < 8
    assert m.student_generation_positions == sampling
    assert m.student_generated == m.sampled_batches * B * (L - 5)
    assert m.teacher_positions == sum(n for _, _, n in t.calls) == training == 8 * B * L
    assert m.trained_positions == m.sampled_batches * B * (L - 4) + m.corpus_batches * B * L


def test_topk_pool_holds_the_teachers_sorted_top_k_log_probs():
    t = model(1)
    pool = gm.topk_pool(t, torch.arange(300) % V, n_windows=7, context=L, k=4, batch_size=3, progress=False)
    with torch.no_grad():
        full = torch.log_softmax(t(pool["x"]), -1)
    values, idx = full.topk(4, dim=-1)
    torch.testing.assert_close(pool["logprobs"], values)
    assert torch.equal(pool["idx"].long(), idx) and pool["meter"].teacher_positions == 7 * L


def test_topk_with_k_equal_to_the_vocabulary_is_forward_kl_value_and_gradient():
    t = model(1)
    pool = gm.topk_pool(t, torch.arange(300) % V, n_windows=6, context=L, k=V, progress=False)
    for renormalize in (True, False):
        s = model(0)
        plug = gm.TopKKD(pool, V, batch_size=4, renormalize=renormalize)
        x, y = plug.batch_fn(torch.Generator().manual_seed(0))
        loss = plug(s, x, y)
        loss.backward()
        g = grads(s).clone()
        s.zero_grad()
        with torch.no_grad():
            teacher_logits = t(x)
        manual = forward_kl(s(x), teacher_logits)
        manual.backward()
        torch.testing.assert_close(loss, manual, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(g, grads(s), rtol=1e-3, atol=1e-6)


def test_topk_renormalised_vs_rest_bucket_differ_for_small_k():
    t = model(1, 24, 2)
    with torch.no_grad():
        t.head.weight.mul_(40)  # a confident teacher: top-2 mass well below 1 but far from uniform
    pool = gm.topk_pool(t, torch.arange(300) % V, n_windows=6, context=L, k=2, progress=False)
    s = model(0)
    a, b = (gm.TopKKD(pool, 2, 4, renormalize=r) for r in (True, False))
    x, y = a.batch_fn(torch.Generator().manual_seed(0))
    b.rows = a.rows
    p = pool["logprobs"][a.rows].exp()
    q = torch.softmax(s(x), -1).gather(-1, pool["idx"][a.rows].long())
    pn = p / p.sum(-1, keepdim=True)
    renorm = (pn * (pn.log() - q.log())).sum(-1).mean()
    P, Q = p.sum(-1), q.sum(-1)
    rest = ((p * (p.log() - q.log())).sum(-1) + (1 - P) * ((1 - P).log() - (1 - Q).log())).mean()
    torch.testing.assert_close(a(s, x, y), renorm, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b(s, x, y), rest, rtol=1e-4, atol=1e-6)


def test_bad_input_is_explained():
    t = model(1)
    with pytest.raises(ValueError, match="alpha must be a number in"):
        gm.TokenKD(t, alpha=1.5)
    with pytest.raises(ValueError, match="divergence must be one of"):
        gm.OnPolicyKD(t, "wasserstein")
    with pytest.raises(ValueError, match="lam must be a probability"):
        gm.OnPolicyKD(t, lam=2)
    with pytest.raises(ValueError, match="prompt_len=12 must be shorter than the windows"):
        gm.OnPolicyKD(t, lam=1.0, prompt_len=12)(model(0), *batch())
    with pytest.raises(ValueError, match="n_sequences=2, prompt_len=20"):
        gm.transfer_corpus(t, torch.arange(100) % V, gm.TransferSettings(2, 20, L), progress=False)
    with pytest.raises(ValueError, match="transfer must be the dict of transfer_corpus"):
        gm.SequenceKD({"ids": torch.zeros(3)}, 2)
    pool = gm.topk_pool(t, torch.arange(300) % V, 3, L, 2, progress=False)
    with pytest.raises(ValueError, match="k=5: the pool holds the top 2"):
        gm.TopKKD(pool, 5, 2)
    with pytest.raises(ValueError, match="needs its own batches"):
        gm.TopKKD(pool, 2, 2)(model(0), *batch())


def test_cached_transfer_corpus_is_written_once_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    data, t = torch.arange(200) % V, model(1)
    first = gm.cached_transfer_corpus(t, data, gm.TransferSettings(5, 4, L, seed=2), progress=False)
    assert not first["from_cache"]
    files = list(tmp_path.rglob("transfer-corpus-*.pt"))
    assert len(files) == 1
    again = gm.cached_transfer_corpus(t, data, gm.TransferSettings(5, 4, L, seed=2), progress=False)
    assert again["from_cache"] and torch.equal(again["ids"], first["ids"])
    assert again["meter"] == first["meter"]
    files[0].write_bytes(b"corrupt")
    with pytest.warns(UserWarning, match="sha256|corrupt"):
        rebuilt = gm.cached_transfer_corpus(t, data, gm.TransferSettings(5, 4, L, seed=2), progress=False)
    assert not rebuilt["from_cache"] and torch.equal(rebuilt["ids"], first["ids"])
    other = gm.cached_transfer_corpus(model(2), data, gm.TransferSettings(5, 4, L, seed=2),  # another teacher
                                      progress=False)
    assert not other["from_cache"] and len(list(tmp_path.rglob("transfer-corpus-*.pt"))) == 2


@given(T=st.floats(0.5, 4.0), seed=st.integers(0, 3))
@settings(max_examples=10, deadline=None)
def test_a_student_equal_to_its_teacher_has_nothing_left_to_learn(T, seed):
    t = model(seed)
    s = model(seed)
    x, y = batch(seed)
    assert gm.TokenKD(t, T=T)(s, x, y).item() == pytest.approx(0.0, abs=1e-5)
    for divergence in gm.DIVERGENCES:
        loss = gm.OnPolicyKD(t, divergence, lam=1.0, prompt_len=4, seed=seed)(s, x, y)
        assert loss.item() == pytest.approx(0.0, abs=1e-5)
    assert gm.TokenKD(t, T=T)(model(seed + 10), x, y).item() > 1e-4  # and a different student has


def test_lm_objectives_re_exports_what_the_teacher_prepares():
    for name in transfer_data.__all__:
        assert getattr(gm, name) is getattr(transfer_data, name) and name in gm.__all__
