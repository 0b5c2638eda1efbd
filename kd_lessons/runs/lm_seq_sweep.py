"""Sequence-level KD against the size of its transfer set: does more teacher text close its gap to scratch?

Introduced in notebook 10_generative_kd (review finding F5). The main table's seq-KD student reads
rec.seq_sequences teacher sequences many times over, while scratch reads fresh corpus windows, so that row
compares the amount of text as much as the method. Here seq-KD trains on transfer sets of each size in
rec.seq_sweep, up to `matched_sequences(rec)` = steps x batch_size: one epoch, so every row it trains on is
distinct, as scratch's windows are. Per seed the teacher writes the largest set once (the seed's own prompts
and samples) and each smaller set is its first rows: within a seed the sizes share their text (common random
numbers), across seeds everything is redrawn. The student's init and batch order are the seed's, as in the
main table, so each point pairs with that seed's scratch and token-KD rows.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from kd_lessons import cache, config
from kd_lessons.generative import lm_objectives as gm
from kd_lessons.generative.kv_cache import cached_positions, uncached_positions
from kd_lessons.generative.text import Corpus
from kd_lessons.runs.lm_students import LMStudentsRecipe, reference, train_method

__all__ = ["matched_sequences", "written_per_sequence", "run", "cached_run", "teacher_bill"]


def matched_sequences(rec: LMStudentsRecipe) -> int:
    """Sequences seq-KD reads in its budget (steps x batch_size): a set this large is read once, no row twice."""
    return rec.steps * rec.batch_size


def written_per_sequence(rec: LMStudentsRecipe) -> int:
    """Characters the teacher writes per sequence (the positions seq-KD trains on; the prompt's are skipped)."""
    return rec.context + 1 - rec.seq_prompt


def teacher_bill(rec: LMStudentsRecipe, n_sequences: int) -> dict:
    """Teacher forward positions per trained position to write n sequences, without and with a KV cache."""
    P, n = rec.seq_prompt, written_per_sequence(rec)
    trained = matched_sequences(rec) * n
    return {"uncached": n_sequences * uncached_positions(1, P, n, rec.context) / trained,
            "kv_cache": n_sequences * cached_positions(1, P, n) / trained}


def _check_sizes(rec: LMStudentsRecipe) -> None:
    most = matched_sequences(rec)
    if max(rec.seq_sweep) > most:
        raise ValueError(f"seq_sweep={rec.seq_sweep}: at most {most} sequences (steps x batch_size) can be read in "
                         "the budget; a larger transfer set would leave rows unread")


def run(rec: LMStudentsRecipe, teacher, corpus: Corpus, seeds=(0, 1, 2), progress: bool = True) -> list[dict]:
    """One seq-KD student per (size, seed): the rows of train_method plus "sequences" and "distinct_written"."""
    if not seeds:
        raise ValueError("seeds is empty; pass e.g. seeds=(0, 1, 2)")
    _check_sizes(rec)
    threads = torch.get_num_threads()
    if rec.threads:
        torch.set_num_threads(rec.threads)
    try:
        ref, rows = reference(teacher, corpus, rec), []
        plan = [(seed, n) for seed in seeds for n in rec.seq_sweep]
        written: dict = {}
        for seed, n in tqdm(plan, desc="seq-KD by transfer-set size", disable=not progress):
            if seed not in written:
                settings = gm.TransferSettings(max(rec.seq_sweep), rec.seq_prompt, rec.context, seed=seed,
                                               kv_cache=True)  # the same text distribution, ~30x fewer positions
                written = {seed: gm.cached_transfer_corpus(teacher, corpus.train, settings, progress=progress)}
            transfer = {**written[seed], "ids": written[seed]["ids"][:n]}
            row = train_method("seq-level KD", teacher, corpus, rec, {"transfer": transfer}, ref, seed)
            rows.append({**row, "sequences": n,
                         "distinct_written": min(n, matched_sequences(rec)) * written_per_sequence(rec)})
        return rows
    finally:
        torch.set_num_threads(threads)


def cached_run(rec: LMStudentsRecipe, teacher, corpus: Corpus, seeds=(0, 1, 2), progress: bool = True,
               refresh: bool = False) -> list[dict]:
    """`run`, cached (cache.build_once, kind "sweeps") by recipe, seeds, mode, corpus and teacher weights."""
    key = cache.key({"recipe": rec.asdict(), "seeds": list(seeds), "mode": config.mode(), "corpus": corpus.name,
                     "teacher": cache.state_digest(teacher), "version": 1})
    return cache.build_once(cache.path("sweeps", f"seq-kd-sizes-{config.mode()}-{key}.pt"),
                            {"key": key, "kind": "kd_lessons.seq_kd_sizes"},
                            lambda: run(rec, teacher, corpus, seeds, progress), "the seq-KD transfer-size sweep",
                            refresh=refresh)
