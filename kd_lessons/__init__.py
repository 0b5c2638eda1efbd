"""kd-lessons: a hands-on course on knowledge distillation in PyTorch.

Modules: config, storage, data, losses, models, train, zoo, plots, exercises, experiments.
Import what you use explicitly, e.g. `from kd_lessons.losses import kd_loss`.
"""
__version__ = "0.1.0"
