"""Sphinx configuration of the neuroplastic documentation.

Build it (warnings are errors) with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import neuroplastic  # noqa: E402
from neuroplastic.reference import write_references  # noqa: E402

# The protocol and model-file references are generated from the code at every build.
write_references(HERE / "reference")

project = "neuroplastic"
author = "the neuroplastic developers"
copyright = "the neuroplastic developers"
release = version = neuroplastic.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "examples", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.pickle"]
templates_path = ["_templates"]

autosummary_generate = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"          # the numpydoc "Parameters" sections say the types
numpydoc_show_class_members = False
numpydoc_validation_checks = set()   # numpydoc only renders; we do not lint docstrings here

intersphinx_mapping = {}             # no network at build time: references stay inside the project

html_theme = "pydata_sphinx_theme"
html_title = f"neuroplastic {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_show_sourcelink = False

# Tutorials: every docs/examples/plot_*.py runs at build time and its figures are shown; other files
# in docs/examples/ are rendered without running (the paper-scale STL-10 page).
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "show_memory": False,
}
