"""Reasoning distillation on the addition task: a cached teacher, five kinds of students, and the traces curve.

Introduced in notebook 13_reasoning_distillation. `get_reasoning_teacher()` trains a CharTransformer on
true scratchpad traces once and caches it (verified checkpoint, built by cache.build_once,
like generative.zoo). `teacher_data` lets it write traces for the students' problems, and `teacher_traces`
one draw of them per seed, so each seed resamples the traces as well as the student's init and batch order
(the problems themselves are fixed); `train_student` teaches one student by one of METHODS (same student,
same steps, same batch size for all) and counts the target tokens it was taught; `compare` runs every
method over seeds and `traces_curve` varies the number of teacher traces. Accuracy is exact match of the
final answer, on held-out problems of the longest trained length and on longer operands than any in training.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from kd_lessons import cache, config
from kd_lessons.generative import scratchpad as task
from kd_lessons.generative.lm import LMOptions, train_lm
from kd_lessons.generative.scratchpad import TextBatches  # re-exported: the students' batches
from kd_lessons.generative.transformer import CharTransformer
from kd_lessons.models import count_params
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs import seeds as by_seed

__all__ = ["METHODS", "FORMATS", "WITH_TRACE", "TraceStudentsRecipe", "recipe", "problem_sets",
           "get_reasoning_teacher", "teacher_data", "teacher_traces", "TextBatches", "make_student", "train_student",
           "accuracy", "compare", "traces_curve", "checkpoint_path", "summarize"]

# What each student learns from (the letters of issue 17); the last three write a trace first.
METHODS = {"answers": "a: true answers only",
           "reversed answers": "a': true answers only, least significant digit first",
           "teacher answers": "b: the teacher's answers only",
           "teacher traces": "c: the teacher's traces + answers (hard CoT distillation)",
           "soft KD traces": "d: token-level soft KD on the teacher's traces",
           "filtered traces": "e: teacher traces whose answer is right (rejection sampling)"}
FORMATS = {"answers": "answer", "reversed answers": "reversed", "teacher answers": "answer", "teacher traces": "trace",
           "soft KD traces": "trace", "filtered traces": "trace"}
WITH_TRACE = {m: f == "trace" for m, f in FORMATS.items()}


@dataclass(frozen=True)
class TraceStudentsRecipe(Recipe):
    """Task sizes, teacher, students and budgets of the current mode. Notebook 13_reasoning_distillation.

    Chosen by measurement on 2 shared cores: the full teacher (d=64, 2 layers, 600 steps) is 99.8% right
    on held-out 3-digit sums; with 4 digits the student budget needed for trace students to learn
    did not fit the 10-minute notebook. Architectures are (d_model, n_layers, n_heads).
    """

    task: str = "addition-scratchpad-v1"
    digits: int = pick(3, 2)
    longer: int = pick(4, 3)  # operand length of the "longer" test problems
    teacher_problems: int = pick(20_000, 2_000)
    teacher_arch: tuple[int, int, int] = pick((64, 2, 4), (32, 2, 2))
    teacher_steps: int = pick(600, 300)
    teacher_lr: float = pick(3e-3, 1e-2)
    student_arch: tuple[int, int, int] = pick((32, 2, 2), (20, 1, 2))
    student_steps: int = pick(400, 250)
    student_lr: float = 1e-2
    n_traces: int = pick(4000, 300)
    trace_T: float = 1.0
    kd_T: float = 1.0
    batch_size: int = 64
    n_eval: int = pick(500, 100)
    context: int = 64
    seed: int = 0

    def _check(self) -> None:
        self._one_of("task", ("addition-scratchpad-v1",))
        self._positive("digits", "teacher_problems", "teacher_steps", "teacher_lr", "student_steps", "student_lr",
                       "n_traces", "trace_T", "kd_T", "batch_size", "n_eval", "context")
        if self.longer < self.digits:
            self._fail("longer", f"must be >= digits={self.digits}")


def recipe(**overrides) -> TraceStudentsRecipe:
    """The lesson's recipe in the current mode; overrides replace fields. Notebook 13_reasoning_distillation."""
    return TraceStudentsRecipe(**check_recipe(TraceStudentsRecipe, overrides))


def problem_sets(rec: TraceStudentsRecipe) -> dict:
    """Disjoint problem lists: teacher_train, student (prompts the teacher answers), held_out, longer. Notebook 13."""
    lengths = list(range(1, rec.digits + 1))
    teacher_train = task.make_problems(rec.teacher_problems, lengths, seed=rec.seed)
    student = task.make_problems(rec.n_traces, lengths, seed=rec.seed + 1, exclude=set(teacher_train))
    seen = set(teacher_train) | set(student)
    return {"teacher_train": teacher_train, "student": student,
            "held_out": task.make_problems(rec.n_eval, rec.digits, seed=rec.seed + 2, exclude=seen),
            "longer": task.make_problems(rec.n_eval, rec.longer, seed=rec.seed + 3)}


def _model(arch, context: int) -> CharTransformer:
    d_model, n_layers, n_heads = arch
    return CharTransformer(len(task.VOCAB), d_model, n_layers, n_heads, context, dropout=0.0)


def make_student(rec: TraceStudentsRecipe, seed: int) -> CharTransformer:
    """An untrained student of the recipe's (smaller) size, seeded. Notebook 13_reasoning_distillation."""
    torch.manual_seed(seed)
    return _model(rec.student_arch, rec.context)


def accuracy(model, problems, with_trace: bool, reverse: bool = False) -> float:
    """Exact-match accuracy of greedy answers (reverse: answers written backwards). Notebook 13."""
    return task.exact_match(task.solve(model, problems, with_trace), problems, reverse)


def checkpoint_path(rec: TraceStudentsRecipe | None = None) -> Path:
    """Where the recipe's teacher is cached (kind "teachers"). Notebook 13_reasoning_distillation."""
    rec = rec or recipe()
    return cache.path("teachers", f"reasoning-addition-{config.mode()}-{rec.key}.pt")


def _meta(rec: TraceStudentsRecipe) -> dict:
    return {"recipe_hash": rec.key, "kind": "kd_lessons.reasoning_teacher"}


def _load(path: Path, rec: TraceStudentsRecipe):
    """(teacher, info) from its verified checkpoint; raises FileNotFoundError or one of cache.UNUSABLE."""
    return cache.load_checkpoint(path, _meta(rec), lambda info: _model(rec.teacher_arch, rec.context))


def _train_teacher(rec: TraceStudentsRecipe, device, progress: bool):
    sets = problem_sets(rec)
    torch.manual_seed(rec.seed)
    teacher = _model(rec.teacher_arch, rec.context)
    batches = TextBatches([task.example(a, b) for a, b in sets["teacher_train"]], rec.batch_size)
    history = train_lm(teacher, None, rec.teacher_steps, lr=rec.teacher_lr, loss_fn=task.masked_cross_entropy,
                       batch_fn=batches, options=LMOptions(seed=rec.seed, device=device, progress=progress,
                                                           desc=f"reasoning teacher ({config.mode()})"))
    teacher.eval()
    info = {"params": count_params(teacher), "train_seconds": round(history["seconds"], 1),
            "steps": rec.teacher_steps, "history": {k: history[k] for k in ("step", "train_loss")},
            "held_out": accuracy(teacher, sets["held_out"], True), "longer": accuracy(teacher, sets["longer"], True),
            "example": task.solve(teacher, sets["held_out"][:1])[0], "device": str(device), "recipe": rec.asdict()}
    return teacher, info


def get_reasoning_teacher(device=None, retrain: bool = False, recipe_override: dict | None = None,
                          progress: bool = True) -> tuple[CharTransformer, dict]:
    """(teacher in eval mode, info), from the verified cache or trained now. Notebook 13_reasoning_distillation.

    info: params, train_seconds, steps, history, held_out and longer (greedy exact match), example, recipe.
    """
    device = config.resolve_device(device)
    rec = recipe(**(recipe_override or {}))
    teacher, info = cache.build_once(
        checkpoint_path(rec), _meta(rec), lambda: _train_teacher(rec, device, progress), "the reasoning teacher",
        save=lambda built, file: cache.save_checkpoint(*built, file, {**_meta(rec), "held_out": built[1]["held_out"]}),
        load=lambda file: _load(file, rec), refresh=retrain)
    return teacher.to(device).eval(), info


def teacher_data(teacher, problems, rec: TraceStudentsRecipe, texts=None, seed: int | None = None) -> dict:
    """What the students learn from: the teacher's sampled texts (at trace_T), its logits on them, answers.

    Returns texts (one per problem), logits [N, L, V] on encode_batch(texts)'s inputs, answers (texts
    for 'a+b>answer$', only where the teacher wrote an answer) and right (is each final answer right).
    `seed` seeds the sampling (rec.seed by default); `texts` replaces the sampled traces (e.g. traces from
    elsewhere, scored by this teacher).
    """
    if texts is None:
        generator = torch.Generator().manual_seed(rec.seed if seed is None else seed)
        texts = task.solve(teacher, problems, True, T=rec.trace_T, generator=generator)
    elif len(texts) != len(problems):
        raise ValueError(f"got {len(texts)} texts for {len(problems)} problems; pass one text per problem")
    x, _, _ = task.encode_batch(texts)
    device = next(teacher.parameters()).device
    with torch.no_grad():
        logits = torch.cat([teacher(x[i:i + 512].to(device)).cpu() for i in range(0, len(x), 512)])
    answers = [f"{task.prompt(a, b, False)}{task.parse_answer(t)}{task.END}" for t, (a, b) in zip(texts, problems)
               if task.parse_answer(t) is not None]
    return {"texts": texts, "logits": logits, "answers": answers, "problems": list(problems),
            "right": [task.is_correct(t, a, b) for t, (a, b) in zip(texts, problems)]}


def teacher_traces(teacher, problems, rec: TraceStudentsRecipe, seeds) -> dict:
    """{seed: teacher_data(...)}: the teacher samples its traces anew for every seed. Notebook 13."""
    if not seeds:
        raise ValueError("seeds is empty; pass e.g. seeds=[0, 1, 2] (one draw of the teacher's traces per seed)")
    return {seed: teacher_data(teacher, problems, rec, seed=seed) for seed in seeds}


def _for_seed(data: dict, seed: int) -> dict:
    """The seed's own draw of teacher_traces(...); one teacher_data(...) is the same draw for every seed."""
    if "texts" in data:
        return data
    if seed not in data:
        raise ValueError(f"no teacher traces for seed {seed} (have seeds {sorted(data)}); pass "
                         "teacher_traces(teacher, problems, rec, seeds) with every seed you train")
    return data[seed]


def _nonempty(texts: list, what: str) -> list:
    if not texts:
        raise ValueError(f"none of the teacher's texts {what}, so this student has nothing to learn from; train "
                         "the teacher longer (recipe teacher_steps) or give it more problems (n_traces)")
    return texts


def _method_batches(method: str, data: dict, rec: TraceStudentsRecipe, n: int | None) -> TextBatches:
    problems, texts = data["problems"][:n], data["texts"][:n]
    if method in ("answers", "reversed answers"):
        return TextBatches([task.example(a, b, False, reverse=method == "reversed answers") for a, b in problems],
                           rec.batch_size)
    if method == "teacher answers":
        return TextBatches(_nonempty(data["answers"][:n], "wrote no answer"), rec.batch_size)
    if method == "teacher traces":
        return TextBatches(texts, rec.batch_size)
    if method == "soft KD traces":
        return TextBatches(texts, rec.batch_size, data["logits"][:n])
    if method == "filtered traces":
        return TextBatches(_nonempty(task.filter_correct(texts, problems)[0], "has a right answer"), rec.batch_size)
    raise ValueError(f"method={method!r}: use one of {list(METHODS)}")


def train_student(method: str, data: dict, rec: TraceStudentsRecipe, seed: int, n: int | None = None, device=None,
                  progress: bool = False) -> tuple[CharTransformer, dict]:
    """One student taught by `method` from the first `n` problems' data. Notebook 13_reasoning_distillation.

    `data`: teacher_data(...) or teacher_traces(...) (the seed's own draw is used). info: examples, seconds,
    target_tokens (taught positions over all steps: how much supervision the student got).
    """
    batches = _method_batches(method, _for_seed(data, seed), rec, n)
    loss_fn = batches.soft_kd_loss(rec.kd_T) if method == "soft KD traces" else task.masked_cross_entropy
    student = make_student(rec, seed)
    history = train_lm(student, None, rec.student_steps, lr=rec.student_lr, loss_fn=loss_fn, batch_fn=batches,
                       options=LMOptions(seed=seed, device=device, progress=progress, desc=method))
    return student.eval(), {"examples": len(batches.x), "seconds": history["seconds"], "target_tokens": batches.taught}


def _scores(student, sets: dict, method: str) -> dict:
    """Exact match on both test sets, and the share of held-out answers that are copy slips (trace methods)."""
    fmt, out = FORMATS[method], {}
    for name in ("held_out", "longer"):
        texts = task.solve(student, sets[name], fmt == "trace")
        out[name] = task.exact_match(texts, sets[name], fmt == "reversed")
        if name == "held_out":  # every step right, the answer wrong: the teacher's copying slip
            slips = sum(task.classify(t, a, b) == task.KINDS[2] for t, (a, b) in zip(texts, sets[name]))
            out["copy_slips"] = slips / len(texts) if fmt == "trace" else float("nan")
    return out


def compare(data: dict, sets: dict, rec: TraceStudentsRecipe, seeds, methods=None, device=None) -> pd.DataFrame:
    """Every method x seed: exact match, copy slips, target tokens taught. Notebook 13_reasoning_distillation.

    `data`: teacher_traces(...) (each seed its own draw of the teacher's traces) or one teacher_data(...).
    """
    methods = list(methods or METHODS)
    rows = []
    for method in tqdm(methods, desc="methods"):
        for seed in seeds:
            student, info = train_student(method, data, rec, seed, device=device)
            start = time.perf_counter()
            rows.append({"method": method, "seed": seed, "examples": info["examples"],
                         "target_tokens": info["target_tokens"], **_scores(student, sets, method),
                         "train_seconds": info["seconds"], "eval_seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def traces_curve(data: dict, sets: dict, rec: TraceStudentsRecipe, seeds, sizes, method: str = "teacher traces",
                 device=None, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Held-out exact match against the number of teacher traces the student sees. Notebook 13.

    `table`: compare(...)'s rows; a (seed, all traces) point it already holds for `method` is reused, not retrained.
    """
    total = min(len(_for_seed(data, s)["texts"]) for s in seeds) if seeds else 0
    if not sizes or any(not 1 <= n <= total for n in sizes):
        raise ValueError(f"sizes={sizes!r}: use counts in 1..{total} (the teacher's traces)")
    known = {} if table is None else {int(r.seed): r for r in table[table["method"] == method].itertuples()}
    rows = []
    for n in tqdm(sizes, desc="traces"):
        for seed in seeds:
            if n == total and seed in known:
                rows.append({"traces": n, "seed": seed, "examples": known[seed].examples,
                             "held_out": known[seed].held_out})
                continue
            student, info = train_student(method, data, rec, seed, n=n, device=device)
            rows.append({"traces": n, "seed": seed, "examples": info["examples"],
                         "held_out": accuracy(student, sets["held_out"], WITH_TRACE[method])})
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame, by: str = "method") -> pd.DataFrame:
    """Mean and std over seeds of held-out (and longer-operand) exact match. Notebook 13_reasoning_distillation."""
    columns = [c for c in ("held_out", "longer") if c in table]
    if by not in table or not columns:
        raise ValueError(f"pass compare(...) or traces_curve(...)'s table; got columns {list(table.columns)}")
    return by_seed.summarize(table, columns, by)
