"""kd_lessons.runs.logit_storage: the arms, a tiny sweep from on-disk stores, its table, cache and the SmolLM2 path."""
import types

import pytest
import torch

from kd_lessons.generative.transformer import CharTransformer
from kd_lessons.runs import logit_storage as L

TINY = dict(size="tiny", context=8, windows=12, shard_windows=5, steps=2, batch_size=4, ks=(1, 3),
            renormalized_ks=(1,), seeds=(0, 1), eval_chars=200)


@pytest.fixture(scope="module")
def teacher(corpus):
    """conftest's small real text, with a teacher of context 8 (the store's windows)."""
    torch.manual_seed(0)
    return CharTransformer(corpus.vocab_size, 16, 1, 2, 8).eval()


def test_recipe_checks_its_fields():
    with pytest.raises(ValueError, match="at least 2 distinct seeds"):
        L.recipe(seeds=(0,))
    with pytest.raises(ValueError, match="value_dtype"):
        L.recipe(value_dtype="int8")
    with pytest.raises(ValueError, match="each k must be >= 1"):
        L.recipe(ks=(0, 5))


def test_arms_put_full_vocabulary_kd_at_k_equal_v():
    names = L.arms(L.recipe(ks=(1, 5, 99), renormalized_ks=(5,)), 80)
    assert names == [("scratch", None, False), ("top-1 + rest", 1, False), ("top-5 + rest", 5, False),
                     (L.FULL, 80, False), ("top-5 renormalised", 5, True)]


def test_sweep_trains_from_the_stores_and_tables_them(corpus, teacher, tmp_cache):
    rec = L.recipe(**TINY)
    result = L.cached_run(rec, teacher, corpus, progress=False)
    V = corpus.vocab_size
    assert {(r["arm"], r["seed"]) for r in result["rows"]} == {(a, s) for a, _, _ in L.arms(rec, V) for s in (0, 1)}
    assert set(result["stores"]) == {1, 3, V}
    for k, size in result["stores"].items():
        assert size["topk_bytes_per_position"] == size["arithmetic_bytes_per_position"] == k * 3 + 2  # fp16, uint8
        assert size["positions"] == 12 * 8
    assert result["stores"][V]["topk_mass"] == pytest.approx(1.0, abs=1e-3)
    rows = {r["arm"]: r for r in L.table(result)}
    assert rows[L.FULL]["minus_full"] is None and rows["top-1 + rest"]["seeds"] == 2
    assert rows["top-1 + rest"]["low"] <= rows["top-1 + rest"]["minus_full"] <= rows["top-1 + rest"]["high"]
    assert rows["top-1 + rest"]["bytes_per_position"] == 5
    (contrast,) = L.rest_vs_renormalised(result)
    renorm = [r["val_bpc"] for r in result["rows"] if r["arm"] == "top-1 renormalised"]
    rest = [r["val_bpc"] for r in result["rows"] if r["arm"] == "top-1 + rest"]
    assert contrast["k"] == 1 and contrast["renormalised_minus_rest"] == pytest.approx(sum(renorm) / 2 - sum(rest) / 2)
    again = L.cached_run(rec, teacher, corpus, progress=False)
    assert again["rows"] == result["rows"]  # from the cache
    stores = list((tmp_cache / "logits").glob("topk-store-*/k1/shard-*.bin"))
    assert len(stores) == 3  # 12 windows in shards of 5


def test_smollm2_is_skipped_with_the_install_command(monkeypatch):
    from kd_lessons.generative import pretrained

    monkeypatch.setattr(pretrained, "missing", lambda: ["transformers"])
    out = L.smollm2("some text")
    assert out["missing"] == ["transformers"] and "pip install" in out["skipped"]


def test_smollm2_path_with_a_stand_in_model(monkeypatch, tmp_cache):
    """Where the extra is installed: real top-k stores per k from the model's logits (a stand-in here)."""
    from kd_lessons.generative import pretrained

    vocab = 300  # > 256: uint16 ids, as SmolLM2's 49,152 need

    class Model(torch.nn.Module):
        def forward(self, x):
            return types.SimpleNamespace(logits=torch.randn(*x.shape, vocab, generator=torch.Generator()))

    monkeypatch.setattr(pretrained, "missing", lambda: [])
    monkeypatch.setattr(pretrained, "load_smollm2", lambda quiet: (Model(), _Tokenizer(vocab)))
    out = L.smollm2("to be or not to be " * 10, ks=(1, 4), context=8, max_windows=3)
    assert out["vocab_size"] == vocab and out["positions"] == 24
    assert out["stores"][4]["topk_bytes_per_position"] == out["stores"][4]["arithmetic_bytes_per_position"] == 18
    assert out["full_fp16_bytes_per_position"] == 600


class _Tokenizer:
    def __init__(self, vocab):
        self.vocab = vocab

    def encode(self, text, add_special_tokens=False):
        return [ord(c) % self.vocab for c in text]

    def __len__(self):
        return self.vocab
