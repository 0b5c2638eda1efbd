"""kd_lessons.generative.transformer and lm: causality, sampling, bits per character, the training loop."""
import math

import pytest
import torch
import torch.nn.functional as F

from kd_lessons.generative.lm import LMOptions, cross_entropy_loss, lr_at, train_lm
from kd_lessons.generative.transformer import (
    CharTransformer,
    bits_per_char,
    generate,
    token_log_probs,
    tokens_per_second,
)

V = 11


@pytest.fixture
def model(one_thread):
    torch.manual_seed(0)
    return CharTransformer(V, d_model=16, n_layers=2, n_heads=2, context=12)


def test_logits_shape_and_features(model):
    idx = torch.randint(0, V, (3, 12))
    logits, features = model(idx, return_features=True)
    assert logits.shape == (3, 12, V) and len(features) == 2 and features[0].shape == (3, 12, 16)
    with pytest.raises(ValueError, match="length <= 12"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_changing_future_tokens_leaves_earlier_logits_unchanged(model):
    model.eval()
    idx = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % V
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:], atol=1e-3)  # the changed positions do see their own input


def test_without_the_mask_the_causality_check_fails(model):
    model.eval()
    for block in model.blocks:
        block.attn.mask.fill_(True)  # attend everywhere: the check above must now fail
    idx = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % V
    assert not torch.allclose(model(idx)[:, :7], model(changed)[:, :7], atol=1e-6)


def test_generate_length_determinism_and_mode_restored(model):
    model.train()
    prompt = torch.tensor([1, 2, 3])
    a = generate(model, prompt, 20, generator=torch.Generator().manual_seed(5))  # longer than context: cropped
    b = generate(model, prompt, 20, generator=torch.Generator().manual_seed(5))
    assert a.shape == (23,) and torch.equal(a, b) and torch.equal(a[:3], prompt) and model.training
    batch = generate(model, prompt.repeat(4, 1), 5, T=0.5, top_k=3, generator=torch.Generator().manual_seed(0))
    assert batch.shape == (4, 8) and int(batch.max()) < V


def test_greedy_takes_the_argmax_and_top_k_one_equals_greedy(model):
    prompt = torch.tensor([[4, 5]])
    greedy = generate(model, prompt, 6, greedy=True)
    model.eval()
    with torch.no_grad():
        first = model(prompt)[0, -1].argmax()
    assert greedy[0, 2] == first
    assert torch.equal(greedy, generate(model, prompt, 6, top_k=1, generator=torch.Generator().manual_seed(3)))


def test_generate_rejects_bad_settings(model):
    with pytest.raises(ValueError, match="T=0"):
        generate(model, torch.tensor([1]), 3, T=0)
    with pytest.raises(ValueError, match=f"top_k=0: use None or an integer in 1..{V}"):
        generate(model, torch.tensor([1]), 3, top_k=0)


def test_bits_per_char_of_constant_logits_is_log2_vocab(model):
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # every logit 0: the uniform distribution over V characters
    data = torch.randint(0, V, (500,))
    assert bits_per_char(model, data, context=12) == pytest.approx(math.log2(V), rel=1e-6)


def test_bits_per_char_matches_an_independent_cross_entropy(model):
    data = torch.randint(0, V, (12 * 5 + 1,), generator=torch.Generator().manual_seed(2))
    model.eval()
    with torch.no_grad():
        x, y = data[:-1].reshape(5, 12), data[1:].reshape(5, 12)
        logp = torch.log_softmax(model(x), -1)
        want = -logp.gather(-1, y[..., None]).mean().item() / math.log(2)
    assert bits_per_char(model, data, batch_size=2) == pytest.approx(want, rel=1e-5)


def test_token_log_probs_are_the_log_softmax_of_the_next_id(model):
    idx = torch.randint(0, V, (2, 9))
    got = token_log_probs(model, idx)
    with torch.no_grad():
        want = F.log_softmax(model.eval()(idx[:, :-1]), -1).gather(-1, idx[:, 1:, None])[..., 0]
    assert got.shape == (2, 8) and torch.allclose(got, want, atol=1e-6)


def test_tokens_per_second_is_positive_and_keeps_the_mode(model):
    model.train()
    assert tokens_per_second(model, num_tokens=5) > 0 and model.training


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 10) == pytest.approx(0.1, abs=1e-3)


def test_train_lm_learns_a_repeating_pattern_and_restores_the_mode(model):
    data = torch.arange(V).repeat(60)  # 0 1 2 ... 10 0 1 ...: each next id is determined
    model.eval()
    before = bits_per_char(model, data)
    history = train_lm(model, data, steps=30, lr=2e-2, batch_size=8,
                       options=LMOptions(progress=False, val_data=data[:200], eval_every=15))
    assert not model.training and history["val_step"] == [15, 30]
    assert bits_per_char(model, data) < 0.2 * before  # about log2(11) = 3.46 bits before
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_train_lm_custom_loss_hook_is_used(model):
    calls = []

    def loss_fn(m, x, y):
        calls.append(x.shape)
        return cross_entropy_loss(m, x, y)

    train_lm(model, torch.arange(V).repeat(10), steps=3, batch_size=4, loss_fn=loss_fn,
             options=LMOptions(progress=False))
    assert calls == [(4, 12)] * 3


def test_train_lm_rejects_bad_input(model):
    with pytest.raises(ValueError, match="steps=0"):
        train_lm(model, torch.arange(50), steps=0)
    with pytest.raises(ValueError, match="pass data"):
        train_lm(model, None, steps=1)


def test_train_lm_takes_batches_from_batch_fn(model):
    seen = []

    def batch_fn(generator):
        x = torch.randint(0, V, (2, 12), generator=generator)
        seen.append(x)
        return x, x

    history = train_lm(model, None, steps=2, batch_fn=batch_fn, options=LMOptions(progress=False))
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1]) and history["step"][-1] == 2
