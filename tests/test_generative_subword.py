"""kd_lessons.generative.subword: the byte-level BPE, its cache, its token strings and bits per character."""
import math

import pytest
import torch
import torch.nn.functional as F

from kd_lessons.generative.subword import SubwordVocab, bits_per_character, load_subword_corpus, train_bpe
from kd_lessons.generative.text import CharVocab
from kd_lessons.generative.transformer import CharTransformer

TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n") * 20


@pytest.fixture(scope="module")
def vocab():
    return train_bpe(TEXT, 300)


def test_training_is_deterministic_and_sized(vocab):
    again = train_bpe(TEXT, 300)
    assert again.tokenizer_json == vocab.tokenizer_json
    assert vocab.size == 300 and len(vocab.strings) == 300
    assert any(len(s) > 3 for s in vocab.strings)  # real merges, not only bytes


def test_tokens_map_back_to_the_text(vocab):
    ids = vocab.encode(TEXT)
    assert ids.dtype == torch.int64 and len(ids) < 0.75 * len(TEXT)  # it compresses
    assert vocab.decode(ids) == TEXT
    assert int(vocab.char_lengths[ids].sum()) == len(TEXT)
    assert "".join(vocab.strings[i] for i in ids.tolist()) == TEXT
    unseen = "Zebra quartz!"  # characters the training text lacks still encode (bytes), and decode back
    assert vocab.decode(vocab.encode(unseen)) == unseen


def test_char_table_and_the_tokens_that_coincide(vocab):
    chars = CharVocab.from_text(TEXT)
    table = vocab.char_table(chars)
    for i in (vocab.encode(" the")[0].item(), vocab.encode("T")[0].item()):
        n = len(vocab.strings[i])
        assert chars.decode(table[i, :n]) == vocab.strings[i] and bool((table[i, n:] == -1).all())
    mapped = vocab.single_char_ids(chars)
    assert [vocab.strings[i] for i in mapped.tolist()] == list(chars.chars)
    assert not torch.equal(mapped, torch.arange(chars.size))  # the same character, another id


def test_bad_vocab_size_and_empty_text():
    with pytest.raises(ValueError, match="256 bytes plus at least one merge"):
        train_bpe(TEXT, 256)
    with pytest.raises(ValueError, match="text is empty"):
        train_bpe("", 300)
    with pytest.raises(ValueError, match="ids outside"):
        SubwordVocab(train_bpe(TEXT, 260).tokenizer_json).decode([260])


def test_subword_corpus_is_cached_and_split_like_the_characters(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    sub = load_subword_corpus(corpus, 300)
    assert list((tmp_path / "tensors").glob("bpe-shakespeare-300-*.pt"))
    again = load_subword_corpus(corpus, 300)
    assert torch.equal(again.train, sub.train) and torch.equal(again.val, sub.val)
    cut = len(corpus.train)
    assert sub.vocab.decode(sub.train) == corpus.text[:cut] and sub.vocab.decode(sub.val) == corpus.text[cut:]
    offsets = sub.offsets(sub.val)
    assert offsets[0] == 0 and offsets[-1] == len(corpus.val)
    prefix = sub.val_prefix(1000)
    assert int(sub.vocab.char_lengths[prefix].sum()) <= 1000 < int(sub.vocab.char_lengths[sub.val[:len(prefix) + 1]]
                                                                     .sum())
    assert 1.2 < sub.chars_per_token() < 4  # 300 tokens: 44 merges only


def test_bits_per_character_divides_nats_by_characters(vocab, one_thread):
    torch.manual_seed(0)
    model = CharTransformer(vocab.size, 16, 1, 2, 8).eval()
    ids = vocab.encode(TEXT[:400])
    n = (len(ids) - 1) // 8
    nats = chars = 0.0
    for w in range(n):  # consecutive windows of 8 tokens; each predicts its 8 next tokens
        x, y = ids[w * 8:(w + 1) * 8], ids[w * 8 + 1:(w + 1) * 8 + 1]
        with torch.no_grad():
            nats += F.cross_entropy(model(x[None])[0], y, reduction="sum").item()
        chars += sum(len(vocab.strings[i]) for i in y.tolist())
    assert bits_per_character(model, ids, vocab, 8, batch_size=3) == pytest.approx(nats / chars / math.log(2))
