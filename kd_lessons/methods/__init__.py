"""Distillation methods beyond Hinton's loss, each an `Objective` that plugs into `train.distill`.

`registry`: the one list of methods (name, family, paper, defaults, build), filled where each method is defined;
the tour, lm_students, the app and the README's table iterate it. One small module per family: `feature_kd`
(FitNets hints, attention transfer; notebook 05_feature_distillation). Hinton KD itself is the default objective
(`kd_lessons.objectives`).
`relations`: RKD distance and angle losses (Park et al. 2019; notebook 11_methods_tour).
`contrastive`: CRD-style in-batch contrastive distillation (Tian et al. 2020; notebook 11_methods_tour).
`logits`: DKD, DIST and logit standardisation (LogitStandardizedKD); notebook 11_methods_tour.
`schemes`: training procedures around the loss: TAKD, born-again, deep mutual learning, function matching;
notebook 11_methods_tour.
`deep_inversion`: DeepInversion (Yin et al. 2020): images synthesised from the teacher's BatchNorm statistics, so a
student can be distilled with no training data; notebook 12_data_free_kd.
"""
