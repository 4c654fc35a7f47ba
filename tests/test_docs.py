"""The documentation: references generated from the code, and a full build with every tutorial run."""
import html
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from neuroplastic.models import FORMAT
from neuroplastic.protocol import MODELS_DIR, SCHEMA
from neuroplastic.reference import model_reference, protocol_reference, write_references

DOCS = Path(__file__).resolve().parents[1] / "docs"
ROW = re.compile(r"^   \* - ``([^`]+)``$")          # the first cell of a list-table row: the key


def _headings(text: str):
    """``(line index, title)`` of every section title (a line underlined by -, = or ~)."""
    lines = text.split("\n")
    return [(k, lines[k]) for k in range(len(lines) - 1)
            if lines[k].strip() and re.fullmatch(r"([-=~])\1+", lines[k + 1]) and len(lines[k + 1]) == len(lines[k])]


def _documented_keys(text: str, section=lambda title: title) -> set[str]:
    """``table.key`` of every row of the reference, read from the rst: rows belong to the heading above them."""
    heads = dict(_headings(text))
    keys, table = set(), None
    for k, line in enumerate(text.split("\n")):
        if k in heads:
            title = heads[k]
            m = re.fullmatch(r"\[([\w.]+)\]", title)
            table = m.group(1) if m else ("" if title == "Top level" else section(title))
        elif (m := ROW.match(line)) and m.group(1) != "key":
            assert table is not None, f"a key row before any table heading: {line!r}"
            keys.add(f"{table}.{m.group(1)}" if table else m.group(1))
    return keys


def test_protocol_reference_lists_every_schema_key_and_no_other():
    documented = _documented_keys(protocol_reference())
    declared = {f"{t}.{k}" if t else k for t, keys in SCHEMA.items() for k in keys}
    assert documented == declared, (f"in SCHEMA, not in the reference: {sorted(declared - documented)}; "
                                    f"in the reference, not in SCHEMA: {sorted(documented - declared)}")


def test_protocol_reference_shows_type_default_and_allowed_values():
    text = protocol_reference()
    row = text.split("   * - ``lr``\n", 1)[1].split("   * - ", 1)[0]
    assert "float" in row and "``0.001``" in row and "a number > 0" in row and "Learning rate" in row
    assert "*required*" in text.split("   * - ``name``\n", 1)[1].split("   * - ", 1)[0]


def test_protocol_reference_says_which_rule_or_engine_reads_a_key():
    text = protocol_reference()
    row = lambda key: text.split(f"   * - ``{key}``\n", 1)[1].split("   * - ", 1)[0]   # noqa: E731
    assert "rule hinge\\_e2e\\_bp" in row("tau") and "clapp" not in row("tau")
    assert "engine brian" in row("glimpse_ms") and "engine numpy" not in row("glimpse_ms")
    assert "every protocol" in row("lr")


def test_model_reference_lists_every_format_key_and_no_other():
    text = model_reference()
    kinds = {f'{"Neuron" if k == "neuron" else "Synapse"} files (kind = "{k}")': k for k in FORMAT}
    documented, kind = set(), None
    for block in re.split(r"\n(?=\S.*\n-+\n)", text):     # one block per kind of file
        title = block.split("\n", 1)[0]
        kind = kinds.get(title, kind)
        if title in kinds:
            documented |= {f"{kind}:{key}" for key in _documented_keys(block, section=lambda t: None)}
    declared = {f"{kind}:{t + '.' if t else ''}{k}" for kind, tables in FORMAT.items()
                for t, table in tables.items() for k in table.keys}
    assert documented == declared, (f"in FORMAT, not in the reference: {sorted(declared - documented)}; "
                                    f"in the reference, not in FORMAT: {sorted(documented - declared)}")


def _flat(data: dict, prefix: str = ""):
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            yield from _flat(value, dotted)
        else:
            yield dotted


@pytest.mark.parametrize("path", sorted(MODELS_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_model_files_follow_the_declared_format(path):
    """FORMAT describes the files the engines read: every key of them is declared, every required one there."""
    data = tomllib.loads(path.read_text())
    tables = FORMAT[data["kind"]]
    found = set(_flat(data))
    for dotted in found:
        table, _, key = dotted.rpartition(".")
        assert table in tables and (key in tables[table].keys or "<name>" in tables[table].keys), \
            f"{path.name}: {dotted} is not declared in neuroplastic.models.FORMAT"
    variants = {t.split(".")[0] for t in tables if t}
    for table, spec in tables.items():
        if table and table.split(".")[0] in variants and table.split(".")[0] not in data:
            continue                                  # a file may leave out a whole variant
        for key, entry in spec.keys.items():
            if not entry.optional:
                dotted = f"{table}.{key}" if table else key
                assert dotted in found, f"{path.name}: required key {dotted} is missing"


def _inventories_module():
    spec = importlib.util.spec_from_file_location("make_inventories", DOCS / "_intersphinx" / "make_inventories.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_intersphinx_inventories_are_current_and_conf_links_where_they_point(tmp_path):
    """The build reads local inventories (no network): they must be what the script writes for the installed
    versions, and conf.py must map each one to the documentation of those versions."""
    pytest.importorskip("sphinx", reason="the [docs] extra builds the documentation")
    from sphinx.util.inventory import InventoryFile

    make = _inventories_module()
    for path in make.write_inventories(tmp_path):
        committed = DOCS / "_intersphinx" / path.name
        assert committed.read_bytes() == path.read_bytes(), \
            f"{committed.name} is stale: run python docs/_intersphinx/make_inventories.py"
    conf = (DOCS / "conf.py").read_text()
    for project, url in make.base_urls().items():
        assert f'"{project}": "{url}"' in conf, f"docs/conf.py does not map {project} to {url}"
    with open(DOCS / "_intersphinx" / "numpy.inv", "rb") as f:
        numpy_inv = InventoryFile.load(f, "https://numpy.org/doc/2.3/", lambda base, uri: base + uri)
    item = numpy_inv["py:class"]["numpy.ndarray"]
    uri = item.uri if hasattr(item, "uri") else item[2]
    assert uri == "https://numpy.org/doc/2.3/reference/generated/numpy.ndarray.html#numpy.ndarray"


def test_write_references_writes_both_pages(tmp_path):
    paths = write_references(tmp_path)
    assert [p.name for p in paths] == ["protocol.rst", "model_files.rst"]
    assert paths[0].read_text() == protocol_reference()


@pytest.mark.slow
def test_docs_build_without_warnings_and_every_tutorial_draws(tmp_path):
    """The documented command into a temporary directory, from a clean gallery: warnings are errors.

    sphinx-gallery re-runs only tutorials it has not run before, so the generated gallery
    (``docs/auto_examples``, ignored by git) is removed first: every tutorial runs.
    """
    shutil.rmtree(DOCS / "auto_examples", ignore_errors=True)
    out = tmp_path / "html"
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-b", "html",
                           "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    tutorials = sorted(p.stem for p in (DOCS / "examples").glob("plot_*.py"))
    assert len(tutorials) >= 4
    for name in tutorials:
        assert list((DOCS / "auto_examples" / "images").glob(f"sphx_glr_{name}_*.png")), f"{name} drew no figure"
        assert list((out / "_images").glob(f"sphx_glr_{name}_*.png")), f"{name}'s figure is not on its page"
    # Every cross-reference of the science page resolves (an unresolved one is a bare <code class="xref">).
    science = (out / "science.html").read_text()
    assert re.search(r'<a class="reference internal" href="generated/neuroplastic\.rules\.clapp\.html#', science)
    assert not re.search(r'(?<!">)<code class="xref py', science), "unresolved cross-reference in science.html"
    for page in ("reference/protocol.html", "reference/model_files.html", "api.html", "models.html",
                 "auto_examples/stl10_paper_scale.html"):
        assert (out / page).is_file(), page
    pages = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*.html")}
    # Maths renders offline: MathJax comes from the build itself, never from a CDN or any other host.
    assert (out / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert re.search(r'<script[^>]+src="_static/mathjax/tex-chtml\.js(\?v=\w+)?"', science)
    for name, page in pages.items():
        assert not re.search(r'<(script|img)[^>]+src="(https?:)?//|<link[^>]+href="(https?:)?//', page), \
            f"{name} loads something from another host"
        assert not re.search(r"mathjax@|cdn\.jsdelivr|cdnjs|unpkg\.com", page, re.I), f"{name} names a CDN"
        if name.startswith("auto_examples/"):
            assert not re.search(r"&lt;(matplotlib\.|Figure size)", page), f"{name} prints a stray repr"
    # intersphinx resolves against the local inventories: pages link into numpy's, Brian2's and scikit-learn's docs.
    for url in ("https://numpy.org/doc/2.3/reference/generated/numpy.",
                "https://brian2.readthedocs.io/en/2.8.0/reference/brian2.",
                "https://scikit-learn.org/1.9/modules/generated/sklearn.linear_model.LogisticRegression.html"):
        assert any(f'href="{url}' in page for page in pages.values()), f"no page links to {url}"
    # The rate-vs-spiking tutorial shows two runs that learn: each probe beats its random encoder and chance
    # (0.1, ten digits), and the weights moved.
    text = html.unescape(re.sub(r"<[^>]+>", "", pages["auto_examples/plot_rate_vs_spiking.html"]))
    runs = re.findall(r"^(rate|spiking): \S+, [\d.]+ s\n((?:  layer .*\n)+)", text, re.M)
    assert [variant for variant, _ in runs] == ["rate", "spiking"], text[:3000]
    for variant, block in runs:
        layers = re.findall(r"layer (\d): probe ([\d.]+), random encoder ([\d.]+), "
                            r"weights moved \|dW\| / \|W0\| = ([\d.]+)", block)
        assert len(layers) == 2, block
        for layer, probe, random, moved in layers:
            assert float(probe) > float(random) and float(probe) > 0.5, f"{variant} layer {layer}: {block}"
            assert float(moved) > 0.1, f"{variant} layer {layer}: the weights barely moved ({block})"
