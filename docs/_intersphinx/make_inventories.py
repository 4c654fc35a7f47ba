"""Write the intersphinx inventories the documentation links against: numpy, scikit-learn, Brian2, Python.

Why: the documentation builds without network access, so Sphinx cannot download the real
``objects.inv`` of numpy & co. at build time, and no installed package ships them. These small
inventories (Sphinx's version-2 format: a four-line header, then zlib-compressed lines
``name domain:role priority uri dispname``) list exactly the external objects the documentation
refers to -- what the tutorials' code calls (sphinx-gallery links every name it finds in an
inventory) and what the pages name with ``:class:`` / ``:func:`` / ``:mod:`` -- each pointing at
its page in the documentation of the installed version. ``docs/conf.py`` reads them as local
inventories: ``intersphinx_mapping = {"numpy": ("https://numpy.org/doc/2.3/", "_intersphinx/numpy.inv"), ...}``.

Every name is imported here first, so a renamed or removed object fails loudly instead of
becoming a dead link. After upgrading numpy, scikit-learn, Brian2 or Python, or when the docs
refer to a new external object (add it to ``OBJECTS``), run::

    python docs/_intersphinx/make_inventories.py

from the environment the docs are built in, update the base URLs of ``intersphinx_mapping`` in
``docs/conf.py`` to what :func:`base_urls` says, and commit the ``.inv`` files (tests/test_docs.py
checks both: the committed files are what this script writes, and conf.py links where they point).
Where a network exists, the real inventories can replace these: download ``<base url>objects.inv``
of each project over the ``.inv`` file here, or point ``intersphinx_mapping`` at ``(base url, None)``.
"""
from __future__ import annotations

import builtins
import importlib
import inspect
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: The external objects the documentation refers to, per project: fully qualified names as the
#: projects' own inventories spell them (Brian2 documents its classes under their defining module).
OBJECTS = {
    "python": [
        "print", "len", "range", "sorted", "zip", "enumerate", "map", "next", "min", "max", "sum",
        "dict", "list", "tuple", "str", "int", "float", "bool",
        "Exception", "ValueError", "KeyboardInterrupt",
        "csv.DictReader", "difflib.unified_diff", "importlib.resources", "pathlib.Path",
        "pathlib.Path.glob", "pathlib.Path.read_text", "pathlib.Path.write_text", "pathlib.PurePath.name",
        "subprocess.run", "sys.executable", "tempfile.mkdtemp",
    ],
    "numpy": [
        "numpy.ndarray", "numpy.random.Generator", "numpy.random.default_rng", "numpy.arange",
        "numpy.asarray", "numpy.float64", "numpy.histogram", "numpy.load", "numpy.nan", "numpy.ones",
        "numpy.linalg.norm", "numpy.lib.npyio.NpzFile",
    ],
    "sklearn": [
        "sklearn.linear_model.LogisticRegression", "sklearn.preprocessing.StandardScaler",
        "sklearn.pipeline.make_pipeline",
    ],
    "brian2": [
        "brian2.groups.neurongroup.NeuronGroup", "brian2.synapses.synapses.Synapses",
        "brian2.core.network.Network", "brian2.monitors.statemonitor.StateMonitor",
        "brian2.monitors.spikemonitor.SpikeMonitor", "brian2.input.timedarray.TimedArray",
        "brian2.core.magic.start_scope", "brian2.core.magic.run", "brian2.devices.device.seed",
        "brian2.devices.device.set_device",
    ],
}

#: Pages that do not follow a project's one-page-per-object pattern (as the real inventories have them).
PAGES = {
    "numpy.random.Generator": "reference/random/generator.html",
    "numpy.random.default_rng": "reference/random/generator.html",
    "numpy.nan": "reference/constants.html",
    "numpy.float64": "reference/arrays.scalars.html",
}


def base_urls() -> dict[str, str]:
    """The documentation of the installed version of each project (what conf.py links to)."""
    import brian2
    import numpy
    import sklearn

    minor = lambda version: ".".join(version.split(".")[:2])   # noqa: E731
    return {"python": f"https://docs.python.org/{sys.version_info.major}.{sys.version_info.minor}/",
            "numpy": f"https://numpy.org/doc/{minor(numpy.__version__)}/",
            "sklearn": f"https://scikit-learn.org/{minor(sklearn.__version__)}/",
            "brian2": f"https://brian2.readthedocs.io/en/{brian2.__version__}/"}


def _resolve(name: str):
    """Import ``name`` (a module, or an attribute path inside one); return the object."""
    if hasattr(builtins, name):
        return getattr(builtins, name)
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


#: Builtins the Python documentation describes as classes (``zip``, ``map`` ... are types too, documented as functions).
BUILTIN_CLASSES = {"dict", "list", "tuple", "str", "range", "int", "float", "bool"}


def _role(name: str, obj) -> str:
    """The role of ``name`` in its project's inventory."""
    if inspect.ismodule(obj):
        return "py:module"
    if isinstance(obj, property):
        return "py:attribute"
    if hasattr(builtins, name) and not (isinstance(obj, type) and issubclass(obj, BaseException)):
        return "py:class" if name in BUILTIN_CLASSES else "py:function"
    if inspect.isclass(obj):
        return "py:exception" if issubclass(obj, BaseException) else "py:class"
    if callable(obj):
        owner = _resolve(name.rsplit(".", 1)[0]) if "." in name else None
        return "py:method" if inspect.isclass(owner) else "py:function"
    return "py:data"


def _page(project: str, name: str, role: str) -> str:
    """The page of ``name`` under its project's base URL, with its anchor."""
    if project == "python":
        if "." not in name:
            page = ("library/exceptions.html" if role == "py:exception" else
                    "library/stdtypes.html" if name in ("dict", "list", "tuple", "str", "range") else
                    "library/functions.html")
        else:
            page = f"library/{name.split('.')[0] if role != 'py:module' else name}.html"
    elif project == "numpy":
        page = PAGES.get(name, f"reference/generated/{name}.html")
    elif project == "sklearn":
        page = f"modules/generated/{name}.html"
    else:
        page = f"reference/{name}.html"
    anchor = f"module-{name}" if role == "py:module" else name
    return f"{page}#{anchor}"


def inventory(project: str, version: str) -> bytes:
    """The inventory of ``OBJECTS[project]`` in Sphinx's version-2 format."""
    lines = []
    for name in sorted(OBJECTS[project]):
        role = _role(name, _resolve(name))
        uri = _page(project, name, role)
        if uri.endswith("#" + name):
            uri = uri[:-len(name)] + "$"           # the format's shorthand: the anchor is the name
        lines.append(f"{name} {role} 1 {uri} -\n")
    header = (f"# Sphinx inventory version 2\n# Project: {project}\n# Version: {version}\n"
              "# The remainder of this file is compressed using zlib.\n")
    return header.encode() + zlib.compress("".join(lines).encode(), 9)


def write_inventories(directory: Path = HERE) -> list[Path]:
    """Write ``<project>.inv`` for every project into ``directory``; return the paths."""
    paths = []
    for project, url in base_urls().items():
        path = Path(directory) / f"{project}.inv"
        data = inventory(project, url.rstrip("/").rsplit("/", 1)[-1])
        tmp = path.with_suffix(".inv.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_inventories():
        print(written.relative_to(HERE.parents[1]))
