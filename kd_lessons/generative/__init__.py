"""Distilling generative models: a character-level language-model teacher and student on a CPU.

The generative half of the course (notebook 10_generative_kd): divergences between next-token
distributions (forward KL, reverse KL as in MiniLLM, the generalized JSD of GKD, top-k logit
distillation), a toy that makes the KL direction visible, a real text corpus, a tiny causal
Transformer and the methods that distil one into a smaller one. Nothing is imported here, so
importing the package changes no setting.
"""
