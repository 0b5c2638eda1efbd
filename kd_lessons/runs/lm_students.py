"""The generative KD methods side by side: one teacher, one student size, one step budget, several seeds.

Introduced in notebook 10_generative_kd. `run(rec, teacher, corpus, seeds)` trains one student per
(method, seed) with `lm.train_lm` and the plug-ins of `kd_lessons.generative.lm_objectives`, then measures
held-out bits/char (teacher-forced), agreement with the teacher's next-character argmax, and what the
student *writes* (the teacher's and its own bits/char of its samples, whose difference estimates the reverse
KL per character, distinct word bigrams, share of words found in the training text), plus a cost meter per run
and a top-k sweep on one seed. Extra arms (`EXTRA_ARMS`: GKD at beta 0.9, and token KD first, then on-policy
GKD for the rest of the budget, as the papers start on-policy training), the sharpening control (scratch and
token KD sampled at T < 1) and one longer budget on one seed test the lesson's own story. Each seed redraws every random
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
from kd_lessons.runs.lm_costs import cost_closed_forms, cost_table
from kd_lessons.runs.lm_measures import sample_measures, text_measures, word_set

__all__ = ["METHODS", "EXTRA_ARMS", "WARM_START", "LMStudentsRecipe", "recipe", "word_set", "text_measures",
           "sample_measures", "reference", "evaluate", "sharpened", "train_method", "run", "cached_run", "VALUES",
           "summarize", "cost_table", "cost_closed_forms"]

METHODS = tuple(spec.name for spec in registry.methods("generative"))  # the registry's order (notebook 10, tests)
WARM_START = "token KD, then on-policy GKD"  # the papers' order: a supervised student first, then on-policy
EXTRA_ARMS = ("on-policy GKD, beta 0.9", WARM_START)
SAMPLE_COLUMNS = ("teacher_bpc_of_samples", "own_bpc_of_samples", "reverse_kl_bpc")

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
    seq_sweep: tuple[int, ...] = pick((256, 600, 1200, 2400), (32, 960))  # lm_seq_sweep: transfer-set sizes
    onpolicy_prompt: int = pick(48, 16)
    lam: float = 0.5
    beta: float = 0.5
    topk: int = 5
    topk_renormalize: bool = True
    topk_windows: int = pick(2400, 128)
    topk_sweep: tuple[int | None, ...] = pick((1, 5, 20, None), (1, None))  # None = the whole vocabulary
    extra_beta: float = 0.9  # the "on-policy GKD, beta 0.9" arm: does the mode-seeking end change the result?
    warm_share: float = 0.5  # WARM_START: this share of the steps is token KD, the rest on-policy GKD
    sharpen_T: tuple[float, ...] = (0.7, 0.8, 0.9)  # the sharpening control: sampling temperatures below 1
    sharpen_methods: tuple[str, ...] = ("scratch", "token KD")
    long_steps: int = pick(450, 0)  # one longer budget (3x) on the first seed (0: none)
    long_methods: tuple[str, ...] = ("scratch", "token KD", WARM_START)
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
        for name in ("alpha", "lam", "beta", "extra_beta", "warm_share"):
            self._between(name, 0.0, 1.0)
        if not self.seq_sweep or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.seq_sweep):
            raise ValueError(f"seq_sweep={self.seq_sweep!r}: transfer-set sizes, whole numbers of sequences >= 1")
        if any(not T > 0 for T in self.sharpen_T):
            raise ValueError(f"sharpen_T={self.sharpen_T!r}: sampling temperatures must be > 0")
        for name in ("sharpen_methods", "long_methods"):
            unknown = [m for m in getattr(self, name) if m not in (*METHODS, *EXTRA_ARMS)]
            if unknown:
                raise ValueError(f"{name}: unknown methods {unknown}; use names of {METHODS + EXTRA_ARMS}")
        if self.long_steps < 0:
            raise ValueError(f"long_steps={self.long_steps!r}: use 0 (no long budget) or a number of steps")


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


def sharpened(student, teacher, corpus: Corpus, rec: LMStudentsRecipe, reference: dict, seed: int = 0) -> dict:
    """The sharpening control: the same student sampled at each T of rec.sharpen_T. Notebook 10_generative_kd.

    Keys "<measure>_T<T>" for the teacher's bits/char of the samples, the student's own (at T) and their
    difference (reverse KL per character); the same sampler seed at every T (common random numbers).
    """
    out = {}
    for T in rec.sharpen_T:
        m = sample_measures(student, teacher, reference["prompts"], rec.sample_chars, corpus, reference["vocabulary"],
                            seed=seed, T=T)
        out.update({f"{c}_T{T:g}": m[c] for c in SAMPLE_COLUMNS})
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


def _train_phase(student, method, teacher, corpus, rec, shared, seed, steps, k=None, renormalize=None):
    """`steps` AdamW steps of one registered method on `student`: (seconds, CostMeter)."""
    loss_fn, batch_fn, meter = _plugin(method, teacher, rec, shared, seed, k, renormalize)
    history = train_lm(student, corpus.train, steps, lr=rec.lr, batch_size=rec.batch_size, loss_fn=loss_fn,
                       batch_fn=batch_fn,
                       options=LMOptions(context=rec.context, seed=seed, progress=False, desc=method))
    return history["seconds"], meter


def train_method(method: str, teacher, corpus: Corpus, rec: LMStudentsRecipe, shared: dict, reference: dict, seed: int,
                 topk: tuple[int, bool] | None = None) -> dict:
    """One student's row (measures, seconds, cost counts); topk: (k, renormalize) of a top-k KD sweep point.

    method may also be one of EXTRA_ARMS: "on-policy GKD, beta 0.9" (rec.extra_beta), or WARM_START: token KD
    for round(warm_share * steps) steps, then on-policy GKD for the rest (a new warm-up and cosine schedule and
    fresh AdamW moments in the second phase). Methods in rec.sharpen_methods also get the sharpened samples.
    """
    k, renormalize = topk or (None, None)
    student = make_text_student(corpus.vocab_size, rec.size, seed=seed, context=rec.context)
    if method == WARM_START:
        warm = min(rec.steps - 1, max(1, round(rec.warm_share * rec.steps)))
        s1, m1 = _train_phase(student, "token KD", teacher, corpus, rec, shared, seed, warm)
        s2, m2 = _train_phase(student, "on-policy GKD", teacher, corpus, rec, shared, seed, rec.steps - warm)
        seconds, meter = s1 + s2, m1.add(m2)
    elif method == EXTRA_ARMS[0]:
        seconds, meter = _train_phase(student, "on-policy GKD", teacher, corpus, rec.replace(beta=rec.extra_beta),
                                      shared, seed, rec.steps)
    else:
        seconds, meter = _train_phase(student, method, teacher, corpus, rec, shared, seed, rec.steps, k, renormalize)
    row = {"method": method, "seed": seed, **evaluate(student, teacher, corpus, rec, reference, seed),
           "seconds": seconds, **meter.as_dict()}
    if topk is None and method in rec.sharpen_methods:
        row.update(sharpened(student, teacher, corpus, rec, reference, seed))
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
    return {"transfer": transfer, "pool": pool}, reference(teacher, corpus, rec)


def reference(teacher, corpus: Corpus, rec: LMStudentsRecipe) -> dict:
    """What every student is measured against (fixed: the test set): the teacher's argmax, prompts, vocabulary."""
    prompts, _ = sample_windows(corpus.val, rec.sample_prompt, rec.sample_prompts,
                                generator=torch.Generator().manual_seed(1234))
    return {"teacher_argmax": _teacher_argmax(teacher, corpus.val, rec.context, rec.eval_chars),
            "prompts": prompts, "vocabulary": word_set(corpus.vocab.decode(corpus.train))}


def run(rec: LMStudentsRecipe, teacher, corpus: Corpus, seeds=(0, 1, 2), progress: bool = True) -> dict:
    """Every method x seed, the references (teacher, real text) and the top-k sweep on seeds[0]. Notebook 10.

    Returns plain data: "table" (rows per method and seed), "references" (rows for the teacher's own
    samples, their mean over the seeds' draws, the real continuations and greedy teacher text),
    "teacher_samples" (the teacher's rows per seed), "sweep" (top-k rows), "extra" (EXTRA_ARMS rows per seed),
    "long" (rec.long_methods at rec.long_steps on seeds[0]; empty when long_steps is 0), "shared" (one-off costs
    and seconds of the transfer corpora and top-k pools, added up over the seeds, "copies" of each), "recipe",
    "seeds".
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
    plan += [(m, s, "extra", None) for s in seeds for m in EXTRA_ARMS]
    plan += [(m, seeds[0], "long", None) for m in rec.long_methods if rec.long_steps]
    rows, sweep, extra, long = [], [], [], []
    for method, seed, k, r in tqdm(plan, desc="generative students", disable=not progress):
        if k == "long":
            long.append({**train_method(method, teacher, corpus, rec.replace(steps=rec.long_steps), shared, reference,
                                        seed), "steps": rec.long_steps})
            continue
        row = train_method(method, teacher, corpus, rec, shared, reference, seed,
                           None if k in (None, "extra") else (k, r))
        if k is None:
            rows.append(row)
        elif k == "extra":
            extra.append(row)
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
    greedy_row = sample_measures(None, teacher, greedy[:, :P], n, corpus, reference["vocabulary"], texts=greedy)
    # a deterministic writer has entropy 0: its reverse KL per character is the teacher's bits/char of its text
    greedy_row.update(own_bpc_of_samples=0.0, reverse_kl_bpc=greedy_row["teacher_bpc_of_samples"])
    refs.append({"method": "teacher, greedy", **greedy_row})
    one_off = {name: _one_off(shared[name]) for name in ("transfer", "pool")}
    return {"table": rows, "references": refs, "teacher_samples": teacher_rows, "sweep": sweep, "extra": extra,
            "long": long, "shared": one_off, "recipe": rec.asdict(), "seeds": list(seeds), "vocab_size": V}


def cached_run(rec: LMStudentsRecipe, teacher, corpus: Corpus, seeds=(0, 1, 2), progress: bool = True,
               refresh: bool = False) -> dict:
    """`run`, cached (cache.build_once) by recipe, seeds, mode, corpus and teacher weights. Notebook 10."""
    blob_key = cache.key({"recipe": rec.asdict(), "seeds": list(seeds), "mode": config.mode(), "corpus": corpus.name,
                          "teacher": cache.state_digest(teacher), "version": 4})
    path = cache.path("sweeps", f"generative-{config.mode()}-{blob_key}.pt")
    meta = {"key": blob_key, "kind": "kd_lessons.generative_runs"}
    return cache.build_once(path, meta, lambda: run(rec, teacher, corpus, seeds, progress),
                            "the generative KD comparison", refresh=refresh)


VALUES = ("val_bpc", "agreement", "teacher_bpc_of_samples", "own_bpc_of_samples", "reverse_kl_bpc", "distinct_2",
          "word_share", "seconds")


def summarize(rows, values=VALUES) -> pd.DataFrame:
    """Mean and sample std per method (runs.seeds.summarize of run(...)['table']). Notebook 10_generative_kd."""
    return by_seed.summarize(rows, values)
