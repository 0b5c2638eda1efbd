"""KD in the compression toolbox: a distilled student, then int8 quantization and magnitude pruning, measured.

Introduced in notebook 14_compression_toolbox. Distillation changes the architecture (fewer, narrower
layers); dynamic int8 quantization stores the Linear weights in 8 bits and quantizes activations on the
fly; unstructured magnitude pruning zeroes the smallest weights. The three compose. `seed_study` trains,
per seed, the student from scratch and distilled, prunes the distilled one and fine-tunes it with the
teacher and, as the control, with the labels alone. `compare` measures teacher and students side by side
in one run, as `runs.deploy.model_table` does, and adds what that table cannot see: int8 models (no
nn.Linear, no parameters), pruned weights stored sparse, zero weights.
"""
from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.nn.utils import prune

from kd_lessons import config
from kd_lessons.models import MLPStudent, count_params, measure_latency, size_on_disk
from kd_lessons.objectives import CrossEntropy, HintonKD
from kd_lessons.plots import new_figure
from kd_lessons.recipes import Recipe, check_recipe, pick
from kd_lessons.runs.students import load_split
from kd_lessons.teachers import cached_logits
from kd_lessons.train import TrainOptions, distill, evaluate

__all__ = ["ARMS", "CompressionRecipe", "recipe", "make_student", "trained_student", "seed_study",
           "quantize_int8", "prune_magnitude", "zero_fraction", "sparse_size_on_disk", "make_permanent", "compare",
           "plot_table"]

# the rows of seed_study, per seed: the pruned net before any fine-tune, then its two fine-tunes (same mask, steps)
ARMS = ("scratch", "distilled", "distilled int8", "pruned", "pruned + KD fine-tune", "pruned + CE fine-tune")


@dataclass(frozen=True)
class CompressionRecipe(Recipe):
    """The lesson's budget in the current mode. Notebook 14_compression_toolbox."""

    dataset: str = "mnist"
    hidden: tuple[int, ...] = (400, 400)
    num_epochs: int = pick(4, 1)
    n_train: int | None = pick(None, 5000)  # None: the whole training set; else a class-balanced subset per seed
    lr: float = 3e-3
    batch_size: int = 128
    T: float = 4.0
    alpha: float = 0.9
    prune_amount: float = 0.8  # the share of weights magnitude pruning zeroes
    finetune_epochs: int = pick(1, 1)

    def _check(self) -> None:
        if not self.hidden or min(self.hidden) < 1:
            self._fail("hidden", "pass positive layer widths, e.g. (400, 400)")
        self._positive("num_epochs", "n_train", "lr", "batch_size", "T", "finetune_epochs")
        self._between("alpha", 0.0, 1.0)
        self._between("prune_amount", 0.0, 1.0)


def recipe(**overrides) -> CompressionRecipe:
    """The lesson's budget in the current mode; overrides replace fields. Notebook 14_compression_toolbox."""
    return CompressionRecipe(**check_recipe(CompressionRecipe, overrides))


def make_student(rec: CompressionRecipe) -> MLPStudent:
    """The student: an MLP, because dynamic int8 quantization (and most of the bytes) live in Linear layers."""
    return MLPStudent(hidden=rec.hidden)


def trained_student(teacher: nn.Module | None, data: dict, rec: CompressionRecipe, seed: int = 0,
                    student: nn.Module | None = None, num_epochs: int | None = None) -> nn.Module:
    """Train `student` (default: a new make_student) on data["x"]: Hinton's loss from `teacher`, or the labels
    alone when teacher is None (scratch, the CE fine-tune). Notebook 14_compression_toolbox.

    The teacher's logits are computed once and cached on disk. Passing a pruned student fine-tunes it:
    torch's pruning hooks keep its zeros at zero while it trains.
    """
    config.seed_everything(seed)
    student = make_student(rec) if student is None else student
    logits = None if teacher is None else cached_logits(teacher, data["x"])
    objective = CrossEntropy() if teacher is None else HintonKD(rec.T, rec.alpha)
    distill(student, data["x"], data["y"], logits, objective, num_epochs=num_epochs or rec.num_epochs, lr=rec.lr,
            options=TrainOptions(batch_size=rec.batch_size, seed=seed, progress=False))
    return student.eval()


def _errors(model: nn.Module, data: dict) -> int:
    return evaluate(model, data["x_test"], data["y_test"], device="cpu")["errors"]


def seed_study(teacher: nn.Module, rec: CompressionRecipe, seeds=(0, 1, 2)) -> tuple[pd.DataFrame, dict]:
    """Test errors of every ARMS row per seed, and the first seed's models. Notebook 14_compression_toolbox.

    A seed draws the training subset, the initialisations and the batch orders; scratch and distilled share
    them, and so do the two fine-tunes of the same pruned net (same mask, same steps): every comparison is
    paired. The teacher and the test set are fixed. Models: "student", "student from scratch", "student
    pruned" (KD fine-tune) and "student pruned, CE fine-tune", for `compare`.
    """
    if not seeds:
        raise ValueError(f"seeds={list(seeds)!r}: pass at least one seed, e.g. seeds=[0, 1, 2]")
    rows, models = [], {}
    for seed in seeds:
        data = load_split(rec.dataset, n_train=rec.n_train, seed=seed)
        scratch = trained_student(None, data, rec, seed)
        student = trained_student(teacher, data, rec, seed)
        pruned = prune_magnitude(student, rec.prune_amount)
        found = {"scratch": scratch, "distilled": student, "distilled int8": quantize_int8(student)[0],
                 "pruned": pruned}
        errors = {name: _errors(model, data) for name, model in found.items()}
        for name, labels_only in (("pruned + KD fine-tune", False), ("pruned + CE fine-tune", True)):
            tuned = trained_student(None if labels_only else teacher, data, rec, seed,
                                    student=prune_magnitude(student, rec.prune_amount),
                                    num_epochs=rec.finetune_epochs)
            found[name] = make_permanent(tuned)
            errors[name] = _errors(found[name], data)
        rows += [{"arm": name, "seed": seed, "errors": errors[name]} for name in ARMS]
        if not models:
            models = {"student": student, "student from scratch": scratch, "student pruned": found[ARMS[4]],
                      "student pruned, CE fine-tune": found[ARMS[5]]}
    return pd.DataFrame(rows), models


def quantize_int8(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """(a dynamic-int8 copy of model's Linear layers, the warnings torch raised doing it). Notebook 14.

    torch 2.14 still ships `torch.ao.quantization.quantize_dynamic` but marks it deprecated in favour
    of the separate torchao package (`quantize_` with `Int8DynamicActivationInt8WeightConfig`), which this
    course does not install; the warnings are returned so the lesson can show them instead of hiding them.
    The copy runs on the CPU (these int8 kernels are CPU kernels); the caller's model is not changed.
    """
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer, so dynamic int8 quantization would change "
                         "nothing; quantize an MLP student (or a model with Linear layers)")
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:  # pragma: no cover - a future torch without it
        raise ValueError("this torch has no torch.ao.quantization.quantize_dynamic; install torchao and use "
                         "torchao.quantization.quantize_(model, Int8DynamicActivationInt8WeightConfig())") from exc
    source = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantized = quantize_dynamic(source, {nn.Linear}, dtype=torch.qint8)
    messages = sorted({str(w.message).strip().splitlines()[0] for w in caught})
    return quantized.eval(), messages


def prune_magnitude(model: nn.Module, amount: float) -> nn.Module:
    """A copy of model with the `amount` smallest |weights| of every Linear/Conv2d layer set to zero. Notebook 14.

    Uses torch.nn.utils.prune (L1 unstructured, per layer), keeps the mask while you fine-tune the copy
    (prune's forward pre-hook), and `prune.remove` later makes the zeros permanent in a plain dense tensor.
    """
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 < float(amount) < 1.0:
        raise ValueError(f"amount={amount!r}: pass the fraction of weights to zero, a number in (0, 1) such as 0.8")
    pruned = copy.deepcopy(model)
    layers = [m for m in pruned.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv2d layer to prune")
    for m in layers:
        prune.l1_unstructured(m, name="weight", amount=float(amount))
    return pruned


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold the pruning masks into the weights (prune.remove), leaving ordinary dense tensors with zeros."""
    for m in model.modules():
        if prune.is_pruned(m) and hasattr(m, "weight_orig"):
            prune.remove(m, "weight")
    return model


def zero_fraction(model: nn.Module) -> float:
    """Share of exactly-zero entries among the Linear/Conv2d weights (0 for an unpruned model)."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not weights:
        return float("nan")
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total)


def sparse_size_on_disk(model: nn.Module) -> int:
    """Bytes of the state_dict with every weight matrix stored sparse (CSR: values + int32 indices). Notebook 14.

    What unstructured pruning buys on disk only when the file is written this way; a dense state_dict
    (models.size_on_disk) stores a zero in as many bytes as any other float.
    """
    state = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta": only saving here
        for name, t in model.state_dict().items():
            if name.endswith("weight") and t.dim() == 2 and t.is_floating_point():
                csr = t.to_sparse_csr()
                t = torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(), csr.values(), t.shape)
            state[name] = t
        buf = io.BytesIO()
        torch.save(state, buf)
    return buf.getbuffer().nbytes


def compare(models: dict[str, nn.Module], data: dict, repeats: int = 20, rounds: int = 5,
            batch_sizes=(1, 256)) -> pd.DataFrame:
    """Parameters, bytes (dense and sparse-stored), zero weights, test errors and latency of every model,
    measured side by side on the CPU in one run. Notebook 14_compression_toolbox.

    Like runs.deploy.model_table (latency: the fastest of `rounds` interleaved medians of `repeats` calls),
    but it also handles int8 models: their layers are not nn.Linear and hold no nn.Parameter, so the
    parameter count of "<name> int8" is that of "<name>" (same weights, 8 bits each) when both are given.
    """
    if not models:
        raise ValueError("models is empty; pass e.g. {'teacher': teacher, 'student': student}")
    rows = {}
    for name, model in models.items():
        quantized = not any(True for _ in model.parameters())
        source = models.get(name.replace(" int8", "")) if quantized else model
        result = evaluate(model, data["x_test"], data["y_test"], device="cpu")
        rows[name] = {"params": count_params(source) if source is not None else float("nan"),
                      "size_MB": size_on_disk(model) / 1e6,
                      "sparse_MB": float("nan") if quantized else sparse_size_on_disk(model) / 1e6,
                      "zero_weights": float("nan") if quantized else zero_fraction(model),
                      "accuracy": result["accuracy"], "errors": result["errors"]}
    for b in batch_sizes:
        times = {name: [] for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                times[name].append(measure_latency(model, (1, 28, 28), batch_size=b, device="cpu", repeats=repeats,
                                                   warmup=2))
        for name in models:
            rows[name][f"latency_ms_b{b}"] = min(times[name])
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_table(table: pd.DataFrame):
    """Size, latency (batch 1 and 256) and test errors of every model as bars: the trade-off at a glance.

    Introduced in notebook 14_compression_toolbox. Sizes show the dense file and, where it exists, the
    sparse-stored one; latency bars are log-scaled because the teacher and the int8 student differ by 10x+.
    """
    needed = {"size_MB", "sparse_MB", "errors", "latency_ms_b1", "latency_ms_b256"}
    if missing := needed - set(table.columns):
        raise ValueError(f"table lacks columns {sorted(missing)}; pass the DataFrame returned by compare(...)")
    names = list(table.index)
    pos = range(len(names))
    fig = new_figure(13, 3.6)
    axes = fig.subplots(1, 3)
    axes[0].barh(pos, table["size_MB"], color="tab:blue", label="dense file")
    axes[0].barh(pos, table["sparse_MB"].fillna(0), height=0.4, color="tab:orange", label="stored sparse")
    axes[0].set(xlabel="MB on disk", title="size")
    axes[0].legend(fontsize=8)
    for offset, b, colour in ((-0.2, 1, "tab:green"), (0.2, 256, "tab:purple")):
        axes[1].barh([p + offset for p in pos], table[f"latency_ms_b{b}"], height=0.4, color=colour,
                     label=f"batch {b}")
    axes[1].set(xscale="log", xlabel="ms per call (log)", title="latency on this CPU")
    axes[1].legend(fontsize=8)
    axes[2].barh(pos, table["errors"], color="tab:red")
    axes[2].set(xlabel="test errors (of 10,000)", title="accuracy cost")
    for ax in axes:
        ax.set_yticks(list(pos), names if ax is axes[0] else [""] * len(names))
        ax.invert_yaxis()
    return fig
