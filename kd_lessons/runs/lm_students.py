"""The generative KD methods side by side: one teacher, one student size, one step budget, several seeds.

Introduced in notebook 10_generative_kd. `run(rec, teacher, corpus, seeds)` trains one student per
(method, seed) with `lm.train_lm` and the plug-ins of `kd_lessons.generative.lm_objectives`, then measures
held-out bits/char (teacher-forced), agreement with the teacher's next-character argmax, and what the
student *writes* (the teacher's bits/char of its samples, distinct word bigrams, share of words found in
the training text), plus a cost meter per run and a top-k sweep on one seed. Each seed redraws every random
source of its runs: the student's init and batch order, its samples, the teacher's transfer corpus (its own
prompts and samples), the top-k pool's windows and the teacher's reference samples; the held-out prompts and
passages the students are measured on are fixed (the test set). The result (plain data) is cached (kind
"sweeps", verified, built under cache.lock) keyed by the recipe, the seeds, the mode and the teacher's weights.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from kd_lessons import cache, config
from kd_lessons.generative import lm_objectives as gm
from kd_lessons.generative.lm import LMOptions, train_lm
from kd_lessons.generative.text import Corpus, iterate_windows, sample_windows
from kd_lessons.generative.transformer import bits_per_char
from kd_lessons.generative.zoo import make_text_student
from kd_lessons.methods import registry
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs import seeds as by_seed
from kd_lessons.runs.lm_measures import sample_measures, text_measures, word_set

__all__ = ["METHODS", "LMStudentsRecipe", "recipe", "word_set", "text_measures", "sample_measures", "evaluate",
           "train_method", "run", "cached_run", "VALUES", "summarize", "cost_table"]

METHODS = tuple(spec.name for spec in registry.methods("generative"))  # the registry's order (notebook 10, tests)
@dataclass(frozen=True)
class LMStudentsRecipe(Recipe):
    """The comparison's budget and each method's settings in the current mode. Notebook 10_generative_kd."""

    size: str = "small"  # a key of zoo.student_sizes()
    context: int = pick(64, 32)
    steps: int = pick(150, 60)
    batch_size: int = 16
    lr: float = 3e-3
    T: float = 1.0
    alpha: float = 1.0
    seq_sequences: int = pick(256, 32)
    seq_prompt: int = 16
    onpolicy_prompt: int = pick(48, 16)
    lam: float = 0.5
    beta: float = 0.5
    topk: int = 5
    topk_renormalize: bool = True
    topk_windows: int = pick(2400, 128)
    topk_sweep: tuple[int | None, ...] = pick((1, 5, 20, None), (1, None))  # None = the whole vocabulary
    eval_chars: int = pick(20_000, 3_000)
    sample_prompts: int = pick(32, 8)
    sample_prompt: int = 16
    sample_chars: int = pick(48, 16)
    threads: int | None = 1  # torch threads while it runs; None: leave torch's setting

    def _check(self) -> None:
        self._one_of("size", ("tiny", "small"))
        self._positive("context", "steps", "batch_size", "lr", "T", "seq_sequences", "seq_prompt", "onpolicy_prompt",
                       "topk", "topk_windows", "eval_chars", "sample_prompts", "sample_prompt", "sample_chars",
                       "threads")
        for name in ("alpha", "lam", "beta"):
            self._between(name, 0.0, 1.0)


def recipe(**overrides) -> LMStudentsRecipe:
    """The comparison's recipe in the current mode; overrides replace fields. Notebook 10_generative_kd."""
    return LMStudentsRecipe(**check_recipe(LMStudentsRecipe, overrides))


def _teacher_argmax(teacher, data, context, max_chars) -> torch.Tensor:
    windows = max(1, max_chars // context)
    with torch.no_grad():
        return torch.cat([gm.teacher_logits(teacher, x).argmax(-1).cpu()
                          for x, _ in iterate_windows(data, context, 64, windows, device=_device(teacher))])


def _device(model):
    return next(model.parameters()).device


def evaluate(student, teacher, corpus: Corpus, rec: LMStudentsRecipe, reference: dict, seed: int = 0) -> dict:
    """Held-out bits/char, argmax agreement with the teacher, and the measures of the student's samples."""
    context, max_chars = rec.context, rec.eval_chars
    was = student.training
    student.eval()
    with torch.no_grad():
        argmax = torch.cat([student(x).argmax(-1).cpu() for x, _ in
                            iterate_windows(corpus.val, context, 64, max(1, max_chars // context),
                                            device=_device(student))])
    student.train(was)
    out = {"val_bpc": bits_per_char(student, corpus.val, context, max_chars=max_chars),
           "agreement": float((argmax == reference["teacher_argmax"]).float().mean())}
    out.update(sample_measures(student, teacher, reference["prompts"], rec.sample_chars, corpus,
                               reference["vocabulary"], seed=seed))
    return out


def _for_seed(shared: dict, name: str, seed: int):
    """The seed's own transfer corpus or pool ({seed: data}); a single one (no seed keys) is shared on purpose."""
    value = shared.get(name)
    if isinstance(value, dict) and value and all(isinstance(key, int) for key in value):
        if seed not in value:
            raise ValueError(f"no {name} for seed {seed} (have seeds {sorted(value)}); build one per seed")
        return value[seed]
    return value


def _plugin(method: str, teacher, rec: LMStudentsRecipe, shared: dict, seed: int, k: int | None = None,
            renormalize: bool | None = None):
    """(loss_fn, batch_fn, meter) of one registered generative method (k, renormalize: top-k KD's sweep)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {METHODS}")
    meter = gm.CostMeter()
    spec = registry.get(method, "generative")
    plug = spec.build(teacher, rec, meter=meter, seed=seed, k=k, renormalize=renormalize,
                      transfer=_for_seed(shared, "transfer", seed), pool=_for_seed(shared, "pool", seed))
    return plug, getattr(plug, "batch_fn", None), meter


def train_method(method: str, teacher, corpus: Corpus, rec: LMStudentsRecipe, shared: dict, reference: dict, seed: int,
                 topk: tuple[int, bool] | None = None) -> dict:
    """One student's row (measures, seconds, cost counts); topk: (k, renormalize) of a top-k KD sweep point."""
    k, renormalize = topk or (None, None)
    student = make_text_student(corpus.vocab_size, rec.size, seed=seed, context=rec.context)
    loss_fn, batch_fn, meter = _plugin(method, teacher, rec, shared, seed, k, renormalize)
    history = train_lm(student, corpus.train, rec.steps, lr=rec.lr, batch_size=rec.batch_size, loss_fn=loss_fn,
                       batch_fn=batch_fn,
                       options=LMOptions(context=rec.context, seed=seed, progress=False, desc=method))
    row = {"method": method, "seed": seed, **evaluate(student, teacher, corpus, rec, reference, seed),
           "seconds": history["seconds"], **meter.as_dict()}
    return row


def _shared(teacher, corpus: Corpus, rec: LMStudentsRecipe, seeds, progress: bool) -> tuple[dict, dict]:
    """Per seed, what the teacher prepares (transfer corpus, top-k pool: {seed: data}); the evaluation reference.

    The first seed's pool holds the sweep's largest k (the sweep runs on that seed); the others hold rec.topk.
    """
    k_max = max(k or teacher.vocab_size for k in (*rec.topk_sweep, rec.topk))
    transfer, pool = {}, {}
    for seed in seeds:
        start = time.perf_counter()
        settings = gm.TransferSettings(rec.seq_sequences, rec.seq_prompt, rec.context, seed=seed)
        transfer[seed] = gm.cached_transfer_corpus(teacher, corpus.train, settings, progress=progress)
        transfer[seed]["seconds"] = time.perf_counter() - start  # near 0 when it came from the cache
        start = time.perf_counter()
        pool[seed] = gm.topk_pool(teacher, corpus.train, rec.topk_windows, rec.context,
                                  k_max if seed == seeds[0] else rec.topk, seed=seed, progress=progress)
        pool[seed]["seconds"] = time.perf_counter() - start
    prompts, _ = sample_windows(corpus.val, rec.sample_prompt, rec.sample_prompts,
                                generator=torch.Generator().manual_seed(1234))
    reference = {"teacher_argmax": _teacher_argmax(teacher, corpus.val, rec.context, rec.eval_chars),
                 "prompts": prompts, "vocabulary": word_set(corpus.vocab.decode(corpus.train))}
    return {"transfer": transfer, "pool": pool}, reference


def run(rec: LMStudentsRecipe, teacher, corpus: Corpus, seeds=(0, 1, 2), progress: bool = True) -> dict:
    """Every method x seed, the references (teacher, real text) and the top-k sweep on seeds[0]. Notebook 10.

    Returns plain data: "table" (rows per method and seed), "references" (rows for the teacher's own
    samples, their mean over the seeds' draws, the real continuations and greedy teacher text),
    "teacher_samples" (the teacher's rows per seed), "sweep" (top-k rows), "shared" (one-off costs and seconds
    of the transfer corpora and top-k pools, added up over the seeds, "copies" of each), "recipe", "seeds".
    """
    if not seeds:
        raise ValueError("seeds is empty; pass e.g. seeds=(0, 1, 2)")
    threads = torch.get_num_threads()
    if rec.threads:
        torch.set_num_threads(rec.threads)  # tiny models: extra threads only add overhead on a busy CPU
    try:
        return _run(rec, teacher, corpus, seeds, progress)
    finally:
        torch.set_num_threads(threads)


def _one_off(per_seed: dict) -> dict:
    """The counts and seconds of a one-off preparation, added up over the seeds that each built their own."""
    total = gm.CostMeter()
    for data in per_seed.values():
        total = total.add(data["meter"])
    return {**total.as_dict(), "seconds": sum(d["seconds"] for d in per_seed.values()), "copies": len(per_seed),
            "from_cache": all(d.get("from_cache", False) for d in per_seed.values())}


def _teacher_samples(teacher, corpus: Corpus, reference: dict, n: int, seeds) -> tuple[dict, list]:
    """The teacher's own samples from the held-out prompts, one draw per seed: the mean row and the per-seed rows."""
    rows = [{"seed": s, **sample_measures(teacher, teacher, reference["prompts"], n, corpus, reference["vocabulary"],
                                          seed=s)} for s in seeds]
    numbers = [k for k, v in rows[0].items() if k != "seed" and isinstance(v, (int, float))]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in numbers}
    return {"method": "teacher", **mean, "example": rows[0]["example"], "seeds": len(rows)}, rows


def _run(rec: LMStudentsRecipe, teacher, corpus: Corpus, seeds, progress: bool) -> dict:
    shared, reference = _shared(teacher, corpus, rec, list(seeds), progress)
    V = corpus.vocab_size
    plan = [(m, s, None, None) for s in seeds for m in METHODS]
    plan += [("top-k KD", seeds[0], k or V, r) for k in rec.topk_sweep for r in (True, False)
             if (k or V, r) != (rec.topk, rec.topk_renormalize) and not (k is None and not r)]
    rows, sweep = [], []
    for method, seed, k, r in tqdm(plan, desc="generative students", disable=not progress):
        row = train_method(method, teacher, corpus, rec, shared, reference, seed, None if k is None else (k, r))
        if k is None:
            rows.append(row)
        else:
            sweep.append({**row, "k": k, "renormalize": r})
    main_topk = [dict(r) for r in rows if r["method"] == "top-k KD" and r["seed"] == seeds[0]]
    sweep += [{**r, "k": rec.topk, "renormalize": rec.topk_renormalize} for r in main_topk]
    P, n = rec.sample_prompt, rec.sample_chars
    # the real text: consecutive held-out passages (their own prompts), measured like the samples
    starts = torch.arange(len(reference["prompts"])) * (len(corpus.val) // (len(reference["prompts"]) + 1))
    real_texts = corpus.val[starts[:, None] + torch.arange(P + n)]
    teacher_row, teacher_rows = _teacher_samples(teacher, corpus, reference, n, seeds)
    refs = [teacher_row,
            {"method": "real text", **sample_measures(None, teacher, real_texts[:, :P], n, corpus,
                                                      reference["vocabulary"], texts=real_texts)}]
    greedy = gm.transfer_corpus(teacher, corpus.val, gm.TransferSettings(rec.sample_prompts, P, P + n - 1, greedy=True),
                                progress=False)["ids"]
    refs.append({"method": "teacher, greedy", **sample_measures(None, teacher, greedy[:, :P], n, corpus,
                                                                reference["vocabulary"], texts=greedy)})
    one_off = {name: _one_off(shared[name]) for name in ("transfer", "pool")}
    return {"table": rows, "references": refs, "teacher_samples": teacher_rows, "sweep": sweep, "shared": one_off,
            "recipe": rec.asdict(), "seeds": list(seeds), "vocab_size": V}


def cached_run(rec: LMStudentsRecipe, teacher, corpus: Corpus, seeds=(0, 1, 2), progress: bool = True,
               refresh: bool = False) -> dict:
    """`run`, cached (cache.build_once) by recipe, seeds, mode, corpus and teacher weights. Notebook 10."""
    blob_key = cache.key({"recipe": rec.asdict(), "seeds": list(seeds), "mode": config.mode(), "corpus": corpus.name,
                          "teacher": cache.state_digest(teacher), "version": 2})
    path = cache.path("sweeps", f"generative-{config.mode()}-{blob_key}.pt")
    meta = {"key": blob_key, "kind": "kd_lessons.generative_runs"}
    return cache.build_once(path, meta, lambda: run(rec, teacher, corpus, seeds, progress),
                            "the generative KD comparison", refresh=refresh)


VALUES = ("val_bpc", "agreement", "teacher_bpc_of_samples", "distinct_2", "word_share", "seconds")


def summarize(rows, values=VALUES) -> pd.DataFrame:
    """Mean and sample std per method (runs.seeds.summarize of run(...)['table']). Notebook 10_generative_kd."""
    return by_seed.summarize(rows, values)


def cost_table(result: dict) -> pd.DataFrame:
    """Per method: teacher / student forward positions and generated characters per trained position. Notebook 10.

    Measured by each run's CostMeter; the one-off work (one transfer corpus and one top-k pool per seed, the
    first seed's pool also used by the sweep) is split over the runs that used it, an equal share each.
    """
    table = pd.DataFrame(result["table"])
    users = {"seq-level KD": ("transfer", (table["method"] == "seq-level KD").sum()),
             "top-k KD": ("pool", (table["method"] == "top-k KD").sum() + len(result["sweep"]) - 1)}
    rows = []
    for method, g in table.groupby("method", sort=False):
        trained = g["trained_positions"].mean()
        name, n = users.get(method, (None, 1))
        once = result["shared"][name] if name else {}
        share = {k: once.get(k, 0) / n for k in ("teacher_positions", "teacher_generation_positions",
                                                 "teacher_generated")}
        rows.append({"method": method, "trained positions / run": trained,
                     "teacher positions / trained": (g["teacher_positions"].mean() + share["teacher_positions"]
                                                     + g["teacher_generation_positions"].mean()
                                                     + share["teacher_generation_positions"]) / trained,
                     "teacher-generated chars / trained": (g["teacher_generated"].mean()
                                                           + share["teacher_generated"]) / trained,
                     "student generation positions / trained": g["student_generation_positions"].mean() / trained,
                     "student-generated chars / trained": g["student_generated"].mean() / trained,
                     "on-policy share of batches": (g["sampled_batches"] / (g["sampled_batches"]
                                                                            + g["corpus_batches"])).mean(),
                     "seconds / run": g["seconds"].mean() + (once.get("seconds", 0.0) / n)})
    return pd.DataFrame(rows).set_index("method")
