"""What each generative KD method cost per trained position, counted and in closed form, with and without a KV cache.

Introduced in notebook 10_generative_kd (runs.lm_students re-exports both): `cost_table` turns the runs' CostMeter
counts into per-trained-position costs, `cost_closed_forms` derives the numbers the lesson quotes from the recipe
alone (kv_cache.uncached_positions / cached_positions), so the notebook can assert that the two agree.
"""
from __future__ import annotations

import pandas as pd

from kd_lessons.generative.kv_cache import cached_positions, uncached_positions
from kd_lessons.recipes import Recipe

__all__ = ["cost_table", "cost_closed_forms"]


def _kv_factor(prompt_len: int, num_tokens: int) -> float:
    """Forward positions per generated character with a KV cache (kv_cache.cached_positions per sequence)."""
    return cached_positions(1, prompt_len, num_tokens) / num_tokens


def cost_table(result: dict) -> pd.DataFrame:
    """Per method: teacher / student forward positions and generated characters per trained position. Notebook 10.

    Trained and scored positions are counted by each run's CostMeter, generation positions by formula
    (kv_cache.uncached_positions, what `generate` runs); the "KV cache" columns count generation as
    kv_cache.cached_positions would (the prompt once, one position per new character). The one-off work (one
    transfer corpus and one top-k pool per seed, the first seed's pool also used by the sweep) is split over
    the runs that used it, an equal share each. The extra arms (result["extra"]) get rows too.
    """
    rec = result["recipe"]
    teacher_kv = _kv_factor(rec["seq_prompt"], rec["context"] + 1 - rec["seq_prompt"])
    student_kv = _kv_factor(rec["onpolicy_prompt"], rec["context"] - rec["onpolicy_prompt"])
    table = pd.DataFrame(result["table"] + result.get("extra", []))
    users = {"seq-level KD": ("transfer", (table["method"] == "seq-level KD").sum()),
             "top-k KD": ("pool", (table["method"] == "top-k KD").sum() + len(result["sweep"]) - 1)}
    rows = []
    for method, g in table.groupby("method", sort=False):
        trained = g["trained_positions"].mean()
        name, n = users.get(method, (None, 1))
        once = result["shared"][name] if name else {}
        share = {k: once.get(k, 0) / n for k in ("teacher_positions", "teacher_generation_positions",
                                                 "teacher_generated")}
        scored = g["teacher_positions"].mean() + share["teacher_positions"]
        teacher_chars = g["teacher_generated"].mean() + share["teacher_generated"]
        rows.append({"method": method, "trained positions / run": trained,
                     "teacher positions / trained": (scored + g["teacher_generation_positions"].mean()
                                                     + share["teacher_generation_positions"]) / trained,
                     "teacher positions / trained, KV cache": (scored + teacher_chars * teacher_kv) / trained,
                     "teacher-generated chars / trained": (g["teacher_generated"].mean()
                                                           + share["teacher_generated"]) / trained,
                     "student generation positions / trained": g["student_generation_positions"].mean() / trained,
                     "student generation positions / trained, KV cache": (g["student_generated"].mean() * student_kv
                                                                          / trained),
                     "student-generated chars / trained": g["student_generated"].mean() / trained,
                     "on-policy share of batches": (g["sampled_batches"] / (g["sampled_batches"]
                                                                            + g["corpus_batches"])).mean(),
                     "seconds / run": g["seconds"].mean() + (once.get("seconds", 0.0) / n)})
    return pd.DataFrame(rows).set_index("method")


def cost_closed_forms(rec: dict | Recipe, sampled_share: float) -> dict:
    """The cost table's quoted numbers from the recipe alone, to check the counted ones. Notebook 10_generative_kd.

    sampled_share: the on-policy runs' measured share of sampled batches (a seeded coin with probability lam).
    """
    r = rec.asdict() if isinstance(rec, Recipe) else rec
    if not 0.0 <= sampled_share <= 1.0:
        raise ValueError(f"sampled_share={sampled_share!r}: a share of batches, in [0, 1]")
    P, C, Q = r["seq_prompt"], r["context"], r["onpolicy_prompt"]
    n_seq, n_on = C + 1 - P, C - Q                # characters the teacher / the on-policy student write
    seq_trained = r["steps"] * r["batch_size"] * n_seq  # SequenceKD trains on the written characters only
    on_trained = sampled_share * (n_on + 1) + (1 - sampled_share) * C  # per row: sampled positions or a window
    return {"teacher_positions_per_generated_char": uncached_positions(1, P, n_seq, C) / n_seq,
            "teacher_positions_per_generated_char_kv": cached_positions(1, P, n_seq) / n_seq,
            "seq_kd_teacher_positions_per_trained": r["seq_sequences"] * uncached_positions(1, P, n_seq, C)
            / seq_trained,
            "seq_kd_teacher_positions_per_trained_kv": r["seq_sequences"] * cached_positions(1, P, n_seq) / seq_trained,
            "on_policy_trained_per_row": on_trained,
            "on_policy_student_positions_per_trained": sampled_share * uncached_positions(1, Q, n_on, C) / on_trained,
            "on_policy_student_positions_per_trained_kv": sampled_share * cached_positions(1, Q, n_on) / on_trained}
