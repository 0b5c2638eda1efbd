"""kd_lessons.runs.lm_students: text measures, the comparison's table, its cache, summaries and the cost table."""
import pandas as pd
import pytest
import torch

from kd_lessons import cache
from kd_lessons.generative.transformer import CharTransformer
from kd_lessons.runs import lm_students as rg
from kd_lessons.runs.seeds import paired_differences

TINY = rg.recipe(**{"size": "tiny", "context": 16, "steps": 3, "batch_size": 4, "lr": 3e-3, "T": 1.0, "alpha": 1.0,
        "seq_sequences": 6, "seq_prompt": 4, "onpolicy_prompt": 8, "lam": 0.5, "beta": 0.5, "topk": 3,
        "topk_renormalize": True, "topk_windows": 16, "topk_sweep": (1, None), "eval_chars": 400,
        "sample_prompts": 3, "sample_prompt": 6, "sample_chars": 10, "threads": 1, "long_steps": 4,
        "long_methods": ("scratch", rg.WARM_START), "sharpen_T": (0.5,)})


def test_text_measures_count_whole_words_and_bigrams():
    vocabulary = frozenset({"to", "be", "or", "not"})
    # "ab" continues the prompt's word and "qq" is cut at the end: both dropped
    out = rg.text_measures(["xx ab"], ["cd to be or zz to be qq"], vocabulary)
    assert out["words"] == 6                                  # to be or zz to be
    assert out["word_share"] == pytest.approx(5 / 6)
    assert out["distinct_2"] == pytest.approx(4 / 5)          # (to,be) twice among 5 bigrams
    assert rg.word_set("Ham. To be, OR not") == {"ham", "to", "be", "or", "not"}


def test_run_table_columns_cost_and_cache(corpus, teacher, tmp_cache, monkeypatch):
    result = rg.cached_run(TINY, teacher, corpus, seeds=(0, 1), progress=False)
    rows = result["table"]
    assert [r["method"] for r in rows] == list(rg.METHODS) * 2
    for col in ("val_bpc", "agreement", "teacher_bpc_of_samples", "distinct_2", "word_share", "seconds",
                "trained_positions", "teacher_positions", "student_generated"):
        assert all(col in r for r in rows), col
    assert all(0.0 <= r["agreement"] <= 1.0 and r["val_bpc"] > 0 for r in rows)
    assert {r["method"] for r in result["references"]} == {"teacher", "real text", "teacher, greedy"}
    assert [r["seed"] for r in result["teacher_samples"]] == [0, 1]  # the teacher's reference: one draw per seed
    assert result["shared"]["transfer"]["copies"] == result["shared"]["pool"]["copies"] == 2
    assert {(r["k"], r["renormalize"]) for r in result["sweep"]} == {(1, True), (1, False), (corpus.vocab_size, True),
                                                                    (3, True)}
    costs = rg.cost_table(result)
    assert list(costs.index) == list(rg.METHODS) + list(rg.EXTRA_ARMS)
    assert costs.loc["scratch", "teacher positions / trained"] == 0
    assert costs.loc["token KD", "teacher positions / trained"] == pytest.approx(1.0)
    assert costs.loc["seq-level KD", "teacher-generated chars / trained"] > 0
    assert costs.loc["on-policy GKD", "student-generated chars / trained"] > 0 or \
        costs.loc["on-policy GKD", "on-policy share of batches"] == 0
    assert costs.loc["top-k KD", "teacher positions / trained"] < 1.0  # the pool is shared by every top-k run
    # the extra arms (beta 0.9; token KD then on-policy GKD), the long budget and the sharpening control
    assert [r["method"] for r in result["extra"]] == list(rg.EXTRA_ARMS) * 2
    assert [(r["method"], r["steps"]) for r in result["long"]] == [("scratch", 4), (rg.WARM_START, 4)]
    warm = next(r for r in result["extra"] if r["method"] == rg.WARM_START)
    assert warm["corpus_batches"] + warm["sampled_batches"] == TINY.steps  # both phases together: one budget
    assert warm["teacher_positions"] >= round(TINY.warm_share * TINY.steps) * TINY.batch_size * TINY.context
    scratch = rows[0]
    assert scratch["teacher_bpc_of_samples_T0.5"] - scratch["own_bpc_of_samples_T0.5"] == \
        pytest.approx(scratch["reverse_kl_bpc_T0.5"])
    assert "reverse_kl_bpc_T0.5" not in rows[2]  # seq-level KD is not in sharpen_methods
    greedy = next(r for r in result["references"] if r["method"] == "teacher, greedy")
    assert greedy["own_bpc_of_samples"] == 0 and greedy["reverse_kl_bpc"] == greedy["teacher_bpc_of_samples"]
    # the counted costs equal the closed forms of the recipe (the quoted numbers of notebook 10)
    on = costs.loc["on-policy GKD"]
    closed = rg.cost_closed_forms(TINY, float(on["on-policy share of batches"]))
    assert costs.loc["seq-level KD", "teacher positions / trained"] == \
        pytest.approx(closed["seq_kd_teacher_positions_per_trained"])
    assert costs.loc["seq-level KD", "teacher positions / trained, KV cache"] == \
        pytest.approx(closed["seq_kd_teacher_positions_per_trained_kv"])
    assert on["trained positions / run"] / (TINY.steps * TINY.batch_size) == \
        pytest.approx(closed["on_policy_trained_per_row"])
    assert on["student generation positions / trained"] == \
        pytest.approx(closed["on_policy_student_positions_per_trained"])
    assert on["student generation positions / trained, KV cache"] == \
        pytest.approx(closed["on_policy_student_positions_per_trained_kv"])
    assert rg.WARM_START in costs.index
    assert list(tmp_cache.rglob("generative-*.pt"))

    def boom(*args, **kwargs):
        raise AssertionError("the cached result should have been used")
    monkeypatch.setattr(rg, "run", boom)
    again = rg.cached_run(TINY, teacher, corpus, seeds=(0, 1), progress=False)
    assert pd.DataFrame(again["table"]).equals(pd.DataFrame(rows))  # NaN-aware equality
    with pytest.raises(AssertionError, match="cached result"):
        rg.cached_run(TINY.replace(steps=4), teacher, corpus, seeds=(0, 1), progress=False)


def test_each_seed_draws_its_own_transfer_corpus_and_pool(corpus, teacher, tmp_cache):
    shared, _ = rg._shared(teacher, corpus, TINY, [0, 1], progress=False)
    assert set(shared["transfer"]) == set(shared["pool"]) == {0, 1}
    assert not torch.equal(shared["transfer"][0]["ids"], shared["transfer"][1]["ids"])
    assert not torch.equal(shared["pool"][0]["x"], shared["pool"][1]["x"])
    # the first seed's pool also serves the sweep (every k), the others only the main top-k runs
    assert shared["pool"][0]["idx"].shape[-1] == corpus.vocab_size and shared["pool"][1]["idx"].shape[-1] == TINY.topk
    assert rg._for_seed(shared, "transfer", 1) is shared["transfer"][1]
    assert rg._for_seed({"pool": shared["pool"][0]}, "pool", 5) is shared["pool"][0]  # one pool, shared on purpose
    with pytest.raises(ValueError, match="no pool for seed 2"):
        rg._for_seed(shared, "pool", 2)


def test_summaries_and_paired_differences():
    rows = [{"method": m, "seed": s, "val_bpc": v, "agreement": 0.5, "teacher_bpc_of_samples": 3.0,
             "own_bpc_of_samples": 2.5, "reverse_kl_bpc": 0.5, "distinct_2": 0.9, "word_share": 0.8, "seconds": 1.0}
            for m, vals in {"scratch": (3.0, 3.2, 3.1), "token KD": (2.9, 3.0, 3.05)}.items()
            for s, v in enumerate(vals)]
    table = rg.summarize(rows)
    assert table.loc["scratch", "val_bpc_mean"] == pytest.approx(3.1)
    assert table.loc["token KD", "seeds"] == 3
    d = paired_differences(rows, "token KD", "scratch", "val_bpc")
    assert d["per_seed"] == pytest.approx({0: -0.1, 1: -0.2, 2: -0.05})
    assert d["all_below_zero"] and not d["all_above_zero"]
    with pytest.raises(ValueError, match="need 'top-k KD' and 'scratch' rows"):
        paired_differences(rows, "top-k KD", "scratch", "val_bpc")
    with pytest.raises(ValueError, match="the table lacks columns"):
        rg.summarize([{"method": "scratch", "seed": 0}])


def test_recipe_rejects_unknown_arms_and_temperatures():
    with pytest.raises(ValueError, match="sharpen_methods: unknown methods \\['distil'\\]"):
        rg.recipe(sharpen_methods=("distil",))
    with pytest.raises(ValueError, match="sampling temperatures must be > 0"):
        rg.recipe(sharpen_T=(0.0,))
    with pytest.raises(ValueError, match="sampled_share=1.5"):
        rg.cost_closed_forms(TINY, 1.5)


def test_closed_forms_of_the_lessons_quoted_costs():
    """Full mode's recipe: 40 teacher positions per written character without a cache, 64/49 with one."""
    full = TINY.replace(context=64, seq_prompt=16, onpolicy_prompt=48, steps=150, batch_size=16, seq_sequences=256)
    closed = rg.cost_closed_forms(full, 0.5)
    assert closed["teacher_positions_per_generated_char"] == pytest.approx(40.0)
    assert closed["teacher_positions_per_generated_char_kv"] == pytest.approx(64 / 49)
    assert closed["on_policy_trained_per_row"] == pytest.approx(40.5)  # 17 sampled positions or a 64-window
    assert closed["on_policy_student_positions_per_trained"] == pytest.approx(0.5 * 888 / 40.5)


def test_run_rejects_no_seeds(corpus, teacher):
    with pytest.raises(ValueError, match="seeds is empty"):
        rg.run(TINY, teacher, corpus, seeds=())
    with pytest.raises(ValueError, match="method='distillation': use one of"):
        rg._plugin("distillation", teacher, TINY, {}, 0)


def test_cache_key_depends_on_the_teacher(corpus, tmp_cache):
    a = CharTransformer(corpus.vocab_size, 16, 1, 2, 16)
    b = CharTransformer(corpus.vocab_size, 16, 1, 2, 16)
    assert cache.state_digest(a) != cache.state_digest(b)


def test_result_figures_and_their_input_checks():
    from matplotlib.figure import Figure

    from kd_lessons.generative import lm_plots as gplots
    table = pd.DataFrame([{"method": m, "seed": s, "teacher_bpc_of_samples": 5.0 + s, "word_share": 0.3}
                          for m in ("scratch", "token KD") for s in (0, 1)])
    refs = pd.DataFrame([{"method": "teacher", "teacher_bpc_of_samples": 2.2, "word_share": 0.8}]).set_index("method")
    sweep = pd.DataFrame([{"k": k, "renormalize": r, "val_bpc": 4.0 - k / 100}
                          for k in (1, 5, 80) for r in (True, False)])
    assert isinstance(gplots.generated_text(table, refs, ["scratch", "token KD"]), Figure)
    assert isinstance(gplots.topk_mass({1: 0.5, 5: 0.8, 80: 1.0}), Figure)
    assert len(gplots.topk_sweep(sweep, baseline=3.9).axes[0].lines) == 3
    with pytest.raises(ValueError, match="lacks columns"):
        gplots.generated_text(table.drop(columns="word_share"), refs, ["scratch"])
    with pytest.raises(ValueError, match="columns k, renormalize"):
        gplots.topk_sweep(table)
    with pytest.raises(ValueError, match="pass \\{k: mean top-k mass\\}"):
        gplots.topk_mass({})
    points = pd.DataFrame({"distinct_written": [100, 1000], "mean": [0.2, -0.1], "low": [0.1, -0.2],
                           "high": [0.3, 0.0]})
    from kd_lessons.stats import Interval
    fig = gplots.seq_kd_sizes(points, token=Interval(-0.3, -0.4, -0.2, 5), scratch_positions=2000)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.patches) == 1           # the token-KD band
    assert [round(y, 3) for y in ax.lines[0].get_ydata()] == [0.2, -0.1]  # the means, in size order
    with pytest.raises(ValueError, match="distinct_written, mean, low, high"):
        gplots.seq_kd_sizes(table)
    curves = gplots.loss_curves({0: [3.0, 2.0, 1.5], 1: [3.1, 2.2]}, "a loss")
    assert [len(line.get_ydata()) for line in curves.axes[0].lines] == [3, 2]
    with pytest.raises(ValueError, match="seed"):
        gplots.loss_curves({}, "empty")
    speed = pd.DataFrame([{"draft": d, "gamma": g, "cpu_speedup": 1.0 / g, "theoretical_speedup": 1.1 / g}
                          for d in ("a", "b") for g in (1, 2, 4)])
    fig = gplots.speedups(speed, ["a", "b"])
    assert len(fig.axes[0].lines) == 5   # measured and theory per draft, and the break-even line
    with pytest.raises(ValueError, match="speed_table"):
        gplots.speedups(table, ["a"])
