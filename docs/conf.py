"""Sphinx configuration for fluxus's documentation (``tox -e docs``)."""

from __future__ import annotations

import fluxus

project = "fluxus"
author = "The fluxus developers"
copyright = "2026, The fluxus developers"  # noqa: A001 - Sphinx's name
release = fluxus.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"fluxus {release}"
html_static_path: list[str] = []
pygments_style = "friendly"
pygments_dark_style = "monokai"
myst_heading_anchors = 3
