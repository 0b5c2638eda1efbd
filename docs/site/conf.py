"""Sphinx settings of the rendered course (`make site`; scripts/build_site.py copies this file into its sources).

The notebooks arrive executed (myst-nb renders them and never runs them); site.json, written by the builder
next to this file, carries the mode, the machine and the date that every page's banner shows, and where the
builder put MathJax (scripts/site_assets.py: a pinned copy in _static, so no page loads anything from a CDN).
"""
import json
from pathlib import Path

info = json.loads((Path(__file__).parent / "site.json").read_text(encoding="utf-8"))

project = "kd-lessons"
author = "the kd-lessons authors"
extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
nb_execution_mode = "off"          # executed by scripts/build_site.py (nbclient), with the mode it reports
nb_ipywidgets_js = {}              # no widget JavaScript from a CDN: the site is static and works offline
nb_output_stderr = "show"
myst_heading_anchors = 3           # `references.md#sources` style links from the notebooks resolve
myst_enable_extensions = ["dollarmath"]
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
html_theme = "furo"
html_title = f"kd-lessons ({info['mode']} mode)"
here = Path(__file__).parent
html_static_path = ["_static"] if (here / "_static").is_dir() else []
if "mathjax_path" in info:         # relative to _static: the local copy, never Sphinx's default CDN URL
    mathjax_path = info["mathjax_path"]
html_theme_options = {"announcement": info["banner"], "navigation_with_keys": True}
html_show_sourcelink = False
