"""Diffusion step distillation on 2-D data (lesson 17): toy data, a v-prediction denoiser, DDIM, PD.

Introduced in lesson 17. `data` draws the 2-D distributions, `model` holds the cosine VP schedule, the MLP denoiser,
the DDIM sampler and teacher training, `distill` progressive distillation (Salimans & Ho, 2022), `consistency`
consistency distillation (Song et al., 2023), `metrics` the sample-based distances (sliced Wasserstein, MMD) the
lesson scores samplers with, `plots` its figures.
"""
from kd_lessons.diffusion.consistency import consistency_distillation, consistency_sample
from kd_lessons.diffusion.data import DATASETS, sample_data
from kd_lessons.diffusion.distill import check_steps, pd_target_v, pd_target_x, progressive_distillation
from kd_lessons.diffusion.metrics import mmd2, rbf_bandwidth, sliced_wasserstein
from kd_lessons.diffusion.model import (
    Denoiser,
    DivergedError,
    alpha_sigma,
    ddim_sample,
    ddim_step,
    predict_x_eps,
    train_denoiser,
)

__all__ = ["DATASETS", "sample_data", "Denoiser", "DivergedError", "alpha_sigma", "predict_x_eps", "ddim_step",
           "ddim_sample", "train_denoiser", "check_steps", "pd_target_x", "pd_target_v", "progressive_distillation",
           "sliced_wasserstein", "mmd2", "rbf_bandwidth", "consistency_distillation", "consistency_sample"]
