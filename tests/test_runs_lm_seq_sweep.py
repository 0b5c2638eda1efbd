"""kd_lessons.runs.lm_seq_sweep: seq-KD by transfer-set size (notebook 10, review finding F5)."""
import pytest
from test_runs_lm_students import TINY

from kd_lessons.generative import lm_objectives as gm
from kd_lessons.runs import lm_seq_sweep as sweep

REC = TINY.replace(seq_sweep=(2, 12))  # 3 steps x 4 rows: 12 sequences are read once each


def test_rows_per_size_and_seed_with_nested_transfer_sets(corpus, teacher, tmp_cache, monkeypatch):
    written = []
    real = gm.cached_transfer_corpus

    def spy(teacher, data, settings, progress=True):
        written.append(settings)
        return real(teacher, data, settings, progress=progress)

    monkeypatch.setattr(gm, "cached_transfer_corpus", spy)
    rows = sweep.cached_run(REC, teacher, corpus, seeds=(0, 1), progress=False)
    assert [(r["seed"], r["sequences"]) for r in rows] == [(0, 2), (0, 12), (1, 2), (1, 12)]
    n = sweep.written_per_sequence(REC)
    assert n == REC.context + 1 - REC.seq_prompt
    assert [r["distinct_written"] for r in rows] == [2 * n, 12 * n] * 2
    assert all(r["trained_positions"] == REC.steps * REC.batch_size * n for r in rows)  # same budget at every size
    assert [(s.n_sequences, s.seed) for s in written] == [(12, 0), (12, 1)]   # the largest set, once per seed
    assert rows[0]["val_bpc"] != rows[1]["val_bpc"]                           # the size changes the student
    again = sweep.cached_run(REC, teacher, corpus, seeds=(0, 1), progress=False)
    assert len(written) == 2 and [r["val_bpc"] for r in again] == [r["val_bpc"] for r in rows]  # from the cache


def test_teacher_bill_matches_the_generation_count(corpus, teacher):
    m = sweep.matched_sequences(REC)
    made = gm.transfer_corpus(teacher, corpus.train, gm.TransferSettings(m, REC.seq_prompt, REC.context),
                              progress=False)
    trained = m * sweep.written_per_sequence(REC)
    bill = sweep.teacher_bill(REC, m)
    assert bill["uncached"] == made["meter"].teacher_generation_positions / trained
    P, n = REC.seq_prompt, sweep.written_per_sequence(REC)
    assert bill["kv_cache"] == pytest.approx((P + n - 1) / n)  # the prompt once, then one position per new char
    assert sweep.teacher_bill(REC, m // 2)["kv_cache"] == pytest.approx(bill["kv_cache"] / 2)


def test_bad_sizes_say_what_to_do(corpus, teacher):
    with pytest.raises(ValueError, match="at most 12 sequences"):
        sweep.run(TINY.replace(seq_sweep=(13,)), teacher, corpus, seeds=(0,), progress=False)
    with pytest.raises(ValueError, match="seeds is empty"):
        sweep.run(REC, teacher, corpus, seeds=(), progress=False)
    for bad in ((), (0,), (2.5,), (True,)):
        with pytest.raises(ValueError, match="seq_sweep"):
            TINY.replace(seq_sweep=bad)
