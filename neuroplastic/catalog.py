"""The results store as a catalogue: list its run directories, select runs by name and by setting,
and name each run by the settings in which it differs from the others (``neuroplastic runs``).

Run directories are named ``<protocol name>-<hash>``: the hash tells runs apart but says nothing to a
reader. Here a run is described by what sets it apart in a given selection — ``seed=2
rule.name=clapp`` — read from the resolved protocol its ``manifest.json`` holds.

**Filters** (``--where KEY=VALUE``, all must hold) test a dotted protocol key (``rule.lr``,
``model.layers``, ``name``, ``seed``) or the run's ``status``. The value is read as a TOML scalar, as
``--set`` reads it, so ``rule.lr=3e-4`` matches ``0.0003`` and ``model.layers=[64,64]`` a list;
``A..B`` is an inclusive range of integers (``seed=1..3``). A run without the key (a rule that does
not read it) does not match. A key neither the protocol schema nor any run knows is refused, with
the keys that are allowed.

**Order.** Runs selected from the store are sorted by protocol name, then seed, then creation date
(oldest first): :func:`sort_key`.

A directory of the store that is not a readable run (no ``manifest.json``, a damaged one) is an
:class:`Entry` with a ``problem``, listed as such; a sweep directory (``points.json``) is listed as a
sweep of its points, whose runs are in the store beside it.
"""
from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunError
from .results import Run, number

__all__ = ["Entry", "Filter", "differing_keys", "format_listing", "labels", "parse_where", "scan", "select",
           "settings", "sort_key"]

#: Keys left out of the settings that tell runs apart: free text and resource bounds, not what a run computes.
IGNORED = ("description", "train.max_memory")
#: Keys a filter may name beside the protocol's: from the manifest.
MANIFEST_KEYS = ("status",)
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")
_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass
class Entry:
    """One directory of the results store: a run (``manifest``), or why it is not one (``problem``)."""

    directory: Path
    manifest: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def protocol_name(self) -> str:
        return str((self.manifest or {}).get("name", ""))

    def run(self) -> Run:
        return Run(self.directory, self.manifest or {})


def load_entry(directory: Path) -> Entry:
    """The :class:`Entry` of ``directory``: a readable run, a sweep, or what is wrong with it."""
    points = directory / "points.json"
    if not (directory / "manifest.json").exists() and points.is_file():
        try:
            n = len(json.loads(points.read_text()))
            return Entry(directory, problem=f"sweep directory ({n} points; its runs are listed on their own)")
        except (OSError, ValueError, TypeError) as err:
            return Entry(directory, problem=f"sweep directory with a damaged points.json ({err})")
    try:
        run = Run.load(directory)
    except RunError as err:
        reason = str(err).removeprefix(f"{directory}: ").removeprefix(f"{directory / 'manifest.json'}: ")
        return Entry(directory, problem=reason)
    if not isinstance(run.manifest.get("protocol"), dict):
        return Entry(directory, problem="damaged manifest.json (no resolved protocol)")
    return Entry(directory, run.manifest)


def scan(root: str | Path) -> list[Entry]:
    """Every directory directly under the store ``root`` (hidden ones left out), by name."""
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"{root}: no results store there ({'not a directory' if root.exists() else 'no such directory'});"
                       " give the directory that holds the run directories (neuroplastic run --out)")
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as err:
        raise RunError(f"{root}: cannot list the results store ({err.strerror or err})") from None
    return [load_entry(d) for d in dirs]


def settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """A run's resolved protocol as flat ``{dotted key: value}``, with the manifest's ``status`` and ``seed``."""
    flat: dict[str, Any] = {}
    for key, value in (manifest.get("protocol") or {}).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    if manifest.get("seed") is not None:
        flat["seed"] = manifest["seed"]
    flat["status"] = manifest.get("status")
    return flat


def sort_key(entry: Entry) -> tuple:
    """Protocol name, then seed, then creation date, then directory name: the order runs are listed and compared in."""
    seed = number((entry.manifest or {}).get("seed"))
    return (entry.protocol_name, math.inf if math.isnan(seed) else seed, str((entry.manifest or {}).get("created", "")),
            entry.name)


# -- filters -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filter:
    """``key=value`` from ``--where``: ``value`` is the parsed value, or ``(low, high)`` for a range."""

    key: str
    text: str
    value: Any
    is_range: bool = False

    def matches(self, flat: dict[str, Any]) -> bool:
        if self.key not in flat:
            return False
        actual = flat[self.key]
        if self.is_range:
            low, high = self.value
            return isinstance(actual, int) and not isinstance(actual, bool) and low <= actual <= high
        return _same(actual, self.value)


def _parse_value(text: str) -> Any:
    """A ``--where`` value read as TOML (``3e-4``, ``[64, 64]``, ``true``, ``"x"``), else as the plain string."""
    try:
        parsed = tomllib.loads(f"v = {text}")
        return parsed["v"] if list(parsed) == ["v"] else text
    except tomllib.TOMLDecodeError:
        return text


def parse_where(items) -> list[Filter]:
    """``["seed=2", "rule.lr=3e-4"]`` as :class:`Filter` objects; a malformed item is a :class:`RunError`."""
    filters = []
    for item in items or ():
        key, sep, text = (s.strip() for s in str(item).partition("="))
        if not sep or not key:
            raise RunError(f"--where {item!r}: expected KEY=VALUE, e.g. --where seed=2 or --where rule.name=clapp")
        if m := _RANGE.match(text):
            low, high = int(m.group(1)), int(m.group(2))
            if low > high:
                raise RunError(f"--where {item!r}: the range {low}..{high} is empty (write LOW..HIGH)")
            filters.append(Filter(key, text, (low, high), is_range=True))
        else:
            filters.append(Filter(key, text, _parse_value(text)))
    return filters


def _same(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, bool) or isinstance(wanted, bool):          # true is not 1
        return isinstance(actual, bool) and isinstance(wanted, bool) and actual == wanted
    if isinstance(actual, (int, float)) and isinstance(wanted, (int, float)):
        return math.isclose(actual, wanted, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(actual, (list, tuple)) and isinstance(wanted, (list, tuple)):
        return len(actual) == len(wanted) and all(_same(a, w) for a, w in zip(actual, wanted))
    return actual == wanted


def known_keys(entries: list[Entry]) -> list[str]:
    """Every key a filter may name: the protocol schema's, the runs' own and the manifest's."""
    from .protocol import SCHEMA

    keys = {k if not table else f"{table}.{k}" for table, spec in SCHEMA.items() for k in spec}
    keys |= {k for e in entries if e.manifest for k in settings(e.manifest)}
    keys |= set(MANIFEST_KEYS) | {"seed"}
    return sorted(keys - set(IGNORED))


def check_filters(filters: list[Filter], entries: list[Entry]) -> None:
    """Refuse a filter whose key no run and no protocol knows, naming it and the keys that are allowed."""
    import difflib

    known = known_keys(entries)
    for f in filters:
        if f.key not in known:
            close = difflib.get_close_matches(f.key, known, n=3)
            table = f.key.rpartition(".")[0]
            same_table = [k for k in known if table and k.startswith(table + ".")]
            hint = (f"did you mean {', '.join(close)}? " if close else "")
            shown = same_table or ["status", "seed", "name", "rule.name", "rule.lr", "model.layers", "data.max_samples"]
            raise RunError(f"--where {f.key}={f.text}: unknown key {f.key!r}; {hint}allowed keys include "
                           f"{', '.join(shown[:12])}{' ...' if len(shown) > 12 else ''} (dotted protocol keys, "
                           "seed, status)")


def select(entries: list[Entry], filters: list[Filter]) -> list[Entry]:
    """The readable runs of ``entries`` that pass every filter (the keys checked first), in :func:`sort_key` order."""
    check_filters(filters, entries)
    runs = [e for e in entries if e.manifest is not None]
    chosen = [e for e in runs if all(f.matches(settings(e.manifest)) for f in filters)]
    return sorted(chosen, key=sort_key)


# -- what tells runs apart ------------------------------------------------------------------------
_MISSING = object()


def show(value: Any) -> str:
    """A value as ``--where`` reads it back: bare words and numbers as they are, lists compact, other strings quoted."""
    if value is _MISSING or value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if _BARE.match(value) and _parse_value(value) == value else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def differing_keys(manifests: list[dict[str, Any]], leave_out=("name", "seed", "status")) -> list[str]:
    """The protocol keys that take more than one value among ``manifests``, in the protocol's order.

    A key only some runs have (one their rule reads, the others' not) is not a difference of its own:
    the key that chose the rule is, and it is shown.
    """
    flats = [settings(m) for m in manifests]
    order = list(dict.fromkeys(k for f in flats for k in f))
    skip = set(IGNORED) | set(leave_out)
    return [k for k in order if k not in skip
            and len({json.dumps(f[k], sort_keys=True, default=str) for f in flats if k in f}) > 1]


def labels(manifests: list[dict[str, Any]]) -> list[str]:
    """A short name for each run: the settings in which the runs differ (``seed=2 rule.name=clapp``).

    The protocol name comes first when the names differ; runs alike in all of these (the same run
    twice, or runs that differ only in a model file's contents) share the protocol name, and
    distinct runs that would share a label are numbered (``#2``).
    """
    keys = differing_keys(manifests, leave_out=("status",))
    flats = [settings(m) for m in manifests]
    out = []
    for f, m in zip(flats, manifests):
        parts = [show(f.get(k, _MISSING)) if k == "name" else f"{k}={show(f.get(k, _MISSING))}" for k in keys]
        out.append(" ".join(parts) or str(m.get("name", "run")))
    return out


def unique_labels(names: list[str], manifests: list[dict[str, Any]]) -> list[str]:
    """:func:`labels`, numbered where distinct run directories ``names`` would share one."""
    base = labels(manifests)
    seen: dict[str, list[str]] = {}
    out = []
    for name, label in zip(names, base):
        dirs = seen.setdefault(label, [])
        if name not in dirs:
            dirs.append(name)
        k = dirs.index(name)
        out.append(label if k == 0 else f"{label} #{k + 1}")
    return out


# -- the listing --------------------------------------------------------------------------------
def _probe(directory: Path) -> str:
    try:
        summary = json.loads((directory / "summary.json").read_text())
        probe = summary.get("probe", {})
        return " ".join(f"{number(probe[l]):.3f}" for l in sorted(probe, key=int))
    except (OSError, ValueError, TypeError, AttributeError):
        return "-"


def _date(manifest: dict[str, Any]) -> str:
    created = str(manifest.get("created", ""))
    return created[:16].replace("T", " ") if created else "-"


def format_listing(entries: list[Entry], others: list[Entry] = ()) -> str:
    """One line per run (``entries``): directory, protocol, differing settings, seed, status, probe per layer,
    date; then one line per directory of ``others`` that is not a readable run, saying why."""
    keys = differing_keys([e.manifest for e in entries])
    cells = [(e.name, e.protocol_name,
              " ".join(f"{k}={show(settings(e.manifest).get(k, _MISSING))}" for k in keys) or "-",
              show(e.manifest.get("seed")), str(e.manifest.get("status", "-")), _probe(e.directory),
              _date(e.manifest)) for e in entries]
    head = ("run", "protocol", "settings", "seed", "status", "probe (layer 1, 2, ...)", "date")
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(head)]
    line = lambda row: "  ".join(f"{v:<{w}}" for v, w in zip(row, widths)).rstrip()
    lines = [line(head), line(["-" * w for w in widths])] + [line(c) for c in cells] if cells else []
    for e in others:
        lines.append(f"{e.name}  ({e.problem})")
    return "\n".join(lines)
