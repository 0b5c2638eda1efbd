"""Distillation methods beyond Hinton's loss, each an `Objective` that plugs into `train.distill`.

One small module per family: `features` (FitNets hints, attention transfer; notebook
05_feature_distillation). Hinton KD itself is the default objective (`kd_lessons.objectives`).
"""
