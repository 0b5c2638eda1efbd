"""The classroom app's logic, beside `app.py` (which holds widgets and layout only).

Modules: `panels` (what each panel computes and draws), `jobs` (background teacher training with
progress), `kl_direction` (the generative KL-direction tab). Introduced in notebook 00_start_here (the app tour).
"""
