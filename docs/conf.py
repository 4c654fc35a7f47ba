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
    "sphinx-mathjax-offline",        # MathJax 3 shipped with the docs (_static/mathjax/): maths renders offline
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "examples", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.pickle",
                    "sg_execution_times.rst", "auto_examples/sg_execution_times.rst"]   # left by older builds
templates_path = ["_templates"]

autosummary_generate = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"          # the numpydoc "Parameters" sections say the types
numpydoc_show_class_members = False
numpydoc_validation_checks = set()   # numpydoc only renders; we do not lint docstrings here

# No network at build time: the inventories are local files listing the external objects the docs refer
# to (docs/_intersphinx/make_inventories.py writes them; its docstring says how to refresh them).
intersphinx_mapping = {project: (url, f"_intersphinx/{project}.inv") for project, url in {
    "python": "https://docs.python.org/3.11/",
    "numpy": "https://numpy.org/doc/2.3/",
    "sklearn": "https://scikit-learn.org/1.9/",
    "brian2": "https://brian2.readthedocs.io/en/2.8.0/",
}.items()}

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
    # Its execution-times page loads jQuery and DataTables from CDNs: the pages must need no network.
    "write_computation_times": False,
}
