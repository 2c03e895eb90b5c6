"""Dataclass configs, named presets and ``--set key=value`` overrides: the machinery and the registry.

One dataclass per task, declared with its presets in the task's own package and registered here
(:func:`register`); this module holds what every task shares. A run's config is resolved in a fixed order --
defaults, then the preset, then ``--set`` overrides, then ``--seed`` -- validated,
printed and saved as ``config.json`` in the run folder.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import re
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nndl.base.errors import NndlError, text_argument

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


SEED_LIMIT = 2**63  # seeds are 0 .. SEED_LIMIT - 1


def _choice(default, choices, help=""):
    return field(default=default, metadata={"choices": tuple(choices), "help": help})


def _doc(default, help):
    return field(default=default, metadata={"help": help})


def _list(default, help=""):
    return field(default_factory=lambda: list(default), metadata={"help": help})


class _Checked:
    """Every config is type-checked and validated when it is built, in Python as from the CLI:
    ``SomeTaskConfig(epochs=-1)`` is the same one-line error as ``--set epochs=-1``."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, coerce(type(self), f.name, getattr(self, f.name)))
        validate(self)


@dataclass
class TrainConfig(_Checked):
    """Training fields shared by every task (optimiser, schedule, stopping)."""

    optimizer: str = _choice("adam", ["adam", "adamw", "sgd"], "sgd uses `momentum`/`nesterov`")
    lr: float = _doc(1e-3, "learning rate (the peak of a schedule)")
    momentum: float = _doc(0.9, "SGD momentum (optimizer=sgd only)")
    nesterov: bool = _doc(False, "Nesterov momentum (optimizer=sgd only)")
    weight_decay: float = _doc(0.0, "L2 penalty: coupled for adam/sgd, decoupled for adamw")
    l1: float = _doc(0.0, "L1 penalty on weight matrices (not biases)")
    epochs: int = _doc(10, "passes over the training data")
    batch_size: int = _doc(256, "examples per optimiser step")
    schedule: str = _choice("constant", ["constant", "cosine", "onecycle", "linear"])
    warmup_epochs: float = _doc(0.0, "linear warm-up, in (fractional) epochs")
    min_lr_factor: float = _doc(0.0, "lr at the end of a decaying schedule, as a fraction of lr")
    patience: int = _doc(0, "early stopping on the validation metric; 0 disables it")
    seed: int = _doc(0, "seeds weights, batches, splits and augmentation (0 .. 2**63 - 1)")
    device: str = _doc("auto", "auto | cpu | cuda | cuda:N | mps")
    time_limit: float = _doc(0.0, "seconds of training after which a run stops (reason \"time limit\"); 0 = none")

    def range_checks(self) -> list[tuple[str, bool, str]]:
        """A task's own ``(key, ok, why)`` range checks, run by :func:`validate` after the shared ones."""
        return []


# The task registry: each task's config module (nndl.tasks.NAME.config) registers its dataclass,
# its named presets and its "does not apply" rules on import. Base code reads it by task name only.
TASK_PACKAGE = "nndl.tasks"  # imports every task's config module


@dataclass(frozen=True)
class TaskConfig:
    """What :func:`register` records for one task."""

    cls: type
    presets: dict[str, dict[str, Any]]
    # saved config dict -> {key: why the run never read it}, beyond the shared rules of unused_settings
    not_applicable: Callable[[dict], dict[str, str]] | None = None
    # (built config, keys the user gave) -> None, raising NndlError for a combination that cannot apply
    check_given: Callable[[Any, dict], None] | None = None


_REGISTERED: dict[str, TaskConfig] = {}


def register(name: str, cls: type, presets: dict[str, dict[str, Any]],
             not_applicable: Callable[[dict], dict[str, str]] | None = None,
             check_given: Callable[[Any, dict], None] | None = None) -> None:
    """Declare task ``name``'s config dataclass, its named presets and its "does not apply" rules.

    Parameters
    ----------
    name : str
        The task name (``nndl NAME``, ``resolve(NAME, ...)``).
    cls : type
        A :class:`TrainConfig` dataclass; its ``range_checks`` are part of :func:`validate`.
    presets : dict
        Preset name -> overrides of the defaults; the first is listed first by ``nndl presets``.
    not_applicable : callable, optional
        ``config dict -> {key: reason}``: task keys a run with that config never reads
        (see :func:`unused_settings`).
    check_given : callable, optional
        ``(cfg, given keys) -> None``, raising :class:`NndlError` for given values that cannot apply.
    """
    _REGISTERED[name] = TaskConfig(cls, presets, not_applicable, check_given)


def registered() -> dict[str, TaskConfig]:
    """Every registered task's :class:`TaskConfig`, by name.

    The task configs live above this layer, so a process that has not imported them yet (a
    report or a run folder opened on its own) gets them here: the task package is imported by
    name the first time, as :mod:`nndl.tasks` loads each task's module by name.
    """
    if TASK_PACKAGE not in sys.modules:
        importlib.import_module(TASK_PACKAGE)
    return _REGISTERED


class _View(Mapping):
    """A read-only task name -> ``TaskConfig.<part>`` mapping over :func:`registered`."""

    def __init__(self, part: str) -> None:
        self._part = part

    def __getitem__(self, task: str):
        return getattr(registered()[task], self._part)

    def __iter__(self):
        return iter(registered())

    def __len__(self) -> int:
        return len(registered())


# task name -> config dataclass, and task name -> {preset name -> overrides}
TASK_CONFIGS: Mapping[str, type] = _View("cls")
PRESETS: Mapping[str, dict[str, dict[str, Any]]] = _View("presets")



def field_choices(cls, name: str) -> list[str]:
    """The allowed values of a choice field (e.g. the classifier models), as the CLI offers them."""
    return list(next(f for f in dataclasses.fields(cls) if f.name == name).metadata["choices"])


def field_default(cls, name: str) -> Any:
    """The default value of field ``name`` of the config dataclass ``cls`` (a fresh list for a list)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def field_names(task: str) -> set[str]:
    """The config keys of ``task``."""
    return {f.name for f in dataclasses.fields(TASK_CONFIGS[task])}


def task_of_config(data: Any) -> str | None:
    """The task whose config has every key of ``data`` (a ``config.json``), or None when none does.

    For run folders made before nndl recorded the task in their marker: a resolved config holds
    all of its task's keys, and each task has keys the other lacks."""
    if not isinstance(data, dict) or not data:
        return None
    return next((task for task in TASK_CONFIGS if set(data) <= field_names(task)), None)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse_scalar(kind, text: str, key: str):
    text = text.strip()
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise NndlError(f"--set {key}={text}: expected true or false")
    try:
        return kind(text)
    except ValueError:
        raise NndlError(f"--set {key}={text}: expected {kind.__name__}") from None


def _coerce_scalar(kind, value: Any, key: str):
    if isinstance(value, str):
        return _parse_scalar(kind, value.strip().strip("'\""), key)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool) == isinstance(value, bool):
        return value
    raise NndlError(f"config key '{key}': expected {kind.__name__}, got {value!r}")


def coerce(cls, key: str, value: Any) -> Any:
    """Convert ``value`` (a string from the CLI, or a JSON/TOML value) to the type of field ``key``."""
    types = _field_types(cls)
    if key not in types:
        close = difflib.get_close_matches(key, types, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(types)}"
        raise NndlError(f"unknown config key '{key}' for {cls.__name__}{hint}")
    kind = types[key]
    if typing.get_origin(kind) is not list:
        return _coerce_scalar(kind, value, key)
    (item,) = typing.get_args(kind)
    if isinstance(value, str):  # "128,256" or "[128, 256]"
        value = [p for p in value.strip().strip("[]").split(",") if p.strip()]
    if not isinstance(value, (list, tuple)):
        raise NndlError(f"config key '{key}': expected a list of {item.__name__}, got {value!r}")
    return [_coerce_scalar(item, v, key) for v in value]


def check_device(name: str) -> None:
    """Reject a ``device`` this machine does not have (torch is imported only for a GPU name)."""
    if name in ("auto", "cpu"):
        return
    match = re.fullmatch(r"cuda(?::(\d+))?|mps", name)
    if not match:
        raise NndlError(f"config key 'device' = {name!r}: choose auto, cpu, cuda, cuda:N or mps")
    import torch

    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise NndlError("config key 'device' = 'mps': this machine has no Apple GPU; use auto or cpu")
        return
    if not torch.cuda.is_available():
        raise NndlError(f"config key 'device' = {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; "
                        "use auto or cpu")
    index, count = int(match.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise NndlError(f"config key 'device' = {name!r}: this machine has {count} CUDA device(s), "
                        f"cuda:0..cuda:{count - 1}; use one of those, or auto")


def validate(cfg) -> None:
    """Check choices and ranges; raise NndlError naming the field and the fix."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise NndlError(f"config key '{f.name}' = {value!r}: choose one of {', '.join(choices)}")
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise NndlError(f"config key '{f.name}' = {value!r}: must be a finite number")
    checks = [("lr", cfg.lr > 0, "must be > 0"), ("epochs", cfg.epochs >= 1, "must be >= 1"),
              ("momentum", 0 <= cfg.momentum < 1, "must be in [0, 1)"),
              ("time_limit", cfg.time_limit >= 0, "must be >= 0 seconds (0 = no limit)"),
              ("threads", getattr(cfg, "threads", 0) >= 0, "must be >= 0 (0 = the default)"),
              ("batch_size", cfg.batch_size >= 1, "must be >= 1"),
              ("weight_decay", cfg.weight_decay >= 0, "must be >= 0"), ("l1", cfg.l1 >= 0, "must be >= 0"),
              ("patience", cfg.patience >= 0, "must be >= 0"),
              # torch seeds take 64 bits and numpy's none below 0; the models of a run add their index to it
              ("seed", 0 <= cfg.seed < SEED_LIMIT, "must be in 0 .. 2**63 - 1"),
              ("warmup_epochs", 0 <= cfg.warmup_epochs <= cfg.epochs, "must be between 0 and epochs"),
              ("min_lr_factor", 0 <= cfg.min_lr_factor <= 1, "must be in [0, 1]")]
    checks += cfg.range_checks()
    for key, ok, why in checks:
        if not ok:
            raise NndlError(f"config key '{key}' = {getattr(cfg, key)!r}: {why}")
    check_device(cfg.device)


def unused_settings(task: str, config: dict, device: str = "") -> dict[str, str]:
    """Config keys whose values the run never read, each with the reason (``momentum`` under Adam, ...).

    The report lists only what a run used; ``config.json`` keeps everything. The
    rules mirror what the training code reads: SGD alone reads ``momentum`` and
    ``nesterov``; a constant schedule never decays to ``min_lr_factor``; ``amp`` is
    bf16 autocast on CUDA only, ``amp_cpu`` on CPUs only. Each task adds its own rules
    (``not_applicable`` of :func:`register`, e.g. model settings a model never reads).
    """
    out: dict[str, str] = {}
    opt = config.get("optimizer")
    if opt is not None and opt != "sgd":
        out.update(momentum=f"only SGD uses it (optimizer {opt})", nesterov=f"only SGD uses it (optimizer {opt})")
    elif opt == "sgd" and config.get("momentum") == 0:
        out["nesterov"] = "needs momentum > 0"
    if config.get("schedule") == "constant":
        out["min_lr_factor"] = "the constant schedule does not decay"
    entry = registered().get(task)
    if entry is not None and entry.not_applicable is not None:  # the task's own rules
        out.update(entry.not_applicable(config))
    if "amp" in config and device and not device.startswith("cuda"):
        out["amp"] = f"bf16 autocast runs on CUDA only (device {device}; amp_cpu is the CPU's setting)"
    if config.get("amp_cpu") and device and not device.startswith("cpu"):
        out["amp_cpu"] = f"the CPU's bf16 autocast (device {device})"
    return out


def check_applies(task: str, cfg, given: dict[str, Any]) -> None:
    """Refuse, in one line, a setting the user gave that this config would never read.

    Only keys given explicitly (by a preset file or ``--set``/overrides) whose value differs
    from the task's default are refused: ``--set momentum=0.5`` under Adam, or a setting the
    chosen model never reads, would otherwise be ignored in silence. ``amp`` and ``amp_cpu`` depend on the device
    (and the CPU) at run time and are only left out of the report. The rules are
    :func:`unused_settings`, shared with the report.
    """
    defaults = to_dict(TASK_CONFIGS[task]())
    unused = unused_settings(task, to_dict(cfg))
    unused.pop("amp", None)
    unused.pop("amp_cpu", None)
    for key in given:
        if key in unused and getattr(cfg, key) != defaults.get(key):
            raise NndlError(f"config key '{key}' = {getattr(cfg, key)!r} does not apply: {unused[key]}; "
                            f"remove it or change the setting it depends on")
    check_given = registered()[task].check_given
    if check_given is not None:  # the task's own combinations (e.g. one value per layer)
        check_given(cfg, given)


def read_preset_file(path: str | Path) -> dict[str, Any]:
    """Read a preset file (.toml or .json) of ``key = value`` pairs."""
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except OSError as e:
        raise NndlError(f"{path}: cannot read preset file ({e.strerror})") from None
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise NndlError(f"{path}: not a valid {path.suffix[1:] or 'JSON'} preset file ({e})") from None
    if not isinstance(data, dict):
        raise NndlError(f"{path}: a preset file must hold key = value pairs")
    data.pop("task", None)
    return data


def parse_overrides(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """``["lr=0.1", "hidden=64,64"]`` (from ``--set``) or a dict -> a new dict of raw values.

    Any other type (a number, or one string, whose characters would be read as items) is one
    NndlError line: a string cannot be split into settings safely, since list values hold commas.
    """
    how = "give a dict ({'lr': 0.01}) or a list of 'key=value' strings (['lr=0.01'])"
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        key = next((k for k in overrides if not isinstance(k, str)), None)
        if key is not None:
            raise NndlError(f"overrides: key {key!r} is not a config key name (a str); {how}")
        return dict(overrides)
    if not isinstance(overrides, (list, tuple)):
        raise NndlError(f"overrides = {overrides!r}: {how}")
    pairs = {}
    for item in overrides:
        if not isinstance(item, str):
            raise NndlError(f"overrides: {item!r} is not a 'key=value' string; {how}")
        if "=" not in item:
            raise NndlError(f"--set {item}: expected key=value, e.g. --set lr=0.01")
        key, _, val = item.partition("=")
        pairs[key.strip()] = val
    return pairs


def resolve(task: str, preset: str | None = None, overrides: dict[str, Any] | list[str] | None = None,
            seed: int | None = None):
    """Build the config for ``task`` from defaults, a preset (name or file), overrides and a seed.

    Parameters
    ----------
    task : str
        A registered task name (see :func:`register`).
    preset : str, optional
        A preset name from :data:`PRESETS` or a path to a ``.toml``/``.json`` preset file.
    overrides : dict or list of "key=value" strings, optional
        Field overrides; unknown keys and wrong types raise :class:`NndlError`.
    seed : int, optional
        Overrides the ``seed`` field last.

    Returns
    -------
    TrainConfig
        The task's config dataclass.
    """
    cls = TASK_CONFIGS[task]
    values: dict[str, Any] = {}
    preset = text_argument(preset, "preset")
    if preset:
        if preset in PRESETS[task]:
            values.update(PRESETS[task][preset])
        elif Path(preset).suffix in (".toml", ".json") and Path(preset).exists():
            values.update(read_preset_file(preset))
        else:
            raise NndlError(f"unknown preset '{preset}' for {task}: choose one of "
                            f"{', '.join(PRESETS[task])} or give a .toml/.json preset file")
    values.update(parse_overrides(overrides))
    if seed is not None:
        values["seed"] = seed
    cfg = cls(**{k: coerce(cls, k, v) for k, v in values.items()})  # built = validated (_Checked)
    check_applies(task, cfg, values)
    return cfg


def preset_keys(task: str, preset: str | None, overrides: dict[str, Any] | list[str] | None = None) -> set[str]:
    """The config keys whose values come from a built-in named preset (not from ``overrides``).

    Those are nndl's recipe, which a run may adapt to its data (e.g. switch a preset's mirror flip
    off for digits); a key the user set, in ``--set``/overrides or in their own preset file, is theirs.
    """
    if not preset or preset not in PRESETS[task]:
        return set()
    return set(PRESETS[task][preset]) - set(parse_overrides(overrides))


def user_keys(preset: str | None, overrides: dict[str, Any] | list[str] | None = None) -> set[str]:
    """The config keys the user set: in ``--set``/overrides or in their own preset file.

    Keys outside this set hold nndl's defaults or a built-in preset's recipe, which a run may adapt
    to its data (each change said in one line); a key the user set is never changed behind their back.
    """
    keys = set(parse_overrides(overrides))
    if preset and Path(preset).suffix in (".toml", ".json") and Path(preset).exists():
        keys |= set(read_preset_file(preset))
    return keys


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(task: str, data: dict[str, Any]):
    """Rebuild a config saved by :func:`to_dict` (keys unknown to this version are an error)."""
    cls = TASK_CONFIGS[task]
    cfg = cls(**{k: coerce(cls, k, v) for k, v in data.items()})  # built = validated (_Checked)
    return cfg


def format_config(cfg) -> str:
    """The resolved config as aligned ``key = value`` lines, for printing."""
    d = to_dict(cfg)
    width = max(map(len, d))
    return "\n".join(f"  {k:<{width}} = {v}" for k, v in d.items())


def describe_presets(task: str) -> str:
    """The named presets of ``task``, one line each with the values it sets over the defaults."""
    lines = [f"{task} presets (nndl {task} --preset NAME; files: --preset my.toml):"]
    for name, values in PRESETS[task].items():
        shown = ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in values.items())
        lines.append(f"  {name:<8} {shown or '(the defaults)'}")
    return "\n".join(lines)


def describe_config(task: str, preset: str | None = None) -> str:
    """Every config key of ``task`` with its type, value (defaults, or ``preset``'s), choices and help."""
    cfg = resolve(task, preset)
    types = _field_types(TASK_CONFIGS[task])
    rows = []
    for f in dataclasses.fields(cfg):
        kind = types[f.name]
        kind_name = (f"list[{typing.get_args(kind)[0].__name__}]" if typing.get_origin(kind) is list
                     else kind.__name__)
        value = getattr(cfg, f.name)
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        choices = f.metadata.get("choices")
        notes = [f"one of {'|'.join(choices)}"] if choices else []
        notes += [f.metadata["help"]] if f.metadata.get("help") else []
        rows.append((f.name, kind_name, shown or '""', "; ".join(notes)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    title = f"{task} config ({'preset ' + preset if preset else 'defaults'}); set with --set KEY=VALUE"
    return "\n".join([title] + [f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip()
                                for a, b, c, d in rows])
