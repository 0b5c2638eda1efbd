"""Students trained from a teacher's top-k logits read back from disk: held-out bits/char against k, and bytes.

Introduced for lesson 16 (part 3). The course's character-level teacher (zoo.get_text_teacher) scores one fixed
set of training windows once; its top-k log-probs (+ the rest bucket) are written to one on-disk store per k
(kd_lessons.generative.logit_store) and read back verified. Per seed, one student per arm trains on the same
windows from the store: the rest bucket at every k (k = V is full-vocabulary KD), renormalised top-k at a few k
(the contrast), and scratch (the text alone). Seeds redraw the student's init and batch order; the windows and the
held-out text are fixed. Paired 95% intervals vs full-vocabulary KD come from kd_lessons.stats.paired. `smollm2`
does the same arithmetic and bytes on disk for SmolLM2-135M's real top-k where the optional extra is installed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kd_lessons import cache, config, stats
from kd_lessons.generative import logit_store as ls
from kd_lessons.generative.lm import LMOptions, train_lm
from kd_lessons.generative.text import Corpus, sample_windows
from kd_lessons.generative.transfer_data import teacher_logits
from kd_lessons.generative.transformer import bits_per_char
from kd_lessons.generative.zoo import make_text_student
from kd_lessons.recipes import Recipe, check_recipe, pick

__all__ = ["LogitStorageRecipe", "recipe", "arms", "write_stores", "run", "cached_run", "table",
           "rest_vs_renormalised", "smollm2"]

FULL = "full-vocabulary KD"


@dataclass(frozen=True)
class LogitStorageRecipe(Recipe):
    """The sweep over k in the current mode: store, student budget, seeds. Notebook 16."""

    size: str = "small"  # a key of zoo.student_sizes()
    context: int = pick(32, 16)
    windows: int = pick(1200, 24)  # training windows the teacher scores once (context positions each)
    shard_windows: int = 256
    steps: int = pick(150, 6)
    batch_size: int = 16
    lr: float = 3e-3
    ks: tuple[int, ...] = pick((1, 2, 5, 10, 20), (1,))  # rest bucket at each k, plus k = V (full-vocabulary KD)
    renormalized_ks: tuple[int, ...] = pick((1, 5, 20), (1,))  # the contrast: the teacher's k renormalised
    seeds: tuple[int, ...] = pick((0, 1, 2), (0, 1, 2))
    value_dtype: str = "fp16"
    eval_chars: int = pick(20_000, 1_000)
    store_seed: int = 0
    threads: int | None = 1  # torch threads while it runs; None: leave torch's setting

    def _check(self) -> None:
        self._one_of("size", ("tiny", "small"))
        self._one_of("value_dtype", tuple(ls.VALUE_BYTES))
        self._positive("context", "windows", "shard_windows", "steps", "batch_size", "lr", "eval_chars", "threads")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            self._fail("seeds", "use at least 2 distinct seeds (a paired interval needs them)")
        if any(k < 1 for k in (*self.ks, *self.renormalized_ks)):
            raise ValueError(f"ks={self.ks!r}, renormalized_ks={self.renormalized_ks!r}: each k must be >= 1")


def recipe(**overrides) -> LogitStorageRecipe:
    """The sweep's recipe in the current mode; overrides replace fields. Notebook 16."""
    return LogitStorageRecipe(**check_recipe(LogitStorageRecipe, overrides))


def arms(rec: LogitStorageRecipe, vocab_size: int) -> list[tuple[str, int | None, bool]]:
    """(name, k, renormalize) of every arm: scratch, rest bucket per k, full-vocabulary KD, renormalised per k."""
    ks = sorted({k for k in rec.ks if k < vocab_size})
    return ([("scratch", None, False)] + [(f"top-{k} + rest", k, False) for k in ks] + [(FULL, vocab_size, False)]
            + [(f"top-{k} renormalised", k, True) for k in sorted(set(rec.renormalized_ks)) if k < vocab_size])


def _store_dir(key: str, k: int):
    return cache.path("logits", f"topk-store-{key}") / f"k{k}"


def write_stores(rec: LogitStorageRecipe, teacher, corpus: Corpus) -> dict:
    """One verified store per k (every k the arms use) of the teacher on the fixed windows: {k: store info}."""
    generator = torch.Generator().manual_seed(rec.store_seed)
    x, y = sample_windows(corpus.train, rec.context, rec.windows, generator=generator)
    windows = torch.cat([x, y[:, -1:]], dim=1)
    V = corpus.vocab_size
    meta = {"teacher": cache.state_digest(teacher), "windows": cache.tensor_digest(windows), "format": 2}
    key = cache.key({**meta, "value_dtype": rec.value_dtype})
    start = time.perf_counter()
    logits = torch.cat([teacher_logits(teacher, rows).float().cpu() for rows in x.split(256)])
    teacher_s = time.perf_counter() - start
    out = {}
    for k in sorted({k for _, k, _ in arms(rec, V) if k is not None}):
        directory = _store_dir(key, k)
        with cache.lock(directory / ls.MANIFEST, f"the top-{k} logit store"):
            start = time.perf_counter()
            manifest = ls.write_store(directory, windows, logits, ls.StoreLayout(k, V, rec.value_dtype),
                                      rec.shard_windows, meta=meta)
            write_s = time.perf_counter() - start
        start = time.perf_counter()
        store = ls.read_store(directory)
        out[k] = {"store": store, "bytes": ls.store_bytes(directory), "write_s": write_s,
                  "read_s": time.perf_counter() - start, "shards_written": manifest["shards_written"],
                  "topk_mass": float(store["logprobs"].exp().sum(-1).mean())}
    return {"stores": out, "teacher_s": teacher_s, "positions": windows.shape[0] * rec.context}


def _train(rec: LogitStorageRecipe, corpus: Corpus, store: dict | None, seed: int, renormalize: bool) -> dict:
    """One student from the store (or its text alone, store=None): held-out bits/char and seconds."""
    student = make_text_student(corpus.vocab_size, rec.size, seed=seed, context=rec.context)
    tokens = (store or {}).get("tokens")
    state = {}

    def batch_fn(generator):
        state["rows"] = rows = torch.randint(len(tokens), (rec.batch_size,), generator=generator)
        return tokens[rows, :-1], tokens[rows, 1:]

    def loss_fn(model, x, y):
        student_logits = model(x)
        if store.get("ids") is None:
            return F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]), y.reshape(-1))
        rows = state["rows"]
        rest = None if renormalize else store["rest"][rows]
        return ls.stored_kd_loss(student_logits, store["ids"][rows], store["logprobs"][rows], rest, renormalize)

    history = train_lm(student, None, rec.steps, lr=rec.lr, batch_size=rec.batch_size, loss_fn=loss_fn,
                       batch_fn=batch_fn, options=LMOptions(context=rec.context, seed=seed, progress=False))
    return {"val_bpc": bits_per_char(student, corpus.val, rec.context, max_chars=rec.eval_chars),
            "seconds": history["seconds"]}


def run(rec: LogitStorageRecipe, teacher, corpus: Corpus, progress: bool = True) -> dict:
    """Every arm x seed from the stores, and the bytes of each store (plain data). Notebook 16."""
    from tqdm.auto import tqdm

    threads = torch.get_num_threads()
    if rec.threads:
        torch.set_num_threads(rec.threads)
    try:
        start = time.perf_counter()
        built = write_stores(rec, teacher, corpus)
        stores, rows = built["stores"], []
        any_store = next(iter(stores.values()))["store"]
        plan = [(name, k, r, s) for s in rec.seeds for name, k, r in arms(rec, corpus.vocab_size)]
        for name, k, renormalize, seed in tqdm(plan, desc="students from the logit store", disable=not progress):
            store = stores[k]["store"] if k is not None else {"tokens": any_store["tokens"]}
            rows.append({"arm": name, "k": k, "renormalize": renormalize, "seed": seed,
                         **_train(rec, corpus, store, seed, renormalize)})
        sizes = {k: {**v["bytes"], "write_s": v["write_s"], "read_s": v["read_s"], "topk_mass": v["topk_mass"],
                     "shards_written": v["shards_written"]} for k, v in stores.items()}
        return {"rows": rows, "stores": sizes, "teacher_s": built["teacher_s"], "positions": built["positions"],
                "vocab_size": corpus.vocab_size, "recipe": rec.asdict(), "seconds": time.perf_counter() - start}
    finally:
        torch.set_num_threads(threads)


def cached_run(rec: LogitStorageRecipe, teacher, corpus: Corpus, progress: bool = True, refresh: bool = False) -> dict:
    """`run`, cached (cache.build_once) by recipe, mode, corpus and teacher weights. Notebook 16."""
    key = cache.key({"recipe": rec.asdict(), "mode": config.mode(), "corpus": corpus.name,
                     "teacher": cache.state_digest(teacher), "version": 2})
    return cache.build_once(cache.path("sweeps", f"logit-storage-{config.mode()}-{key}.pt"),
                            {"key": key, "kind": "kd_lessons.logit_storage"},
                            lambda: run(rec, teacher, corpus, progress), "the logit-storage sweep", refresh=refresh)


def table(result: dict) -> list[dict]:
    """Per arm: mean bits/char, paired 95% interval vs full-vocabulary KD, bytes per position on disk. Notebook 16."""
    rows, out = result["rows"], []
    by_arm = {}
    for r in rows:
        by_arm.setdefault(r["arm"], []).append(r)
    full = sorted(by_arm[FULL], key=lambda r: r["seed"])
    for arm, mine in by_arm.items():
        mine = sorted(mine, key=lambda r: r["seed"])
        k = mine[0]["k"]
        d = stats.paired([r["val_bpc"] for r in mine], [r["val_bpc"] for r in full]) if arm != FULL else None
        size = result["stores"].get(k, {})
        out.append({"arm": arm, "k": k, "seeds": len(mine),
                    "val_bpc": stats.mean_interval([r["val_bpc"] for r in mine]).mean,
                    "minus_full": None if d is None else d.mean, "low": None if d is None else d.low,
                    "high": None if d is None else d.high,
                    "verdict": None if d is None else stats.verdict(d, higher_is_better=False),
                    "bytes_per_position": size.get("topk_bytes_per_position"),
                    "arithmetic": size.get("arithmetic_bytes_per_position"), "topk_mass": size.get("topk_mass")})
    return out


def rest_vs_renormalised(result: dict) -> list[dict]:
    """Per k of the contrast: paired 95% interval of renormalised minus rest-bucket bits/char (> 0: rest wins)."""
    out = []
    for k in sorted({r["k"] for r in result["rows"] if r["renormalize"]}):
        renorm, rest = ([r["val_bpc"] for r in sorted(result["rows"], key=lambda r: r["seed"])
                         if r["k"] == k and r["renormalize"] is flag] for flag in (True, False))
        d = stats.paired(renorm, rest)
        out.append({"k": k, "renormalised_minus_rest": d.mean, "low": d.low, "high": d.high, "seeds": d.n,
                    "verdict": stats.verdict(d, higher_is_better=True)})
    return out


def smollm2(text: str, ks=(1, 5, 20), context: int = 64, max_windows: int = 4, value_dtype: str = "fp16") -> dict:
    """SmolLM2-135M's real top-k on a short text: bytes on disk per k vs the arithmetic, or why it is skipped.

    Notebook 16. Without the optional extra returns {"skipped": reason with the install command, "missing": [...]}.
    """
    from kd_lessons.generative import pretrained

    if pretrained.missing():
        return {"skipped": pretrained.unavailable_reason(), "missing": pretrained.missing()}
    llm, tokenizer = pretrained.load_smollm2(quiet=True)
    windows = pretrained._windows(tokenizer, text, context, max_windows)
    V = len(tokenizer)
    with torch.no_grad():
        logits = torch.cat([pretrained._logits(llm, w[None, :-1]).float() for w in windows])
    meta = {"teacher": "SmolLM2-135M-Instruct", "windows": cache.tensor_digest(windows)}
    key, out = cache.key({**meta, "value_dtype": value_dtype}), {}
    for k in ks:
        directory = cache.path("logits", f"llm-topk-store-{key}") / f"k{k}"
        ls.write_store(directory, windows, logits, ls.StoreLayout(k, V, value_dtype), meta=meta)
        store = ls.read_store(directory)
        out[k] = {**ls.store_bytes(directory), "topk_mass": float(store["logprobs"].exp().sum(-1).mean())}
    return {"vocab_size": V, "positions": windows.shape[0] * context, "stores": out,
            "full_fp16_bytes_per_position": ls.full_bytes_per_position(V, "fp16")}
