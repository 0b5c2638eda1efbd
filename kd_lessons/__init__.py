"""kd-lessons: a hands-on course on knowledge distillation in PyTorch.

The package reads as the course's table of contents (CONTRIBUTING.md has the map):
- core: config, cache, data, sources, losses, models, objectives, train, teachers, plots;
- runs/: students trained over methods and seeds (budget study, T x alpha grid, Hinton 2015);
- methods/: distillation objectives beyond Hinton's loss (feature distillation, ...);
- exercises/: interview exercises with check / hint / solution, and the question bank;
- app/: the Streamlit classroom app's logic (app.py holds widgets and layout only).
Import what you use explicitly, e.g. `from kd_lessons.losses import kd_loss`. Importing changes
no setting: the environment is read by `kd_lessons.config` only.
"""

__version__ = "0.1.0"
