"""Sequence-level KD data as an interview exercise (23): the teacher, in eval mode without a graph, writes it.

Introduced in notebook 09_coding_exercises (part 4); sequence-level KD (Kim & Rush 2016) is in notebook
10_generative_kd (generative.transfer_data.transfer_corpus). The learner's generation runs on a tiny dropout
Transformer left in train mode, next to a reference; a known wrong generation (a GenerationMistake) names
the mistake.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kd_lessons.exercises.core import Exercise, Incorrect, Variant, call


def _tiny_lm(seed: int, dropout: float):
    """A tiny causal language model (CharTransformer) with dropout, so train vs eval mode changes its outputs."""
    from kd_lessons.generative.transformer import CharTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CharTransformer(vocab_size=11, d_model=16, n_layers=1, n_heads=2, context=16, dropout=dropout)
    return model


@dataclass(frozen=True)
class GenerationMistake:
    """Which known mistake reference_generate makes; the defaults make none. Notebook 09_coding_exercises.

    position: the position whose logits pick the next token (-1, the last); feed_back=False feeds the prompt
    only; mode="train" leaves the teacher in train mode; grad=True generates with autograd on.
    """

    position: int = -1
    feed_back: bool = True
    mode: str | None = None
    grad: bool = False


def reference_generate(teacher, prompt, num_new_tokens, greedy, generator, mistake: GenerationMistake | None = None):
    """The correct generation (or, given a GenerationMistake, a known wrong one). Notebook 09_coding_exercises."""
    mistake = GenerationMistake() if mistake is None else mistake
    if mistake.mode != "train":
        teacher.eval()
    ids, context = prompt, prompt
    with torch.set_grad_enabled(mistake.grad):
        for _ in range(num_new_tokens):
            logits = teacher(context)[:, mistake.position]
            if greedy:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            ids = torch.cat([ids, nxt], dim=1)
            context = ids if mistake.feed_back else prompt
    return ids


def _gen(**mistake):
    """A generation with one known mistake (GenerationMistake's fields), with the learner's signature."""
    wrong = GenerationMistake(**mistake)
    return lambda teacher, prompt, n, greedy, generator: reference_generate(teacher, prompt, n, greedy, generator,
                                                                            wrong)


GEN_VARIANTS = (
    Variant("teacher_train_mode", "The teacher ran in train mode: its dropout was on, so the tokens it wrote "
            "were noisier than the teacher really is. Call teacher.eval() before generating.", _gen(mode="train")),
    Variant("teacher_grad", "The teacher ran with autograd on: every step built a graph you never use (memory "
            "grows with the length). Generate under torch.no_grad().", _gen(grad=True)),
    Variant("prompt_dropped", "You returned only the new tokens: return the prompt followed by them, "
            "[B, P + num_new_tokens], as the training sequences.",
            lambda t, p, n, g, gen: reference_generate(t, p, n, g, gen)[:, p.shape[1]:]),
    Variant("always_greedy", "With greedy=False you still took the argmax: sample the next token with "
            "torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).",
            lambda t, p, n, g, gen: reference_generate(t, p, n, True, gen)),
    Variant("always_sampling", "With greedy=True you sampled: greedy decoding takes logits.argmax(dim=-1) "
            "(Kim & Rush's sequence-level KD uses beam search, whose width-1 case is greedy).",
            lambda t, p, n, g, gen: reference_generate(t, p, n, False, gen)),
    Variant("first_position", "You read the logits at position 0: the next token is predicted by the last "
            "position, teacher(ids)[:, -1].", _gen(position=0)),
    Variant("no_feedback", "Each step fed the teacher the prompt only: append each new token and feed the "
            "grown sequence back (autoregressive generation).", _gen(feed_back=False)),
)


class TeacherSequences(Exercise):
    """Exercise 23 of notebook 09_coding_exercises: sequence-level KD data, teacher in eval mode, no_grad."""

    number, key, title, fn_name = 23, "teacher_sequences", "Sequence-level KD data", "generate_teacher_data"
    variants, other_mistakes = GEN_VARIANTS, ("no_teacher", "return_type")
    hint_text = ("teacher.eval(); under torch.no_grad() loop num_new_tokens times: logits = teacher(ids)[:, -1]; "
                 "argmax if greedy, else torch.multinomial(F.softmax(logits, -1), 1, generator=generator); "
                 "ids = torch.cat([ids, next_ids], dim=1).")
    solution_code = '''def generate_teacher_data(teacher, prompt, num_new_tokens, greedy, generator):
    """Continue each prompt [B, P] with num_new_tokens teacher tokens; return the ids [B, P + num_new_tokens]."""
    teacher.eval()                                # dropout off: the teacher at its best
    ids = prompt
    with torch.no_grad():                         # data generation: no graph, no gradients
        for _ in range(num_new_tokens):
            logits = teacher(ids)[:, -1]          # the next-token logits [B, V]
            if greedy:
                next_ids = logits.argmax(dim=-1, keepdim=True)
            else:
                next_ids = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            ids = torch.cat([ids, next_ids], dim=1)
    return ids
'''

    def _check(self, fn):
        """Run the learner's generation on a tiny dropout Transformer (left in train mode) next to the reference."""
        for seed, greedy in ((0, True), (1, False), (2, False)):
            out, flags = _run_generation(lambda *a: call(fn, *a), seed, greedy)
            if not flags:
                raise Incorrect("the teacher was never called: each new token comes from teacher(ids).", "no_teacher")
            expected, _ = _run_generation(reference_generate, seed, greedy)
            if isinstance(out, torch.Tensor) and out.shape == expected.shape and torch.equal(out, expected) \
                    and not any(training or grad for training, grad in flags):
                continue
            for variant in self.variants:
                try:
                    candidate, candidate_flags = _run_generation(variant.fn, seed, greedy)
                except Exception:  # noqa: BLE001 - a variant that cannot run here names nothing
                    continue
                if _same_run(out, flags, candidate, candidate_flags):
                    raise Incorrect(variant.hint, variant.name)
            if not isinstance(out, torch.Tensor) or out.dtype != torch.int64:
                raise Incorrect(f"return the token ids as an int64 tensor; got {type(out).__name__}"
                                f"{' of ' + str(out.dtype) if isinstance(out, torch.Tensor) else ''}.", "return_type")
            raise Incorrect(f"your tokens differ from the reference ({'greedy' if greedy else 'sampled'}, seed "
                            f"{seed}): got shape {list(out.shape)}, expected {list(expected.shape)}. Sample with "
                            "torch.multinomial(..., generator=generator), one draw per step, so draws match.", None)


def _run_generation(step, seed: int, greedy: bool):
    """(ids, [(teacher.training, grad enabled) per teacher call]) for a fresh tiny teacher left in train mode."""
    teacher = _tiny_lm(seed, dropout=0.5).train()
    flags = []
    hook = teacher.register_forward_hook(lambda m, i, o: flags.append((m.training, torch.is_grad_enabled())))
    g = torch.Generator().manual_seed(100 + seed)
    prompt = torch.randint(0, 11, (3, 3), generator=g)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout draws: the same for the learner and each candidate
            out = step(teacher, prompt, 6, greedy, torch.Generator().manual_seed(1000 + seed))  # not the global seed
    finally:
        hook.remove()
    return out, flags


def _same_run(out, flags, candidate, candidate_flags) -> bool:
    if not isinstance(out, torch.Tensor) or out.shape != candidate.shape or not torch.equal(out, candidate):
        return False
    return [f for f in flags] == [f for f in candidate_flags]
