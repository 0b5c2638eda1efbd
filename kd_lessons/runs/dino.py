"""DINO on MNIST: full DINO, no centering, no sharpening, over seeds; features scored by k-NN. Lesson 18.

Per seed, `seed_everything(seed)` draws the student's init, then one generator draws the batch order and every
augmentation, so a seed redraws all three. The random-init arm is that very init (untrained), and the supervised
arm trains the same backbone from it with a linear classifier on the labels of the same images for the same
steps and batch size, on one global crop per image (the same crop and noise as DINO's). DINO arms are scored by
their teacher's backbone (the paper's choice), on L2-normalised features: weighted k-NN (k = 20, T = 0.07, as the
paper) with a bank of labelled train images, queried by the MNIST test images. The diagnostics of every step are
kept (`methods.dino.diagnostics`). `cached_run` caches the whole result with `cache.build_once`.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons import cache, config, stats
from kd_lessons.data import load_tensors, stratified_subset
from kd_lessons.figures import new_figure
from kd_lessons.methods.dino import DINO, DINONet, check_momentum, momentum_at, multi_crop
from kd_lessons.recipes import Recipe, check_recipe, pick

__all__ = ["DINORecipe", "recipe", "VARIANTS", "knn_accuracy", "train_dino", "train_supervised", "run",
           "cached_run", "summary", "plot_diagnostics"]

VARIANTS = {"DINO": {}, "no centering": {"centering": False}, "no sharpening": {"sharpening": False}}


@dataclasses.dataclass(frozen=True)
class DINORecipe(Recipe):
    """The settings of lesson 18's DINO runs; the quick values are a smoke test. Lesson 18."""

    n_train: int = pick(12000, 256)   # images DINO trains on (their labels only for the supervised arm)
    n_bank: int = pick(5000, 200)     # labelled train images the k-NN searches
    n_test: int = pick(10000, 200)    # MNIST test images scored
    steps: int = pick(250, 8)
    batch_size: int = pick(64, 32)
    lr: float = 1e-3
    width: int = pick(16, 4)
    out_dim: int = pick(128, 16)      # K prototypes
    tau_s: float = 0.1
    tau_t: float = 0.04
    center_momentum: float = 0.9
    teacher_momentum: float = 0.99    # cosine schedule to 1 (methods.dino.momentum_at)
    n_local: int = 2
    noise: float = 0.2
    knn_k: int = 20
    knn_T: float = 0.07
    seeds: tuple[int, ...] = pick((0, 1, 2), (0, 1))
    threads: int = 0                  # 0: leave torch's thread count alone

    def _check(self) -> None:
        self._positive("n_train", "n_bank", "n_test", "steps", "batch_size", "lr", "width", "out_dim", "tau_s",
                       "tau_t", "knn_k", "knn_T")
        check_momentum(self.center_momentum, "DINORecipe.center_momentum")
        check_momentum(self.teacher_momentum, "DINORecipe.teacher_momentum")
        if not self.seeds:
            self._fail("seeds", "pass at least one seed")


def recipe(**overrides) -> DINORecipe:
    """The current mode's recipe with some fields changed (ValueError names an unknown field). Lesson 18."""
    return DINORecipe(**check_recipe(DINORecipe, overrides))


@torch.no_grad()
def _features(backbone: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    was = backbone.training
    backbone.eval()
    out = torch.cat([backbone(x[i:i + batch]) for i in range(0, len(x), batch)])
    backbone.train(was)
    return F.normalize(out, dim=1)


@torch.no_grad()
def knn_accuracy(backbone: nn.Module, bank, test, k: int = 20, T: float = 0.07, num_classes: int = 10) -> float:
    """Weighted k-NN accuracy (cosine similarity, votes exp(sim / T)), DINO's evaluation. Lesson 18."""
    (xb, yb), (xt, yt) = bank, test
    if k > len(xb):
        raise ValueError(f"k={k} but the bank holds {len(xb)} images; pass k <= {len(xb)}")
    fb, ft = _features(backbone, xb), _features(backbone, xt)
    sim, idx = (ft @ fb.T).topk(k, dim=1)
    votes = torch.zeros(len(ft), num_classes).scatter_add_(1, yb[idx], (sim / T).exp())
    return float((votes.argmax(1) == yt).float().mean())


def _batches(n: int, rec: DINORecipe, g: torch.Generator):
    """rec.steps batches of indices, epoch after epoch of fresh permutations."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(rec.steps):
        if len(order) < rec.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=g)])
        yield order[:rec.batch_size]
        order = order[rec.batch_size:]


def train_dino(net: DINONet, x: torch.Tensor, rec: DINORecipe, g: torch.Generator, **switches):
    """(teacher net, history of diagnostics per step) after rec.steps DINO steps from `net`. Lesson 18."""
    dino = DINO(net, rec.tau_s, rec.tau_t, rec.center_momentum, **switches)
    opt = torch.optim.AdamW(net.parameters(), lr=rec.lr, weight_decay=0.04)
    history: dict[str, list] = {}
    for step, idx in enumerate(_batches(len(x), rec, g)):
        loss, diag = dino(multi_crop(x[idx], g, rec.n_local, rec.noise))
        if not math.isfinite(diag["loss"]):
            raise FloatingPointError(f"DINO loss is {diag['loss']} at step {step}: lower lr={rec.lr}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dino.update(momentum_at(step, rec.steps, rec.teacher_momentum))
        for name, value in diag.items():
            history.setdefault(name, []).append(value)
    return dino.teacher, history


def train_supervised(net: DINONet, x: torch.Tensor, y: torch.Tensor, rec: DINORecipe, g: torch.Generator):
    """The same backbone + a linear classifier trained on labels, same steps, batch, lr and crops. Lesson 18."""
    clf = nn.Linear(net.backbone.dim, 10)
    params = list(net.backbone.parameters()) + list(clf.parameters())
    opt = torch.optim.AdamW(params, lr=rec.lr, weight_decay=0.04)
    for idx in _batches(len(x), rec, g):
        view = multi_crop(x[idx], g, 0, rec.noise)[0]
        loss = F.cross_entropy(clf(net.backbone(view)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net


def _seed_rows(seed: int, rec: DINORecipe, data) -> tuple[dict, dict]:
    """k-NN accuracy of every arm and the DINO variants' histories for one seed."""
    (x, y), bank, test = data
    config.seed_everything(seed)
    init = DINONet(rec.width, rec.out_dim)
    knn = {"random init": knn_accuracy(init.backbone, bank, test, rec.knn_k, rec.knn_T)}
    histories = {}
    for name, switches in VARIANTS.items():
        g = torch.Generator().manual_seed(seed)
        teacher, histories[name] = train_dino(_copy(init), x, rec, g, **switches)
        knn[name] = knn_accuracy(teacher.backbone, bank, test, rec.knn_k, rec.knn_T)
    sup = train_supervised(_copy(init), x, y, rec, torch.Generator().manual_seed(seed))
    knn["supervised"] = knn_accuracy(sup.backbone, bank, test, rec.knn_k, rec.knn_T)
    return knn, histories


def _copy(net: DINONet) -> DINONet:
    clone = DINONet(net.backbone.width, net.head.prototypes.shape[0])
    clone.load_state_dict(net.state_dict())
    return clone


def run(rec: DINORecipe | None = None, progress: bool = True) -> dict:
    """{"recipe", "knn": {arm: [acc per seed]}, "histories": {variant: [per-seed dict of lists]}}. Lesson 18."""
    from tqdm.auto import tqdm

    rec = rec or recipe()
    x, y = stratified_subset(*load_tensors("mnist", True), rec.n_train + rec.n_bank, seed=0)
    xt, yt = stratified_subset(*load_tensors("mnist", False), rec.n_test, seed=0)
    data = ((x[:rec.n_train], y[:rec.n_train]), (x[rec.n_train:], y[rec.n_train:]), (xt, yt))
    threads = torch.get_num_threads()
    if rec.threads:
        torch.set_num_threads(rec.threads)
    try:
        knn: dict[str, list] = {}
        histories: dict[str, list] = {}
        for seed in tqdm(rec.seeds, desc="DINO seeds", disable=not progress):
            accs, hist = _seed_rows(seed, rec, data)
            for arm, acc in accs.items():
                knn.setdefault(arm, []).append(acc)
            for name, h in hist.items():
                histories.setdefault(name, []).append(h)
    finally:
        torch.set_num_threads(threads)
    return {"recipe": rec.asdict(), "knn": knn, "histories": histories}


def cached_run(rec: DINORecipe | None = None, progress: bool = True, refresh: bool = False) -> dict:
    """`run`, built once (cache kind "sweeps") per recipe and mode. Lesson 18."""
    rec = rec or recipe()
    key = cache.key({"recipe": rec.asdict(), "mode": config.mode(), "version": 1})
    return cache.build_once(cache.path("sweeps", f"dino-{config.mode()}-{key}.pt"),
                            {"key": key, "kind": "kd_lessons.dino"}, lambda: run(rec, progress),
                            "the DINO runs", refresh=refresh)


def _tail(values: list, frac: float = 0.1) -> float:
    n = max(1, int(len(values) * frac))
    return sum(values[-n:]) / n


def summary(result: dict) -> dict:
    """k-NN accuracy per arm (mean, 95% interval), paired differences of DINO against the others, and the
    diagnostics over the last tenth of the steps per variant (mean over seeds), with log K. Lesson 18."""
    knn = result["knn"]
    arms = {arm: stats.mean_interval(v, arm) for arm, v in knn.items()}
    diffs = {f"DINO - {arm}": stats.paired(knn["DINO"], v) for arm, v in knn.items() if arm != "DINO"}
    diag = {name: {key: sum(_tail(h[key]) for h in hs) / len(hs) for key in ("entropy", "kl", "batch_entropy")}
            for name, hs in result["histories"].items()}
    return {"knn": arms, "differences": diffs, "diagnostics": diag, "log_K": math.log(result["recipe"]["out_dim"])}


def plot_diagnostics(result: dict):
    """Teacher entropy and teacher-student KL over steps for the three variants (mean over seeds). Lesson 18."""
    fig = new_figure(10, 3.5)
    axes = fig.subplots(1, 2)
    for name, hs in result["histories"].items():
        for ax, key in zip(axes, ("entropy", "kl")):
            mean = [sum(v) / len(v) for v in zip(*(h[key] for h in hs))]
            ax.plot(range(1, len(mean) + 1), mean, label=name)
    axes[0].axhline(math.log(result["recipe"]["out_dim"]), color="grey", ls="--", lw=1, label="log K (uniform)")
    axes[0].set(xlabel="step", ylabel="nats", title="teacher output entropy")
    axes[1].set(xlabel="step", ylabel="nats", title="KL(teacher || student)")
    axes[0].legend(fontsize=8)
    return fig
