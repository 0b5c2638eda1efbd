"""kd_lessons.runs.lm_measures: the reverse KL per character (teacher's minus own bits/char) cannot be gamed."""
import math

import pytest
import torch
import torch.nn.functional as F

from kd_lessons.generative.text import CharVocab, Corpus
from kd_lessons.generative.transformer import CharTransformer, generate
from kd_lessons.runs.lm_measures import sample_log_probs, sample_measures

CHARS = "".join(chr(c) for c in range(33, 113))  # 80 printable characters


@pytest.fixture(scope="module")
def setting():
    """A random 80-way character teacher (sharp enough to have modes), prompts and a vocabulary to decode with."""
    torch.manual_seed(0)
    vocab = CharVocab(CHARS)
    assert len(vocab.chars) == 80
    teacher = CharTransformer(80, 16, 1, 2, 32).eval()
    with torch.no_grad():
        teacher.head.weight.mul_(40.0)  # random init is nearly uniform; scaled, each context has a few likely chars
    data = torch.randint(0, 80, (2000,))
    corpus = Corpus("random", vocab.decode(data), vocab, data, data[:1500], data[1500:])
    prompts = torch.randint(0, 80, (256, 4), generator=torch.Generator().manual_seed(1))
    return teacher, corpus, prompts


def _measure(model, setting, T=1.0, seed=0):
    teacher, corpus, prompts = setting
    return sample_measures(model, teacher, prompts, 24, corpus, frozenset(), seed=seed, T=T)


def test_sharpening_games_the_old_measure_but_not_the_reverse_kl(setting):
    teacher = setting[0]
    same = _measure(teacher, setting, T=1.0)
    sharp = _measure(teacher, setting, T=0.5)
    collapsed = _measure(teacher, setting, T=0.05)  # nearly greedy
    bits = same["teacher_bpc_of_samples"]
    assert 1.0 < bits < math.log2(80) - 0.5  # a teacher with modes, not a uniform one
    # the old measure, the teacher's bits/char of the samples, prefers the sharpened and the collapsed student
    assert collapsed["teacher_bpc_of_samples"] < sharp["teacher_bpc_of_samples"] < bits - 0.3
    # the new one: a student that samples like the teacher scores ~0, the sharpened ones clearly more
    assert abs(same["reverse_kl_bpc"]) < 1e-6
    assert sharp["reverse_kl_bpc"] > 0.15 and collapsed["reverse_kl_bpc"] > sharp["reverse_kl_bpc"]
    assert same["own_bpc_of_samples"] == pytest.approx(bits)  # the teacher's entropy rate is its own bits
    assert collapsed["own_bpc_of_samples"] < 0.2 * bits       # a collapsed sampler has almost no entropy


def test_the_estimate_agrees_with_the_exact_reverse_kl_along_the_samples(setting):
    """Per character, E_q[log q - log p] over the sampled character equals the mean exact KL(q_T || p) per prefix."""
    teacher, corpus, prompts = setting
    T, P, n = 0.6, prompts.shape[1], 24
    estimates, exact = [], []
    for seed in range(2):
        texts = generate(teacher, prompts, n, T=T, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            logits = teacher(texts[:, :-1])[:, P - 1:]
        logq, logp = F.log_softmax(logits / T, -1), F.log_softmax(logits, -1)
        exact.append(float((logq.exp() * (logq - logp)).sum(-1).mean() / math.log(2)))
        estimates.append(_measure(teacher, setting, T=T, seed=seed)["reverse_kl_bpc"])
    mean_est, mean_exact = sum(estimates) / 2, sum(exact) / 2
    assert mean_exact > 0.1
    assert abs(mean_est - mean_exact) < 0.1 * mean_exact, (estimates, exact)


def test_a_different_student_scores_its_distance_and_bad_input(setting):
    teacher, corpus, prompts = setting
    torch.manual_seed(5)
    other = CharTransformer(80, 16, 1, 2, 32).eval()
    far = _measure(other, setting)
    assert far["reverse_kl_bpc"] > 0.5  # nearly uniform student vs a sharp teacher: far apart
    assert far["teacher_bpc_of_samples"] - far["own_bpc_of_samples"] == pytest.approx(far["reverse_kl_bpc"])
    given = sample_measures(None, teacher, prompts[:, :4], 4, corpus, frozenset(),
                            texts=torch.randint(0, 80, (256, 8)))
    assert math.isnan(given["reverse_kl_bpc"]) and given["teacher_bpc_of_samples"] > 0
    with pytest.raises(ValueError, match="pass a model to sample from"):
        sample_measures(None, teacher, prompts, 4, corpus, frozenset())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_log_probs(teacher, torch.randint(0, 80, (2, 5)), T=0.0)
