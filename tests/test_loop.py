"""The one loop (kd_lessons.loop): its schedule plug-ins, and fit / train_lm equal the loops they replaced.

The reference loops below are the pre-plug-in `train._run` and `lm.train_lm` step orders written out by
hand; the library must give exactly the same losses and weights (same seeds -> same numbers, on the CPU).
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from kd_lessons.config import seed_everything
from kd_lessons.data import iterate_batches
from kd_lessons.generative.lm import LMOptions, train_lm
from kd_lessons.generative.text import sample_windows
from kd_lessons.generative.transformer import CharTransformer
from kd_lessons.loop import Learner, LoopSettings, OneCycle, Schedule, WarmupCosine, lr_at, run_loop
from kd_lessons.models import MLPStudent
from kd_lessons.train import TrainOptions, _optimizer, fit


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny tensors: one torch thread is faster on the shared CPU."""


def _same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_fit_equals_the_hand_written_onecycle_loop():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 4, 4, generator=g), torch.randint(0, 3, (96,), generator=g)
    torch.manual_seed(0)
    model = MLPStudent((8,), in_features=16, num_classes=3)
    by_hand = copy.deepcopy(model)
    history = fit(model, x, y, num_epochs=4, lr=1e-2,
                  options=TrainOptions(batch_size=32, seed=4, device="cpu", precision="fp32", progress=False))
    generator = seed_everything(4)
    opt = _optimizer("adamw", list(by_hand.parameters()), 1e-2, 5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=12, pct_start=0.25)
    losses = []
    for _ in range(4):  # 12 steps: OneCycle is on (>= 10)
        by_hand.train()
        for _, xb, yb in iterate_batches(x, y, 32, shuffle=True, generator=generator):
            loss = F.cross_entropy(by_hand(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched.last_epoch < sched.total_steps - 1:
                sched.step()
            losses.append(float(loss.detach()))
    assert len(history["step_loss"]) == 12 == len(losses)
    assert history["step_loss"] == losses
    assert _same_weights(model, by_hand)


def test_train_lm_equals_the_hand_written_warmup_cosine_loop():
    data = torch.randint(0, 12, (600,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = CharTransformer(12, d_model=16, n_layers=1, n_heads=2, context=8, dropout=0.1)
    by_hand = copy.deepcopy(model)
    history = train_lm(model, data, steps=12, lr=1e-2, batch_size=4,
                       options=LMOptions(seed=3, warmup=3, device="cpu", progress=False))
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    decay = [p for p in by_hand.parameters() if p.dim() >= 2]
    other = [p for p in by_hand.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.99))
    by_hand.train()
    losses = []
    for step in range(12):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, 12, 1e-2, 3)
        xb, yb = sample_windows(data, 8, 4, generator=generator)
        logits = by_hand(xb)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert history["step"] == list(range(1, 13)) and history["train_loss"] == losses  # log_every = 1 here
    assert _same_weights(model, by_hand)


def test_schedule_plug_ins_set_the_rates_they_promise():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=1.0)
    cosine = WarmupCosine(0.5, steps=10, warmup=2)
    cosine.start([opt])
    rates = []
    for step in range(10):
        cosine.before(step)
        rates.append(opt.param_groups[0]["lr"])
    assert rates == [lr_at(s, 10, 0.5, 2) for s in range(10)] and rates[1] == 0.5
    assert rates[-1] == pytest.approx(0.5 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8))))
    short = OneCycle(0.5, total=5)  # under 10 steps: no OneCycle, the rate stays
    short.start([torch.optim.SGD([w], lr=0.5)])
    assert short.scheds == []


class _Counting(Learner):
    """A learner of one parameter: loss = (w - 3)^2 per batch, records every step, stops after epoch 2."""

    def __init__(self):
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.optimizers = [torch.optim.SGD([self.w], lr=0.1)]
        self.steps, self.epochs = [], []

    def loss(self, batch, step):
        return (self.w - 3.0) ** 2

    def record(self, step, loss):
        self.steps.append(step)

    def end_epoch(self, epoch, step):
        self.epochs.append((epoch, step))
        return epoch == 2


def test_run_loop_order_total_stop_clip_and_on_step():
    learner, seen = _Counting(), []
    done = run_loop(learner, [range(3)] * 5, LoopSettings(total=100, schedule=Schedule(), progress=False,
                                                         on_step=lambda s, t: seen.append((s, t))))
    assert done == 6 and learner.steps == list(range(1, 7)) and learner.epochs == [(1, 3), (2, 6)]  # stop wins
    assert seen == [(s, 100) for s in range(1, 7)]
    capped = _Counting()
    assert run_loop(capped, [range(3)] * 5, LoopSettings(total=4, schedule=Schedule(), progress=False)) == 4
    assert capped.epochs == [(1, 3), (2, 4)]  # stopped mid-epoch, the epoch still ends
    clipped = _Counting()
    run_loop(clipped, [range(1)], LoopSettings(total=1, schedule=Schedule(), grad_clip=0.5, progress=False))
    assert float(clipped.w.detach()) == pytest.approx(0.1 * 0.5)  # gradient -6 clipped to norm 0.5, one SGD step
