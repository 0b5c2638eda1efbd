"""kd_lessons.runs.cross_tokenizer_students: the comparison's rows, logs, cache and paired summaries."""
import pandas as pd
import pytest

from kd_lessons.runs import cross_tokenizer_students as cx

TINY = cx.recipe(size="tiny", bpe_vocab=300, token_context=8, steps=4, batch_size=3, eval_chars=300,
                 held_out_windows=2, threads=1)


def test_run_rows_logs_and_cache(corpus, teacher, tmp_cache):
    result = cx.cached_run(TINY, teacher, corpus, seeds=(0, 1), progress=False)
    rows = result["table"]
    assert [(r["method"], r["seed"]) for r in rows] == [(m, s) for s in (0, 1) for m in cx.METHODS]
    assert all(r["val_bpc"] > 0 for r in rows)
    assert {r["tokenizer"] for r in rows if r["method"] in cx.CHAR_METHODS} == {"char"}
    bpe = [r for r in rows if r["method"] not in cx.CHAR_METHODS]
    assert {r["tokenizer"] for r in bpe} == {"BPE-300"} and all("held-out ULD" in r for r in bpe)
    assert set(result["logs"]) == {"index-matched KL", "ULD", "alignment"}
    assert all(len(log["kd"]) == TINY.steps for logs in result["logs"].values() for log in logs.values())
    assert result["bpe_vocab"] == 300 and result["single_char_tokens"] == corpus.vocab_size
    assert result["same_index"] < corpus.vocab_size  # byte-level ids are not the character ids
    assert list(tmp_cache.glob("sweeps/cross-tokenizer-quick-*.pt"))
    again = cx.cached_run(TINY, teacher, corpus, seeds=(0, 1), progress=False)
    assert again["table"] == rows


def test_same_seed_same_windows_for_every_bpe_student(corpus, teacher, tmp_cache):
    """The memo is shared inside one seed: the cross-tokenizer runs see the scratch run's windows."""
    result = cx.run(TINY.replace(methods=("scratch", "ULD")), teacher, corpus, seeds=(3,), progress=False)
    alone = cx.run(TINY.replace(methods=("scratch", "index-matched KL", "ULD")), teacher, corpus, seeds=(3,),
                   progress=False)
    uld = [r["val_bpc"] for r in result["table"] if r["method"] == "ULD"]
    assert uld == [r["val_bpc"] for r in alone["table"] if r["method"] == "ULD"]


def test_summaries_pair_by_seed(corpus, teacher, tmp_cache):
    result = cx.cached_run(TINY, teacher, corpus, seeds=(0, 1), progress=False)
    table = pd.DataFrame(result["table"])
    vs = cx.versus_scratch(result)
    assert list(vs.index) == [m for m in cx.METHODS if m != "scratch"]
    wide = table.pivot_table(index="seed", columns="method", values="val_bpc")
    assert vs.loc["ULD", "mean"] == pytest.approx((wide["ULD"] - wide["scratch"]).mean())
    assert vs.loc["ULD", "low"] <= vs.loc["ULD", "mean"] <= vs.loc["ULD", "high"]
    assert set(vs["verdict"]) <= {"better", "worse", "inconclusive"}
    curve = cx.kd_curve(result, share=0.25)
    logs = result["logs"]["index-matched KL"]
    assert curve[0] == {"first": logs[0]["kd"][0], "last": logs[0]["kd"][-1]}
    assert list(cx.summarize(result).index) == list(cx.METHODS)
    with pytest.raises(ValueError, match="no KD log"):
        cx.kd_curve(result, "scratch")


def test_recipe_checks():
    with pytest.raises(ValueError, match="scratch included"):
        cx.recipe(methods=("ULD",))
    with pytest.raises(ValueError, match="has no field"):
        cx.recipe(stpes=3)
    with pytest.raises(ValueError, match="alpha"):
        cx.recipe(alpha=1.5)
