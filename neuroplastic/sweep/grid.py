"""The grid of a sweep: ``--grid`` axes, the points they make, and the hash that names the sweep.

It exists so that a whole sweep is validated before anything runs: :func:`plan` resolves the
protocol, every grid value and every point, and a bad key or value raises :class:`ProtocolError`
naming the ``--grid`` key before any directory is written. A grid is at most :data:`MAX_POINTS`
points, counted before anything is expanded (``seed=1..1000000000`` is refused at once, not after
filling the memory).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProtocolError
from ..protocol import Protocol, _check_names, load, parse_override
from ..results import Run

__all__ = ["MAX_POINTS", "Axis", "Plan", "Point", "parse_grid", "plan"]

#: The most points (and values of one axis) a sweep may have; split a larger grid into several sweeps.
MAX_POINTS = 10_000

_RANGE = re.compile(r"\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*")
_NUMERIC_RANGE = re.compile(r"\s*[-+0-9.eE]+\.\.[-+0-9.eE]+\s*")     # e.g. 1.5..3: a range, but not of integers


@dataclass(frozen=True)
class Axis:
    """One ``--grid`` axis: a protocol key and its values, each as TOML text (what ``--set key=`` takes)."""

    key: str
    texts: tuple[str, ...]

    def overrides(self) -> list[str]:
        return [f"{self.key}={t}" for t in self.texts]


def parse_grid(item: str) -> Axis:
    """Parse ``'rule.lr=1e-3,3e-4'`` or ``'seed=1..5'`` (inclusive) into an :class:`Axis`.

    Values are separated by commas outside brackets and quotes (``model.layers=[8],[8,8]``);
    each is a TOML value, else a string, as with ``--set``; ``a..b`` is the integers a to b.
    Unknown keys and malformed values raise :class:`ProtocolError` naming the key; whether each
    value is allowed is checked against the protocol by :func:`plan`.
    """
    if "=" not in item:
        raise ProtocolError("--grid", "", f"{item!r} must have the form table.key=v1,v2,... or "
                            "table.key=a..b (e.g. rule.lr=1e-3,3e-4 or seed=1..5)")
    key, text = (s.strip() for s in item.split("=", 1))
    table, _, name = key.rpartition(".")
    _check_names({table: {name: text}} if table else {name: text}, "--grid")
    texts: list[str] = []
    parts = _split_top_level(text)
    if len(parts) > MAX_POINTS:
        raise _too_many(key, text, len(parts))
    for part in parts:
        if not part.strip():
            raise ProtocolError("--grid", key, f"= {text!r}: an empty value; give values separated by commas "
                                "(e.g. 1e-3,3e-4) or an integer range a..b (e.g. 1..5)")
        m = _RANGE.fullmatch(part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise ProtocolError("--grid", key, f"= {part.strip()}: the range a..b needs a <= b "
                                    f"(it includes both ends, e.g. {b}..{a})")
            if len(texts) + b - a + 1 > MAX_POINTS:         # counted, not expanded
                raise _too_many(key, text, len(texts) + b - a + 1)
            texts.extend(str(i) for i in range(a, b + 1))
        elif _NUMERIC_RANGE.fullmatch(part):
            raise ProtocolError("--grid", key, f"= {part.strip()}: a range a..b takes integers (e.g. 1..5)")
        else:
            texts.append(part.strip())
    seen: dict[str, str] = {}
    for t in texts:
        value = json.dumps(parse_override(f"{key}={t}")[2], sort_keys=True, default=str)
        if value in seen:
            raise ProtocolError("--grid", key, f"= {text}: the value {t} is given twice (as {seen[value]} "
                                f"and {t}); each point must be a different run")
        seen[value] = t
    return Axis(key, tuple(texts))


def _too_many(key: str, text: str, count: int) -> ProtocolError:
    """An axis of more than MAX_POINTS values, named as given (its first 60 characters)."""
    text = text.strip() if len(text.strip()) <= 60 else text.strip()[:57] + "..."
    err = ProtocolError(f"--grid {key}={text}", "", f"{count} values; a sweep has at most {MAX_POINTS} points "
                        "(split the grid into several sweeps)")
    err.key = key
    return err


def _split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside brackets, braces or quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


@dataclass(frozen=True)
class Point:
    """One grid point: its grid values (TOML text), the overrides that make it, and its protocol."""

    index: int
    values: dict[str, str]
    overrides: tuple[str, ...]
    protocol: Protocol

    @property
    def run_name(self) -> str:
        return Run.path_for("", self.protocol).name

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass(frozen=True)
class Plan:
    """A validated sweep: the protocol (with ``--set``), the axes and every point, before anything runs."""

    protocol_file: Path
    base: Protocol
    sets: tuple[str, ...]
    axes: tuple[Axis, ...]
    points: tuple[Point, ...]
    out: Path

    def digest(self) -> str:
        """Hash of the resolved protocol and the grid: the identity of the sweep."""
        grid = [[a.key, [parse_override(o)[2] for o in a.overrides()]] for a in self.axes]
        blob = json.dumps({"protocol": self.base.digest(), "grid": grid}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def directory(self) -> Path:
        return self.out / f"{self.base.name}-sweep-{self.digest()[:10]}"


def plan(protocol_file: str | Path, grid: list[str], sets: list[str] | None = None,
         out: str | Path = "runs") -> Plan:
    """Validate the protocol, the ``--set`` overrides, every grid value and every point; run nothing.

    A bad key or value raises :class:`ProtocolError` naming the ``--grid`` key and what is allowed.
    """
    sets = list(sets or [])
    base = load(protocol_file, sets)
    if not grid:
        raise ProtocolError("--grid", "", "a sweep needs at least one --grid axis, e.g. --grid seed=1..5")
    axes = [parse_grid(g) for g in grid]
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ProtocolError("--grid", twice, "is given twice; give all its values in one --grid "
                            f"(e.g. --grid {twice}=a,b,c)")
    count = math.prod(len(a.texts) for a in axes)
    if count > MAX_POINTS:
        sizes = " x ".join(f"{len(a.texts)} ({a.key})" for a in axes)
        raise ProtocolError("--grid", "", f"{sizes} = {count} points; a sweep has at most {MAX_POINTS} points "
                            "(split the grid into several sweeps)")
    set_keys = {".".join(filter(None, parse_override(s)[:2])) for s in sets}
    if both := sorted(set_keys & set(keys)):
        raise ProtocolError("--grid", both[0], "is given with both --set and --grid; keep one")
    for axis in axes:                      # each value alone, so the error names the key and the value
        for override in axis.overrides():
            try:
                base.with_overrides([override])
            except ProtocolError as err:
                raise _regrid(err, f"--grid {axis.key}") from None
    points, seen = [], {}
    for index, combo in enumerate(itertools.product(*(a.overrides() for a in axes))):
        values = {a.key: o.split("=", 1)[1] for a, o in zip(axes, combo)}
        try:
            protocol = base.with_overrides(list(combo))
        except ProtocolError as err:       # keys that must agree, e.g. [evaluate] layers and [model] layers
            raise _regrid(err, f"--grid point {' '.join(combo)}") from None
        point = Point(index, values, (*sets, *combo), protocol)
        if (other := seen.get(protocol.digest())) is not None:
            raise ProtocolError("--grid", "", f"points {other.label()!r} and {point.label()!r} are the same "
                                f"protocol (run {point.run_name}); remove one of the values")
        seen[protocol.digest()] = point
        points.append(point)
    return Plan(Path(protocol_file).resolve(), base, tuple(sets), tuple(axes), tuple(points), Path(out).resolve())


def _regrid(err: ProtocolError, source: str) -> ProtocolError:
    """The same validation error, attributed to the --grid value that caused it."""
    detail = str(err)[len(err.source) + 2:] if str(err).startswith(f"{err.source}: ") else str(err)
    new = ProtocolError(source, "", f"{detail} ({err.source})")
    new.key = err.key
    return new
