"""Search-space files: parsing, validation against the task's config, and sampling a trial's values.

A space is a TOML file with an optional ``preset``, a ``[fixed]`` table of overrides, numeric or
categorical ``[params.NAME]`` tables, and/or a ``[grid]`` table; every key is a config field.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import optuna

from nndl.base import config as config_mod
from nndl.base.config import tomllib
from nndl.base.errors import NndlError

ALIASES = {"max_epochs": "epochs"}  # the reference grid's name for the epoch budget
NUMERIC = ("float", "log-float", "int", "log-int")
SPACES = Path(__file__).parent.parent / "spaces"  # the default spaces tasks ship (Task.default_space)


@dataclasses.dataclass
class Space:
    """A parsed search-space file: ``preset``, ``[fixed]`` overrides, ``[params.NAME]`` and ``[grid]``."""

    path: Path
    preset: str | None
    fixed: dict[str, Any]
    params: dict[str, dict[str, Any]]
    grid: dict[str, list]

    @property
    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid.values())


def load_space(path: str | Path, task: str) -> Space:
    """Read and validate a search-space TOML file; every key must be a field of the task's config."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise NndlError(f"{path}: cannot read search-space file ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise NndlError(f"{path}: not valid TOML ({e})") from None
    cls = config_mod.TASK_CONFIGS[task]

    def bad(where: str, why: str) -> NndlError:
        return NndlError(f"{path}: {where}: {why}")

    def check(where: str, key: str, value: Any) -> Any:
        try:
            return config_mod.coerce(cls, ALIASES.get(key, key), value)
        except NndlError as e:
            raise bad(where, str(e)) from None

    extra = set(data) - {"preset", "fixed", "params", "grid"}
    if extra:
        raise bad(", ".join(sorted(extra)), "unknown top-level key; use preset, [fixed], [params.NAME] or [grid]")
    for table in ("fixed", "params", "grid"):
        if not isinstance(data.get(table, {}), dict):
            raise bad(table, f"needs a table ([{table}] on a line of its own, then key = value lines)")
    if not isinstance(data.get("preset", ""), str):
        raise bad("preset", f"= {data['preset']!r}: needs a preset name or file, as a string")
    fixed = {ALIASES.get(k, k): check(f"[fixed] {k}", k, v) for k, v in data.get("fixed", {}).items()}
    params = {name: _param(f"[params.{name}]", name, spec, check, bad) for name, spec in data.get("params", {}).items()}
    grid = data.get("grid", {})
    for name, values in grid.items():
        if not isinstance(values, list) or not values or any(isinstance(v, (list, dict)) for v in values):
            raise bad(f"[grid] {name}", "needs a non-empty list of scalars")
        for v in values:
            check(f"[grid] {name}", name, v)
    _check_each_setting_once(data, bad)
    if not (params or grid):
        raise bad("[params]/[grid]", "nothing to search: add [params.NAME] tables or a [grid] table")
    return Space(path, data.get("preset"), fixed, params, grid)


def _check_each_setting_once(data: dict[str, Any], bad: Callable[[str, str], NndlError]) -> None:
    """A setting named twice in [fixed], or twice in [params]/[grid] (``max_epochs`` is ``epochs``),
    would keep one value and drop the other silently, while trials.csv lists both: refuse it."""
    for tables in (("fixed",), ("params", "grid")):
        seen: dict[str, tuple[str, str]] = {}  # config field -> (key, where)
        for table in tables:
            for key in data.get(table, {}):
                field, where = ALIASES.get(key, key), f"[params.{key}]" if table == "params" else f"[{table}] {key}"
                if field in seen:
                    first_key, first_where = seen[field]
                    alias = next((k for k in (key, first_key) if k in ALIASES), None)
                    named = f" ({alias} is another name for {field})" if alias and first_key != key else ""
                    raise bad(f"{first_where} and {where}", f"the same setting twice{named}: only one of the two "
                                                             "would be used; keep one")
                seen[field] = (key, where)


def check_nothing_overridden(space: Space, overrides: dict[str, Any]) -> None:
    """Refuse a value the search replaces in every trial: a [fixed] key or a ``--set KEY`` that the
    space also searches would be ignored silently."""
    searched = {ALIASES.get(k, k): f"[params.{k}]" for k in space.params}
    searched.update({ALIASES.get(k, k): f"[grid] {k}" for k in space.grid})
    for key in space.fixed:
        if key in searched:
            raise NndlError(f"{space.path}: [fixed] {key} and {searched[key]}: the same setting twice: the search "
                            "sets it in every trial, so the [fixed] value is never used; keep one")
    for key in overrides:
        if key in searched:
            raise NndlError(f"--set {key}: {space.path} searches {key} ({searched[key]}), and a trial's value "
                            f"replaces --set; remove --set {key}, or fix it in the [fixed] table of your own copy "
                            "of the space")


def _param(where: str, name: str, spec: Any, check: Callable, bad: Callable[[str, str], NndlError]) -> dict:
    """One ``[params.NAME]`` table, checked: its type, its choices or range, and each value against the config."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or any(isinstance(c, (list, dict)) for c in choices):
            raise bad(where, 'needs choices = [...] of scalars (write lists as strings, e.g. "64,64")')
        for c in choices:
            check(where, name, c)
    elif kind in NUMERIC:
        _check_range(spec, kind, lambda why: bad(where, why))
        check(where, name, spec["low"]), check(where, name, spec["high"])
    else:
        raise bad(where, f"type = {kind!r}: choose one of categorical, {', '.join(NUMERIC)}")
    return spec


def _check_range(spec: dict[str, Any], kind: str, bad: Callable[[str], NndlError]) -> None:
    """Types and bounds of a numeric ``[params.NAME]`` table, before Optuna sees them."""
    integer = kind.endswith("int")
    number = (int,) if integer else (int, float)

    def is_number(v: Any) -> bool:
        return isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v)

    unknown = set(spec) - {"type", "low", "high", "step"}
    if unknown:
        raise bad(f"unknown key {sorted(unknown)[0]!r}; a {kind} range has low, high and optional step")
    if not (is_number(spec.get("low")) and is_number(spec.get("high"))):
        raise bad(f"needs {'integer' if integer else 'numeric'} low and high, got low = {spec.get('low')!r}, "
                  f"high = {spec.get('high')!r}")
    if not spec["low"] < spec["high"]:
        raise bad("needs low < high")
    if kind.startswith("log") and spec["low"] <= 0:
        raise bad(f"low = {spec['low']}: a log scale needs low > 0")
    step = spec.get("step")
    if step is not None and (not is_number(step) or step <= 0 or kind.startswith("log")):
        raise bad(f"step = {step!r}: needs a positive {'integer' if integer else 'number'}, and no log scale")


def check_space_values(space: Space, config_of: Callable[[dict[str, Any]], Any]) -> None:
    """Resolve the trial config at both ends of every range and at every choice, before any trial runs.

    ``config_of(params)`` builds a trial's config (it raises :class:`NndlError` for a value the
    config rejects, e.g. ``lr = 0`` or an unknown activation); the error names the space file and key.
    Ranges are checked at their ends only: every bound a config checks is monotone.
    """
    tables = [(f"[params.{name}]", name, spec["choices"] if spec["type"] == "categorical"
               else [spec["low"], spec["high"]]) for name, spec in space.params.items()]
    tables += [(f"[grid] {name}", name, values) for name, values in space.grid.items()]
    for where, name, values in tables:
        for value in values:
            try:
                config_of({name: value})
            except NndlError as e:
                raise NndlError(f"{space.path}: {where}: {e}") from None


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """Sample this trial's values; grid keys are categorical (GridSampler picks them, others sample them)."""
    out = {}
    for name, s in space.params.items():
        kind, log = s["type"], s["type"].startswith("log")
        if kind == "categorical":
            out[name] = trial.suggest_categorical(name, s["choices"])
        elif kind.endswith("int"):
            out[name] = trial.suggest_int(name, s["low"], s["high"], step=s.get("step", 1), log=log)
        else:
            out[name] = trial.suggest_float(name, float(s["low"]), float(s["high"]), step=s.get("step"), log=log)
    for name, values in space.grid.items():
        out[name] = trial.suggest_categorical(name, values)
    return out
