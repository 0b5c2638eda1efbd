"""The classroom app's logic, beside `app.py` (page config, sidebar widgets, tabs and Streamlit's wrappers only).

Modules: `page` (what every tab shares: the per-tab guard, the one teacher getter with progress, "train now"
status, the figures; `Shared`), one module per tab (`soft_tab` with Compare, `accuracy_tab`, `loss_tab`,
`methods_tab`, `kl_direction`), `panels` (what the panels compute), `jobs` (background training, TrainingQueue).
The wall: this package never imports Streamlit. Its functions take `st` (the streamlit module or a container)
and the sidebar's values as parameters; every `st.cache_*` and `st.fragment` wrapper stays in `app.py`, which
hands them to the tabs in one `page.Shared`. Introduced in notebook 00_start_here (the app tour).
"""
