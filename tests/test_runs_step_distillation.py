"""kd_lessons.runs.step_distillation: rows per seed, arm and step count, paired summaries, the cache, plots, NaN."""
import pytest
from matplotlib.figure import Figure

from kd_lessons import cache
from kd_lessons.diffusion import Denoiser, DivergedError
from kd_lessons.diffusion.plots import plot_clouds, plot_quality
from kd_lessons.runs import step_distillation as sd

TINY = sd.recipe(teacher_steps=4, n_train=300, teacher_iters=20, distill_iters=5, batch_size=32, eval_samples=64,
                 n_proj=16, cloud_points=20, seeds=(0, 1), hidden=16, depth=2, consistency_iters=5)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def result():
    return sd.run(TINY, progress=False)


def test_rows_for_every_seed_arm_and_step_count(result):
    rows = result["rows"]
    assert sd.step_counts(TINY) == [1, 2, 4]
    got = sorted((r["seed"], r["arm"], r["steps"]) for r in rows)
    want = sorted([(s, "data", 0) for s in (0, 1)] + [(s, "teacher", k) for s in (0, 1) for k in (1, 2, 4)]
                  + [(s, "distilled", k) for s in (0, 1) for k in (1, 2)]
                  + [(s, "consistency", k) for s in (0, 1) for k in (1, 2, 4)])
    assert got == want and all(r["sw"] > 0 for r in rows)
    by = {(r["seed"], r["arm"], r["steps"]): r["sw"] for r in rows}
    assert by[(0, "teacher", 1)] != by[(1, "teacher", 1)]                     # each seed redraws everything
    assert set(result["clouds"][0]) == {"data", "teacher@1", "teacher@2", "teacher@4", "distilled@1", "distilled@2",
                                        "consistency@1", "consistency@2", "consistency@4"}
    assert result["clouds"][0]["teacher@1"].shape == (20, 2)


def test_summary_pairs_distilled_with_the_undistilled_teacher(result):
    lines = sd.summary(result)
    assert [ln["steps"] for ln in lines] == [1, 2, 4] and lines[-1]["distilled"] is None
    by = {(r["seed"], r["arm"], r["steps"]): r["sw"] for r in result["rows"]}
    d = lines[0]["distilled_minus_teacher"]
    assert d.n == 2 and d.values == pytest.approx([by[(s, "distilled", 1)] - by[(s, "teacher", 1)] for s in (0, 1)])
    assert lines[0]["verdict"] in ("better", "worse", "inconclusive")
    c = lines[2]["consistency_minus_teacher"]
    assert c.values == pytest.approx([by[(s, "consistency", 4)] - by[(s, "teacher", 4)] for s in (0, 1)])
    assert sd.summary(result, "mmd2")[0]["teacher"].n == 2
    with pytest.raises(ValueError, match="metric"):
        sd.summary(result, "fid")


def test_the_same_seed_gives_the_same_numbers(result):
    again = sd.run(TINY.replace(seeds=(1,)), progress=False)
    assert [r["sw"] for r in again["rows"]] == [r["sw"] for r in result["rows"] if r["seed"] == 1]


def test_cached_once_and_a_nan_run_leaves_the_cache_intact(tmp_cache, monkeypatch):
    small = TINY.replace(seeds=(0,))
    first = sd.cached_run(small, progress=False)
    files = sorted(p.name for p in (tmp_cache / "sweeps").iterdir() if not p.name.endswith(".lock"))
    assert len(files) == 2                                                   # the file and its checksum
    monkeypatch.setattr(sd, "run", lambda *a, **k: pytest.fail("rebuilt instead of read from the cache"))
    assert sd.cached_run(small, progress=False)["rows"] == first["rows"]
    monkeypatch.undo()
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_cache))

    class NaNDenoiser(Denoiser):
        def forward(self, z, t):
            return super().forward(z, t) * float("nan")

    monkeypatch.setattr(sd, "Denoiser", NaNDenoiser)
    with pytest.raises(DivergedError, match="teacher training: the loss became nan.*nothing was cached"):
        sd.cached_run(small, progress=False, refresh=True)                   # the existing file survives ...
    with pytest.raises(DivergedError):
        sd.cached_run(small.replace(seeds=(5,)), progress=False)             # ... and a new one is not written
    assert sorted(p.name for p in (tmp_cache / "sweeps").iterdir() if not p.name.endswith(".lock")) == files
    path = tmp_cache / "sweeps" / [f for f in files if f.endswith(".pt")][0]
    assert cache.load_verified(path)["rows"] == first["rows"]


def test_plots_return_figures(result):
    fig = plot_clouds(result, steps=(1, 4))
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 3
    assert isinstance(plot_quality(sd.summary(result)), Figure)
    with pytest.raises(ValueError, match="the run scored"):
        plot_clouds(result, steps=(3,))


@pytest.mark.parametrize("change, match", [({"teacher_steps": 48}, "power of two"), ({"final_steps": 3}, "power"),
                                           ({"seeds": ()}, "distinct seeds"), ({"seeds": (1, 1)}, "distinct"),
                                           ({"dataset": "moons"}, "use one of"), ({"lr": 0.0}, "> 0"),
                                           ({"eval_samples": 1}, ">= 2"), ({"consistency_ema": 1.0}, "consistency_ema"),
                                           ({"consistency_iters": -1}, ">= 0"),
                                           ({"teacher_iters": 2.5}, "expected int")])
def test_bad_recipes_say_what_to_do(change, match):
    with pytest.raises(ValueError, match=match):
        TINY.replace(**change)
    with pytest.raises(ValueError, match="has no field"):
        sd.recipe(steps=4)


def test_consistency_can_be_left_out():
    rows = sd.run(TINY.replace(seeds=(0,), consistency_iters=0), progress=False)["rows"]
    assert {r["arm"] for r in rows} == {"data", "teacher", "distilled"}
    assert sd.summary({"rows": rows})[0]["consistency"] is None


def test_quick_and_full_defaults(monkeypatch):
    monkeypatch.setenv("KD_QUICK", "0")
    full = sd.recipe()
    assert full.teacher_steps == 64 and len(full.seeds) >= 3 and sd.step_counts(full) == [1, 2, 4, 8, 16, 32, 64]
    monkeypatch.setenv("KD_QUICK", "1")
    assert sd.recipe().teacher_steps < 64 and sd.recipe().teacher_iters < full.teacher_iters
