"""kd_lessons.generative.cross_tokenizer: the three losses against explicit oracles, positions on a hand example."""
import math

import pytest
import torch
import torch.nn.functional as F

from kd_lessons.generative import cross_tokenizer as xt
from kd_lessons.generative.divergences import forward_kl
from kd_lessons.generative.subword import SubwordVocab, load_subword_corpus
from kd_lessons.generative.text import CharVocab, Corpus, DataUnavailableError, load_text, sample_windows, split
from kd_lessons.generative.transformer import CharTransformer
from kd_lessons.losses import kd_loss


class HandVocab:
    """A subword vocabulary of given token strings (SubwordVocab's table methods, no tokenizer file)."""

    char_table = SubwordVocab.char_table
    single_char_ids = SubwordVocab.single_char_ids

    def __init__(self, strings):
        self.strings, self.size = tuple(strings), len(strings)
        self.char_lengths = torch.tensor([len(s) for s in strings])


STRINGS = ["a", "b", "c", " ", "ab", " c", "ca", "bc a"]
CHARS = CharVocab.from_text("abc ")  # ' '=0, a=1, b=2, c=3


def uld_oracle(s, t):
    """Per position: sort each softmax descending, pad the shorter with zeros, L1; then the mean."""
    out = []
    for s_row, t_row in zip(s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])):
        q = sorted(F.softmax(s_row.double(), -1).tolist(), reverse=True)
        p = sorted(F.softmax(t_row.double(), -1).tolist(), reverse=True)
        n = max(len(q), len(p))
        q, p = q + [0.0] * (n - len(q)), p + [0.0] * (n - len(p))
        out.append(sum(abs(a - b) for a, b in zip(q, p)))
    return sum(out) / len(out)


@pytest.mark.parametrize("vs, vt", [(7, 4), (3, 9), (5, 5)])
def test_uld_is_sort_pad_l1(vs, vt):
    g = torch.Generator().manual_seed(vs * 10 + vt)
    s, t = torch.randn(2, 3, vs, generator=g) * 2, torch.randn(2, 3, vt, generator=g) * 2
    assert xt.uld_loss(s, t).item() == pytest.approx(uld_oracle(s, t), rel=1e-5)
    assert xt.uld_loss(s, t, T=2.0).item() == pytest.approx(uld_oracle(s / 2, t / 2), rel=1e-5)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    per = xt.uld_loss(s, t, reduction="none")
    assert xt.uld_loss(s, t, mask=mask).item() == pytest.approx(per[mask].mean().item(), rel=1e-6)


def test_uld_ignores_identity_and_index_matching_does_not():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 6, 12, generator=g) * 2, torch.randn(2, 6, 8, generator=g) * 2
    perm_s, perm_t = torch.randperm(12, generator=g), torch.randperm(8, generator=g)
    assert xt.uld_loss(s[..., perm_s], t[..., perm_t]).item() == pytest.approx(xt.uld_loss(s, t).item(), rel=1e-6)
    assert xt.index_matched_kl(s[..., perm_s], t).item() != pytest.approx(xt.index_matched_kl(s, t).item(), rel=1e-3)
    assert xt.uld_loss(t[..., perm_t], t).item() == pytest.approx(0.0, abs=1e-6)  # the same shape: zero


def test_index_matched_kl_truncates_positions_and_vocabulary():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 5, 10, generator=g), torch.randn(2, 8, 6, generator=g)
    oracle = forward_kl(s[:, :5, :6], t[:, :5, :6])
    assert xt.index_matched_kl(s, t).item() == pytest.approx(oracle.item(), rel=1e-6)
    with pytest.raises(ValueError, match="index matching pairs"):
        xt.index_matched_kl(s[0], t[0])


def test_first_char_marginal_is_the_brute_force_sum():
    align = xt.CharAlignment(HandVocab(STRINGS), CHARS)
    logits = torch.randn(3, len(STRINGS), generator=torch.Generator().manual_seed(2))
    q = F.softmax(logits, -1)
    brute = torch.zeros(3, CHARS.size)
    for v, text in enumerate(STRINGS):
        brute[:, CHARS.chars.index(text[0])] += q[:, v]
    got = xt.first_char_marginal(logits, align.first_char)
    assert torch.allclose(got, brute, atol=1e-6) and torch.allclose(got.sum(-1), torch.ones(3), atol=1e-6)
    assert align.single_char_ids.tolist() == [3, 0, 1, 2]  # ' ', a, b, c -> their one-character tokens


def test_alignment_loss_is_the_kl_to_the_marginal_and_zero_at_it():
    align = xt.CharAlignment(HandVocab(STRINGS), CHARS)
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 4, len(STRINGS), generator=g), torch.randn(2, 4, CHARS.size, generator=g)
    q = xt.first_char_marginal(s, align.first_char)
    p = F.softmax(t, -1)
    oracle = (p * (p.log() - q.log())).sum(-1).mean()
    assert xt.alignment_loss(s, t, align.first_char).item() == pytest.approx(oracle.item(), rel=1e-5)
    assert xt.alignment_loss(s, q.log(), align.first_char).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="first_char has shape"):
        xt.alignment_loss(s, t, align.first_char[:, :3])


def test_teacher_view_on_a_hand_example():
    """Tokens "ab", " c", "a", "b" spell "ab cab": token j + 1 starts at character 2, 4, 5, 6."""
    align = xt.CharAlignment(HandVocab(STRINGS), CHARS)
    x = torch.tensor([[4, 5, 0, 1], [7, 2, 3, 6]])  # "ab cab" and "bc a" + "c" + " " + "ca" = "bc ac ca"
    chars, rows, mask = align.teacher_view(x, 5)
    assert CHARS.decode(chars[0]) == "ab ca" and CHARS.decode(chars[1]) == "bc ac"
    assert rows.tolist() == [[1, 3, 4, 5], [3, 4, 5, 7]]  # the row that has read exactly the tokens so far
    assert mask.tolist() == [[True, True, True, False], [True, True, False, False]]
    _, _, roomy = align.teacher_view(x, 8)
    assert bool(roomy.all())
    with pytest.raises(ValueError, match="token ids"):
        align.teacher_view(x.float(), 5)


def test_the_teacher_row_sees_exactly_the_students_text(one_thread):
    """The gathered row equals the teacher run on the student's prefix alone (causality + the right offset)."""
    align = xt.CharAlignment(HandVocab(STRINGS), CHARS)
    torch.manual_seed(0)
    teacher = CharTransformer(CHARS.size, 16, 1, 2, 8).eval()
    x = torch.tensor([[4, 5, 0, 1]])
    chars, rows, mask = align.teacher_view(x, 8)
    with torch.no_grad():
        full = teacher(chars)
        for j in range(4):
            prefix = CHARS.encode("".join(STRINGS[i] for i in x[0, :j + 1].tolist()))
            assert torch.allclose(full[0, rows[0, j]], teacher(prefix[None])[0, -1], atol=1e-5)


@pytest.mark.parametrize("kind", xt.KINDS)
def test_the_plugin_trains_and_its_memo_changes_nothing(kind, one_thread):
    align = xt.CharAlignment(HandVocab(STRINGS), CHARS)
    torch.manual_seed(0)
    teacher = CharTransformer(CHARS.size, 16, 1, 2, 12).eval()
    student = CharTransformer(len(STRINGS), 8, 1, 2, 4)
    x, y = torch.randint(0, len(STRINGS), (3, 4)), torch.randint(0, len(STRINGS), (3, 4))
    plain = xt.CrossTokenizerKD(kind, teacher, align, alpha=0.5)(student, x, y)
    memo = {}
    cached = xt.CrossTokenizerKD(kind, teacher, align, alpha=0.5, memo=memo)
    assert cached(student, x, y).item() == pytest.approx(plain.item()) and len(memo) == 1
    assert cached(student, x, y).item() == pytest.approx(plain.item()) and len(memo) == 1
    plain.backward()
    assert student.head.weight.grad is not None and math.isfinite(plain.item())
    assert len(cached.log["kd"]) == 2 and teacher.head.weight.grad is None
    with pytest.raises(ValueError, match="kind="):
        xt.CrossTokenizerKD("KL", teacher, align)


def test_bad_pairs_are_named():
    with pytest.raises(ValueError, match="same positions"):
        xt.uld_loss(torch.zeros(2, 3, 5), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="NaN"):
        xt.uld_loss(torch.full((2, 5), float("nan")), torch.zeros(2, 5))


def test_same_tokenizer_losses_name_both_sizes_and_point_here():
    s, t = torch.zeros(4, 5), torch.zeros(4, 6)
    with pytest.raises(ValueError, match=r"student has 5 classes and the teacher 6.*generative\.cross_tokenizer"):
        kd_loss(s, t, 2.0)
    with pytest.raises(ValueError, match=r"vocabulary mismatch.* 5 tokens.* 6 .*generative\.cross_tokenizer"):
        forward_kl(s[None], t[None])


def test_teacher_view_reads_the_corpus_at_the_windows_offset(tmp_path, monkeypatch, one_thread):
    """On the real corpus and a trained BPE: the teacher's characters are the text where the token window starts."""
    try:
        text = load_text("shakespeare")[:20_000]
    except DataUnavailableError as exc:
        pytest.skip(f"the Shakespeare corpus is not available: {exc}")
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    chars = CharVocab.from_text(text)
    data = chars.encode(text)
    sub = load_subword_corpus(Corpus("shakespeare", text, chars, data, *split(data, 0.2)), 300)
    align = xt.CharAlignment(sub.vocab, chars)
    offsets = sub.offsets(sub.train)
    x, y = sample_windows(sub.train, 12, 5, generator=torch.Generator().manual_seed(0))
    starts = [int(torch.nonzero((sub.train.unfold(0, 12, 1) == row).all(1))[0]) for row in x]
    view, rows, mask = align.teacher_view(x, 24)
    for b, k in enumerate(starts):
        n = min(24, int(offsets[k + 12] - offsets[k]))  # the window's own text, then zeros the rows never use
        assert torch.equal(view[b, :n], data[offsets[k]:offsets[k] + n]) and not view[b, n:].any()
        for j in range(12):  # row j predicts the first character of y[b, j], the token after x[b, :j + 1]
            if mask[b, j]:
                assert offsets[k + j + 1] - offsets[k] - 1 == rows[b, j]
                assert chars.chars[int(data[offsets[k] + rows[b, j] + 1])] == sub.vocab.strings[int(y[b, j])][0]
