"""What deployment cares about, measured side by side: parameters, bytes, test errors, latency.

Introduced in notebook 04_distill_mnist (teacher vs students) and reused by 06_cifar10_gpu.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from kd_lessons.config import resolve_device
from kd_lessons.models import count_macs, count_params, measure_latency, size_on_disk
from kd_lessons.train import evaluate

__all__ = ["model_table"]


def model_table(models: Mapping[str, nn.Module], data: Mapping, input_shape: Sequence[int],
                device: torch.device | str | None = None, repeats: int = 20, rounds: int = 5,
                batch_sizes: Sequence[int] = (1, 256), reference: str | None = None) -> pd.DataFrame:
    """Parameters, size on disk, multiply-adds, test accuracy/errors and measured latency per model. Notebook 04.

    Latency (ms per batch) is the fastest of `rounds` interleaved medians of `repeats` calls
    (models.measure_latency), so a burst of load from other programs hits every model alike.
    `speedup_b{n}` divides the `reference` model's latency (default: the first model) by each model's.
    """
    if not models:
        raise ValueError("models is empty; pass e.g. {'teacher': teacher, 'student': student}")
    if rounds < 1 or repeats < 1:
        raise ValueError(f"rounds={rounds}, repeats={repeats}: both must be >= 1")
    device = resolve_device(device)
    reference = reference or next(iter(models))
    if reference not in models:
        raise ValueError(f"reference={reference!r} is not one of {list(models)}")
    rows = {}
    for name, model in models.items():
        result = evaluate(model, data["x_test"], data["y_test"], device=device)
        rows[name] = {"params": count_params(model), "size_MB": size_on_disk(model) / 1e6,
                      "macs": count_macs(model, input_shape),
                      "accuracy": result["accuracy"], "errors": result["errors"]}
    for b in batch_sizes:
        times = {name: [] for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                times[name].append(measure_latency(model, input_shape, batch_size=b, device=device,
                                                   repeats=repeats, warmup=2))
        for name in models:
            rows[name][f"latency_ms_b{b}"] = min(times[name])
    table = pd.DataFrame.from_dict(rows, orient="index")
    for b in batch_sizes:
        table[f"speedup_b{b}"] = table.loc[reference, f"latency_ms_b{b}"] / table[f"latency_ms_b{b}"]
    return table
