"""``report.html`` for a run or study folder, and side-by-side comparison of runs.

A report is one self-contained HTML file: inline CSS, figures embedded as
base64 PNG data URIs, no JavaScript and no network access, so it can be mailed,
archived or opened from a USB stick. This module holds the data side only: it
reads the folder and builds each page's *context* (plain strings and numbers);
the Jinja2 templates in ``templates/`` lay it out, escaping everything read from
the run folder (config values, class names, file names, paths).

The report reads files, not Python objects, so it works for any folder laid out
like a run: ``config.json``, ``metrics.json``, ``environment.json``,
``history.csv``, ``figures/*.png``, and for a tuning study ``study.json``,
``trials.csv`` and ``best/`` (a run folder of the best trial).
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as _dt
import functools
import json
import math
import string
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jinja2

from nndl import data as datasets
from nndl.base.config import unused_settings
from nndl.base.errors import NndlError
from nndl.base.fileio import atomic_write_text
from nndl.runfolder.files import run_view

# Captions for the figures nndl writes; any other PNG gets a caption from its file name.
FIGURE_CAPTIONS = {
    "losses.png": "Training and validation loss per epoch.",
    "fit.png": "The model against the data: with one input, the fitted function over the training and test points "
               "(final and fold models); with several, predicted against true values and the 90% interval.",
    "activations.png": "Hidden-unit activations for the probe inputs, layer by layer.",
    "confusion_matrix.png": "Confusion matrices on the test set: counts and row-normalised.",
    "calibration.png": ("Reliability diagram on the test set: accuracy against confidence in 15 equal-width bins "
                        "(the diagonal is perfect calibration; ECE is the bin-weighted gap)."),
    "misclassified.png": "The most confidently wrong test images (true vs. predicted class).",
    "first_layer.png": "First-layer weights shown as images (filters / input patterns).",
    "feature_maps.png": "Feature maps of sample test images, one row per convolution layer.",
    "activation_max.png": "Activation maximisation: synthetic inputs that most excite each class.",
    "weight_histograms.png": "Distribution of the weights of each layer (biases left out).",
}
FIGURE_ORDER = list(FIGURE_CAPTIONS)
HISTORY_MAX_ROWS = 60  # longer histories are condensed in the report (the CSV keeps everything)
TRIALS_MAX_ROWS = 200
TEMPLATES = "templates"  # the pages' Jinja2 templates and style sheet, beside this module
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}

# ----------------------------------------------------------------------------- small helpers
def fmt(value: Any) -> str:
    """A number or value as short text: 4 significant digits for floats, thousands separators for ints."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if value == "":  # an empty CSV cell or an unset string field: nothing to show
        return "–"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if value else "–"
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when the file is missing or unreadable (a report never dies on one file)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of a CSV; cells that parse as numbers become numbers."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return [], []

    def num(v):
        if v is None or v == "":
            return v
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f

    return columns, [{k: num(v) for k, v in r.items()} for r in rows]


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header (no image library needed)."""
    if data[:8] == _MAGIC["image/png"] and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def data_uri(path: str | Path) -> str | None:
    """``data:image/...;base64,...`` for a PNG/JPEG file, or None when the file is not one (never a broken image)."""
    path = Path(path)
    mime = _IMAGE_TYPES.get(path.suffix.lower())
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if mime is None or not data.startswith(_MAGIC[mime]):
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def folder_view(run_dir: Path) -> dict[str, Any]:
    """How the folder is shown: a study's ``{"task": "tune", ...}``, or the view its run recorded
    (:func:`nndl.runfolder.files.run_view`: task, label, cards, captions)."""
    if (run_dir / "study.json").exists() or (run_dir / "trials.csv").exists():
        return {"task": "tune", "label": "tuning study"}
    return run_view(run_dir, _read_json(run_dir / "config.json"))


def detect_task(run_dir: Path) -> str:
    """``tune`` (a study folder), the task a run recorded, or ``run`` when a folder does not tell."""
    return folder_view(run_dir)["task"]


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, or NndlError when it is not a run/study folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NndlError(f"{run_dir}: no such folder; give a run folder (e.g. runs/classify-...)")
    if not any((run_dir / n).exists() for n in ("config.json", "metrics.json", "study.json", "trials.csv")):
        raise NndlError(f"{run_dir}: not an nndl run or study folder (no config.json, metrics.json or study.json)")
    return run_dir


def _config_defaults(task: str) -> dict[str, Any]:
    """Default values of the task's config fields, to flag what a run changed."""
    from nndl.base.config import TASK_CONFIGS, field_default

    cls = TASK_CONFIGS.get(task)  # the registry (filled by nndl.tasks, imported on first use)
    if cls is None:
        return {}
    return {f.name: field_default(cls, f.name) for f in dataclasses.fields(cls)}


# ----------------------------------------------------------------------------- templates
@functools.lru_cache(maxsize=None)
def template_environment() -> jinja2.Environment:
    """The Jinja2 environment of the pages: the templates shipped in ``nndl/runfolder/templates``.

    HTML templates are autoescaped (the CSS file, included raw inside ``<style>``, is not), and a
    name the context lacks is an error (StrictUndefined) rather than an empty cell.
    """
    return jinja2.Environment(loader=jinja2.PackageLoader("nndl.runfolder", TEMPLATES),
                              autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def render_page(template: str, context: dict[str, Any]) -> str:
    """``template`` (a file name under ``templates/``) rendered with ``context``.

    Raises
    ------
    jinja2.UndefinedError
        The template uses a name ``context`` does not hold.
    """
    return template_environment().get_template(template).render(context)


# ----------------------------------------------------------------------------- context pieces
@dataclasses.dataclass(frozen=True)
class RichCell:
    """A table cell with more than its text: a "changed" badge after it, or an accuracy bar (width in %) before."""

    text: str
    badge: bool = False
    bar: str | None = None


def _numeric_columns(rows: list[Sequence[Any]]) -> list[bool]:
    """Per column: True when every non-empty cell is a number (such a column is right-aligned).

    A column is aligned as a whole: a search parameter whose values mix numbers and
    text (``32`` and ``64,64``) would otherwise zig-zag between right and left.
    """
    width = max((len(r) for r in rows), default=0)
    out = []
    for j in range(width):
        cells = [r[j] for r in rows if j < len(r) and r[j] not in (None, "")]
        out.append(bool(cells) and all(_is_num(v) for v in cells))
    return out


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]], classes: Sequence[str] | None = None,
           row_classes: Sequence[str] | None = None) -> dict[str, Any]:
    """A table for ``macros.html``: every value formatted (:func:`fmt`) unless given as a :class:`RichCell`.

    ``classes`` names each column's cell class; without it, all-number columns are ``num`` (right-aligned).
    """
    rows = [list(r) for r in rows]
    numeric = _numeric_columns(rows)
    out = []
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            rich = value if isinstance(value, RichCell) else RichCell(fmt(value))
            cells.append({"text": rich.text, "badge": rich.badge, "bar": rich.bar,
                          "cls": classes[j] if classes else ("num" if numeric[j] else "")})
        out.append({"cls": row_classes[i] if row_classes else "", "cells": cells})
    return {"columns": [str(c) for c in columns], "rows": out}


def _kv_table(items: Iterable[tuple[str, Any]], badge: set[str] | None = None) -> dict[str, Any]:
    """A key/value table; keys in ``badge`` are marked as changed."""
    rows = [(RichCell(str(k), badge=bool(badge) and k in badge), v) for k, v in items]
    return _table(["key", "value"], rows, classes=["key", "val"])


def _card(label: str, value: Any, sub: str = "") -> dict[str, str]:
    return {"label": str(label), "value": str(value), "sub": str(sub)}


def _pct(v: Any) -> str:
    return f"{100 * v:.2f}%" if _is_num(v) and math.isfinite(v) else "–"


def _seconds(v: Any) -> str:
    if not _is_num(v) or not math.isfinite(v):
        return "–"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


_CARD_FORMATS: dict[str, Callable[[Any], str]] = {
    "number": fmt, "percent": _pct, "seconds": _seconds, "text": lambda v: "–" if v is None else str(v)}


def summary_card(spec: dict, metrics: dict, config: dict) -> dict[str, str]:
    """One summary card from a task's card spec (see :attr:`nndl.tasks.base.Task.cards`).

    A spec holds ``title``; ``value``, the metric shown (read from ``metrics.json``, then from
    ``config.json`` when the metrics lack it); ``format``, one of ``number`` (the default),
    ``percent``, ``seconds``, ``text``; and ``note``, a line under the value whose ``{key}`` /
    ``{key:,}`` fields are filled the same way: a note whose fields are not all there is left out.
    """
    key = str(spec.get("value", ""))
    shown = _CARD_FORMATS.get(str(spec.get("format", "number")), fmt)(metrics.get(key, config.get(key)))
    return _card(spec.get("title", key), shown, _card_note(str(spec.get("note", "")), metrics, config))


def _card_note(template: str, metrics: dict, config: dict) -> str:
    parts = []
    for text, key, spec, _ in string.Formatter().parse(template):
        parts.append(text)
        if key is None:
            continue
        value = metrics.get(key, config.get(key))
        if value is None or value == "" or (spec and not _is_num(value)):
            return ""
        parts.append(format(value, spec) if spec else fmt(value) if _is_num(value) else str(value))
    return "".join(parts)


def _summary_cards(view: dict, metrics: dict, config: dict, study: dict, trials: list[dict]) -> list[dict[str, str]]:
    cards, task = [], view["task"]
    specs = view.get("cards")
    if task != "tune" and isinstance(specs, list) and all(isinstance(c, dict) for c in specs):
        cards += [summary_card(spec, metrics, config) for spec in specs]
    elif task == "tune":
        best = study.get("best") if isinstance(study.get("best"), dict) else {}
        metric = str(study.get("metric") or "value")
        if best:
            cards.append(_card(f"Best {metric}", fmt(best.get("value")), f"trial #{best.get('number')} "
                               f"({study.get('direction', '')}, {study.get('folds', '?')}-fold mean)"))
        counts = study.get("counts") if isinstance(study.get("counts"), dict) else {}
        n_trials = study.get("trials", len(trials))
        if _is_num(n_trials):
            cards.append(_card("Trials", fmt(n_trials), " · ".join(f"{k.lower()} {v}" for k, v in counts.items())))
        best_run = study.get("best_run") if isinstance(study.get("best_run"), dict) else {}
        for k, v in best_run.items():
            if k.startswith("test") and _is_num(v):
                cards.append(_card(f"Best retrained: {k.replace('_', ' ')}",
                                   _pct(v) if "accuracy" in k else fmt(v), "on the test set, once"))
        if "sampler" in study:
            cards.append(_card("Sampler", str(study["sampler"]), f"pruner: {study.get('pruner', 'none')}"))
        if _is_num(study.get("wall_seconds")):
            cards.append(_card("Wall time", _seconds(study["wall_seconds"])))
        if not cards:  # an unfamiliar study.json: its first scalars
            scalars = [(k, v) for k, v in study.items() if not isinstance(v, (dict, list))]
            cards += [_card(k.replace("_", " "), fmt(v)) for k, v in scalars[:6]]
            if trials:
                cards.append(_card("Trials", len(trials)))
    else:
        cards += [_card(k.replace("_", " "), fmt(v)) for k, v in metrics.items()
                  if not isinstance(v, (dict, list))][:6]
    return cards


def _metrics_section(metrics: dict) -> dict[str, Any]:
    """Final metrics, per fold (regression), per class with a bar (classification), then any nested metric;
    ``parts`` None: no metrics.json."""
    section = {"id": "metrics", "title": "Metrics", "kind": "metrics", "parts": None}
    if not metrics:
        return section
    scalars = [(k, v) for k, v in metrics.items() if not isinstance(v, (dict, list))]
    lists = [(k, v) for k, v in metrics.items() if isinstance(v, list) and k != "per_fold"]
    flat = scalars + [(k, v) for k, v in lists if all(not isinstance(i, (dict, list)) for i in v)]
    parts = [_part("Final metrics", _kv_table(flat))]
    per_fold = metrics.get("per_fold")
    if isinstance(per_fold, list) and per_fold and all(isinstance(r, dict) for r in per_fold):
        parts.append(_per_fold_part(per_fold, metrics))
    per_class = metrics.get("per_class_accuracy")
    if isinstance(per_class, dict) and per_class:
        parts.append(_per_class_part(per_class))
    parts += [_part(k, _kv_table(v.items())) for k, v in metrics.items()
              if k not in ("per_fold", "per_class_accuracy") and isinstance(v, dict)]
    return {**section, "parts": parts}


def _part(title: str, table: dict, note: str = "") -> dict[str, Any]:
    return {"title": str(title), "table": table, "note": note}


def _per_fold_part(per_fold: list[dict], metrics: dict) -> dict[str, Any]:
    cols: list[str] = []
    for r in per_fold:
        cols += [k for k in r if k not in cols]
    vals = [r.get("val_mse") for r in per_fold if _is_num(r.get("val_mse"))]
    note = ""
    if vals:
        mean = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
        note = f"Validation MSE over {len(vals)} folds: {fmt(mean)} ± {fmt(sd)} (mean ± std)."
        if metrics.get("val_folds_scored"):  # search=auto, blocked: the headline scores the inner blocks only
            note += (f" The headline val_mse ({fmt(metrics.get('val_mse'))}) averages only the "
                     f"{metrics['val_folds_scored']}.")
    return _part("Per fold", _table(cols, [[r.get(c) for c in cols] for r in per_fold]), note)


def _per_class_part(per_class: dict) -> dict[str, Any]:
    rows = []
    for name, acc in per_class.items():
        width = max(0.0, min(1.0, acc)) * 100 if _is_num(acc) and math.isfinite(acc) else 0
        rows.append((name, RichCell(_pct(acc), bar=f"{width:.1f}")))
    worst = min(((v, k) for k, v in per_class.items() if _is_num(v)), default=None)
    note = f"Weakest class: {worst[1]} ({_pct(worst[0])})." if worst else ""
    return _part("Per-class test accuracy", _table(["class", "accuracy"], rows, classes=["key", ""]), note)


STUDY_FIGURES = ("history.png", "importances.png", "slices.png", "parallel_coordinate.png")


def _study_captions(study: dict, trials: list[dict]) -> dict[str, str]:
    """Captions of the study figures, naming the real metric, with a caution on importances from few trials."""
    from nndl.figures.study import FEW_TRIALS, metric_label

    label = metric_label(study.get("metric"), study.get("folds"))
    better = "higher" if str(study.get("direction", "")).lower().startswith("max") else "lower"
    complete = sum(str(r.get("state", "")).upper() == "COMPLETE" for r in trials) if trials else None
    if complete is None and isinstance(study.get("counts"), dict):
        complete = study["counts"].get("COMPLETE")
    caution = (f" Caution: only {complete} completed trials (fewer than ~{FEW_TRIALS}); read the importances as a "
               "rough hint, not a ranking." if isinstance(complete, int) and complete < FEW_TRIALS else "")
    return {
        "history.png": f"Search history: {label} of each trial in the order they ran ({better} is better); the "
                       "red line is the best so far, crosses mark trials that did not complete.",
        "importances.png": f"Parameter importances: the share of the variation in {label} each parameter "
                           f"explains (fANOVA).{caution}",
        "slices.png": f"{label} against each searched parameter; colour is the trial number, the star the best "
                      "trial.",
        "parallel_coordinate.png": f"Parallel coordinates: each line is a completed trial through its parameter "
                                   f"values to its {label}; the best is in red.",
    }


def _figures_section(fig_dir: Path, task: str = "", study: dict | None = None,
                     trials: list[dict] | None = None, captions: dict | None = None) -> dict[str, Any]:
    """All images in ``fig_dir`` as captioned figures (nndl's in a fixed order, then the rest by name).

    Wide images take a whole row; two narrow ones share a row. A narrow image with
    no narrow partner (it sits before a wide one, or is last) takes the row alone,
    centred, so no card is left beside an empty slot.
    """
    figures = _figure_cards(fig_dir, task, study or {}, trials or [], captions or {})
    count = sum(1 for f in figures or [] if f["uri"] is not None)
    failed = task == "tune" and not any(str(t.get("state", "")).upper() == "COMPLETE" for t in trials or [])
    return {"id": "figures", "title": f"Figures ({count})", "kind": "figures",
            "figures": None if figures is None else _lay_out(figures),
            "none_because": ("no trial completed; see the failure reasons" if failed
                             else "run without --no-figures to get them")}


def _figure_cards(fig_dir: Path, task: str, study: dict, trials: list[dict],
                  task_captions: dict) -> list[dict[str, Any]] | None:
    """One ``{name, uri, caption, wide}`` per image file (uri None: not a readable image); None: no folder.
    ``task_captions`` (the run's view) override the generic captions of the task's own figures."""
    if not fig_dir.is_dir():
        return None
    order = FIGURE_ORDER + list(STUDY_FIGURES)
    files = [p for p in fig_dir.iterdir() if p.suffix.lower() in _IMAGE_TYPES and p.is_file()]
    files.sort(key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
    captions = {**FIGURE_CAPTIONS, **(_study_captions(study, trials) if task == "tune" else {}),
                **{k: str(v) for k, v in task_captions.items()}}
    cards = []
    for p in files:
        caption = captions.get(p.name) or p.stem.replace("_", " ").replace("-", " ").capitalize() + "."
        uri = data_uri(p)
        size = _image_size(p.read_bytes()[:32]) if uri is not None else None
        # wide panels, and big ones whose detail a half-width card would shrink away, get a full row
        wide = size is not None and ((size[0] > 1.6 * size[1] and size[0] > 900) or size[0] >= 1100)
        cards.append({"name": p.name, "uri": uri, "caption": caption, "wide": wide})
    return cards


def _lay_out(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each card with its row class: "" (half a row, in pairs), "full" (wide) or "full solo" (narrow, alone)."""
    out, i = [], 0
    while i < len(cards):
        wide = cards[i]["wide"]
        if not wide and i + 1 < len(cards) and not cards[i + 1]["wide"]:
            out += [{**cards[i], "cls": ""}, {**cards[i + 1], "cls": ""}]
            i += 2
        else:
            out.append({**cards[i], "cls": "full" if wide else "full solo"})
            i += 1
    return out


def condense(rows: list[dict], group_key: str | None = None,
             max_rows: int = HISTORY_MAX_ROWS) -> tuple[list[dict], int]:
    """Every Nth row (per group, e.g. per fold) plus each group's last row; returns (rows, N)."""
    groups: dict[Any, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get(group_key) if group_key else None, []).append(r)
    per_group = max(5, max_rows // max(1, len(groups)))
    longest = max((len(g) for g in groups.values()), default=0)
    step = max(1, math.ceil(longest / per_group))
    if step == 1:
        return rows, 1
    out = []
    for g in groups.values():
        picked = g[::step]
        if picked[-1] is not g[-1]:
            picked.append(g[-1])
        out += picked
    return out, step


def _history_section(path: Path) -> dict[str, Any]:
    """``history.csv`` as a table, condensed when long (see :func:`condense`); table None: no history."""
    columns, rows = _read_csv(path)
    shown, step = condense(rows, "fold" if "fold" in columns else None) if rows else ([], 1)
    return {"id": "history", "title": "Training history", "kind": "history", "total": len(rows), "step": step,
            "shown": len(shown), "per_fold": "fold" in columns,
            "table": _table(columns, [[r.get(c) for c in columns] for r in shown]) if rows else None}


def _trials_section(run_dir: Path, study: dict) -> dict[str, Any]:
    """The trials table (best highlighted), the retrained best run and the flattened ``study.json``."""
    columns, rows = _read_csv(run_dir / "trials.csv")
    trials = None
    if rows:
        best_idx = _best_trial(columns, rows, study)
        shown = rows[:TRIALS_MAX_ROWS]
        table = _table(columns, [[r.get(c) for c in columns] for r in shown],
                       row_classes=["best" if i == best_idx else "" for i in range(len(shown))])
        trials = {"total": len(rows), "limit": TRIALS_MAX_ROWS, "truncated": len(rows) > TRIALS_MAX_ROWS,
                  "has_best": best_idx is not None, "table": table}
    best_dir = run_dir / "best"
    best = None
    if best_dir.is_dir():
        bm = _read_json(best_dir / "metrics.json")
        best = {"has_report": (best_dir / "report.html").exists(),
                "table": _kv_table([(k, v) for k, v in bm.items() if not isinstance(v, (dict, list))])
                if isinstance(bm, dict) else None}
    return {"id": "trials", "title": "Study and trials", "kind": "trials", "trials": trials, "best": best,
            "study": _kv_table(_flatten(study)) if study else None}


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys (``best.params.lr``), so a study summary reads as one table."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += _flatten(v, key + ".")
        else:
            out.append((key, "; ".join(map(str, v)) if isinstance(v, list) and v and
                        all(isinstance(i, str) for i in v) else v))
    return out


def _best_trial(columns: list[str], rows: list[dict], study: dict) -> int | None:
    """Index of the best row by ``value`` (direction from study.json, default minimise), or None."""
    if "value" not in columns:
        return None
    direction = str(study.get("direction", "minimize")).lower()
    vals = [(r["value"], i) for i, r in enumerate(rows)
            if _is_num(r.get("value")) and math.isfinite(r["value"])
            and str(r.get("state", "COMPLETE")).upper() == "COMPLETE"]
    if not vals:
        return None
    return (max(vals) if direction.startswith("max") else min(vals))[1]


def _run_device(metrics: dict, config: dict, env: dict) -> str:
    """The device a run trained on: recorded in metrics.json, else resolved from ``auto`` as the run did."""
    device = str(metrics.get("device") or config.get("device") or "auto")
    if device == "auto":  # CUDA when present, else the CPU
        device = f"cuda ({env['cuda']})" if env.get("cuda") else "cpu"
    return device


def _config_section(task: str, config: dict, device: str, kind: str = "") -> dict[str, Any]:
    """The settings the run used (changed ones flagged); the others are named once, below the table."""
    section: dict[str, Any] = {"id": "config", "title": "Configuration", "kind": "config", "table": None,
                               "any_changed": False, "left_out": None}
    if not config:
        return section
    defaults = _config_defaults(task)
    unused = {**unused_settings(task, config, device), **datasets.unused_settings(kind)}  # kind: metrics' dataset
    if datasets.is_table(kind):
        from nndl.nn.augment import images_only_settings  # torch: only for a table run's report

        unused.update(images_only_settings())
    items = [(k, v) for k, v in config.items() if k not in unused]
    changed = {k for k, v in items if k in defaults and defaults[k] != v}
    left_out = [{"key": k, "why": str(why)} for k, why in unused.items() if k in config]
    return {**section, "table": _kv_table(items, changed), "any_changed": bool(changed),
            "left_out": left_out if unused else None}


ENV_KEYS = ("nndl", "torch", "python", "cuda", "cpu", "threads", "platform", "git_commit")


def _versions_now() -> dict[str, Any]:
    """Versions of this process (for folders that recorded none): nndl, torch, Python, Optuna."""
    import platform
    from importlib import metadata

    from nndl import __version__

    out: dict[str, Any] = {"nndl": __version__}
    for pkg in ("torch", "optuna"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    out["platform"] = platform.platform()
    return out


def _environment_section(run_dir: Path, task: str, env: dict, config: dict, device: str) -> dict[str, Any]:
    """The Environment table and where its rows come from (``source``: run, best_run or report).

    A study folder records no environment of its own; the retrained best run
    (``best/environment.json``, written by the same process) stands in for it,
    else the versions of the process writing the report, labelled as such.
    """
    source = "best_run" if task == "tune" and env else "run"
    if not env:
        env, source = _versions_now(), "report"
    items = [(k, env.get(k)) for k in ENV_KEYS if k in env]
    items.insert(min(2, len(items)), ("device", device))
    if "seed" in config:
        items.append(("seed", config["seed"]))
    items += [(k, v) for k, v in env.items() if k not in dict(items)]
    items.append(("run folder" if task != "tune" else "study folder", str(run_dir.resolve())))
    return {"id": "environment", "title": "Environment", "kind": "environment", "source": source,
            "table": _kv_table(items)}


# ----------------------------------------------------------------------------- public API
def render_report(run_dir: str | Path, shown_as: str | Path | None = None) -> str:
    """The HTML text of the report of ``run_dir`` (see :func:`write_report`); ``shown_as``: the folder
    the page names (a run built beside the one it replaces is named by its final folder)."""
    return render_page("report.html", report_context(run_dir, shown_as))


def report_context(run_dir: str | Path, shown_as: str | Path | None = None) -> dict[str, Any]:
    """What ``report.html`` shows, as plain values (the template only lays them out).

    Returns
    -------
    dict
        ``task_label``, ``name``, ``folder``, ``finished``; ``warnings`` (``title`` and
        ``reasons``); ``cards`` (``label``, ``value``, ``sub``); ``rows``: lists of sections,
        each with ``id``, ``title``, ``kind`` (the ``section_<kind>.html`` that draws it) and
        its own values; ``version``, ``written`` and ``regenerate`` for the footer.
    """
    run_dir = check_run_dir(run_dir)
    shown = Path(shown_as) if shown_as is not None else run_dir
    view = folder_view(run_dir)
    task = view["task"]
    config, metrics, env, study = (_read_dict(run_dir / f) for f in
                                   ("config.json", "metrics.json", "environment.json", "study.json"))
    _, trials = _read_csv(run_dir / "trials.csv")
    from nndl import __version__

    return {"task_label": str(view.get("label") or task),
            "name": shown.resolve().name, "folder": str(shown.resolve()), "finished": _finished_at(run_dir),
            "warnings": _warnings(study, metrics), "cards": _summary_cards(view, metrics, config, study, trials),
            "rows": _rows(_sections(run_dir, shown, view, config, metrics, env, study, trials)),
            "version": __version__, "written": _now(), "regenerate": str(shown)}


def _read_dict(path: Path) -> dict:
    """The JSON object in ``path``; {} when it is missing, unreadable or not an object."""
    value = _read_json(path)
    return value if isinstance(value, dict) else {}


def _now() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def _finished_at(run_dir: Path) -> str:
    """When the run's results were written (the first of its summary files), or "" when none exists."""
    for f in ("metrics.json", "study.json", "config.json"):
        if (run_dir / f).exists():
            return _dt.datetime.fromtimestamp((run_dir / f).stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    return ""


def _warnings(study: dict, metrics: dict) -> list[dict[str, Any]]:
    """The boxes at the top: a study with problems, a run whose training diverged."""
    out = []
    if study.get("ok") is False or (isinstance(study.get("warnings"), list) and study["warnings"]):
        out.append({"title": "This study has problems.",
                    "reasons": [str(w) for w in study.get("warnings") or ["see study.json"]]})
    if metrics.get("diverged"):
        reasons = metrics.get("stop_reasons") or [metrics.get("stop_reason", "loss was not finite")]
        out.append({"title": "Training diverged.",
                    "reasons": [str(r) for r in (reasons if isinstance(reasons, list) else [reasons])]})
    return out


def _sections(run_dir: Path, shown: Path, view: dict, config: dict, metrics: dict, env: dict, study: dict,
              trials: list[dict]) -> list[dict[str, Any]]:
    """The report's sections in page order; a study shows only the parts its folder has."""
    sections, task = [], view["task"]
    if task == "tune":
        sections.append(_trials_section(run_dir, study))
    if metrics or task != "tune":
        sections.append(_metrics_section(metrics))
    captions = view.get("captions") if isinstance(view.get("captions"), dict) else {}
    sections.append(_figures_section(run_dir / "figures", task=task, study=study, trials=trials, captions=captions))
    if (run_dir / "history.csv").exists() or task != "tune":
        sections.append(_history_section(run_dir / "history.csv"))
    if task == "tune" and not env:  # a study records no environment; its best run, from the same process, does
        env = _read_dict(run_dir / "best" / "environment.json")
        device = _run_device(_read_dict(run_dir / "best" / "metrics.json"), {}, env)
    else:
        device = _run_device(metrics, config, env)
    if config or task != "tune":
        sections.append(_config_section(task, config, device, metrics.get("dataset", "")))
    sections.append(_environment_section(shown, task, env, config, device))
    return sections


def _rows(sections: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Sections in rows of the page: the short configuration and environment tables share the last one."""
    if [s["id"] for s in sections[-2:]] == ["config", "environment"]:
        return [[s] for s in sections[:-2]] + [sections[-2:]]
    return [[s] for s in sections]


def write_report(run_dir: str | Path, out: str | Path | None = None, shown_as: str | Path | None = None) -> Path:
    """Write ``run_dir/report.html`` (or ``out``) and return its path.

    Parameters
    ----------
    run_dir : str or Path
        A run folder (``nndl regress``/``classify``) or a tuning study folder.
    out : str or Path, optional
        Where to write (default: ``run_dir/report.html``).
    shown_as : str or Path, optional
        The folder the page names (default: ``run_dir``).

    Returns
    -------
    Path

    Raises
    ------
    NndlError
        ``run_dir`` is not a run or study folder.
    """
    from nndl.runfolder.files import record

    text = render_report(run_dir, shown_as)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write_text(path, text)  # a half-written report is never left behind
    record(path)  # the run's marker names it, so --overwrite may still replace the run
    return path


# ----------------------------------------------------------------------------- comparison
def _history_curves(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Per key (train_loss, val_loss, train_acc, val_acc): (epoch, value) points, fold histories averaged."""
    _, rows = _read_csv(run_dir / "history.csv")
    rows = [r for r in rows if r.get("fold") in (None, "") or _is_num(r.get("fold"))]  # folds, not the refit
    out: dict[str, list[tuple[float, float]]] = {}
    for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
        by_epoch: dict[float, list[float]] = {}
        for r in rows:
            if _is_num(r.get(key)) and _is_num(r.get("epoch")):
                by_epoch.setdefault(r["epoch"], []).append(r[key])
        if by_epoch:
            out[key] = [(e, sum(v) / len(v)) for e, v in sorted(by_epoch.items())]
    return out


def _compare_figure(runs: list[Path], names: list[str]) -> str | None:
    """Overlaid curves as a PNG data URI: loss (train solid, validation dashed) and accuracy when present."""
    from nndl.figures.curves import styled

    return styled(_draw_compare_figure)(runs, names)


def _draw_compare_figure(runs: list[Path], names: list[str]) -> str | None:
    from nndl.figures.common import image_bytes, plt
    from nndl.figures.curves import Panel, draw_curves

    curves = [_history_curves(r) for r in runs]
    if not any(curves):
        return None
    panels = [Panel(("train_loss", "val_loss"), "loss", "Loss: training (solid) and validation (dashed)")]
    if any("val_acc" in c or "train_acc" in c for c in curves):
        panels.append(Panel(("train_acc", "val_acc"), "accuracy",
                            "Accuracy: training (solid) and validation (dashed)", log=None))
    fig = plt.figure(figsize=(12 if len(panels) > 1 else 8, 4.4))
    draw_curves(fig, [(name, _curve_rows(c)) for c, name in zip(curves, names)], panels,
                label=lambda name, key: f"{name} · {key.split('_')[0].replace('val', 'validation')}",
                lw=1.4, markers_below=15, legend={"fontsize": 7})
    return "data:image/png;base64," + base64.b64encode(image_bytes(fig)).decode("ascii")


def _curve_rows(curves: dict[str, list[tuple[float, float]]]) -> list[dict]:
    """``{key: [(epoch, value)]}`` as history rows, one per epoch (what the curve drawer reads)."""
    rows: dict[float, dict] = {}
    for key, points in curves.items():
        for epoch, value in points:
            rows.setdefault(epoch, {"epoch": epoch})[key] = value
    return [rows[e] for e in sorted(rows)]


def _scalar(d: dict) -> dict:
    return {k: v for k, v in d.items() if not isinstance(v, (dict, list))}


NOT_USED = "(not used)"
COMPARE_ENV_KEYS = ("nndl", "torch", "python", "device", "git_commit")


def comparable_runs(run_dirs: Sequence[str | Path]) -> tuple[list[Path], list[str], list[str]]:
    """The folders to compare, their column names, and notes on substitutions.

    A tuning study stands in by its retrained best run (``best/``): a study's own
    numbers (trial values) are not a run's metrics. Runs of different kinds
    (regression MSE vs classification cross-entropy) are refused: no row of the
    table and no axis of the plot would compare like with like.

    Raises
    ------
    NndlError
        A folder is not a run/study, a study has no ``best/`` run, or the kinds differ.
    """
    runs, names, notes = [], [], []
    for r in (check_run_dir(d) for d in run_dirs):
        if detect_task(r) == "tune":
            best = r / "best"
            if not (best / "metrics.json").exists():
                raise NndlError(f"{r}: a tuning study with no retrained best run (best/metrics.json); compare it "
                                "once its best config is retrained, or compare runs")
            notes.append(f"{r.resolve().name} is a tuning study: compared by its retrained best run ({best}).")
            runs.append(best)
            names.append(f"{r.resolve().name} (best)")
        else:
            runs.append(r)
            names.append(r.resolve().name)
    if len(set(names)) < len(names):  # same folder names in different places: use the paths
        names = [str(r) for r in runs]
    views = {n: folder_view(r) for n, r in zip(names, runs)}
    known = {v["task"] for v in views.values() if v["task"] != "run"}
    if len(known) > 1:
        raise NndlError("compare: " + ", ".join(f"{n} is a {v.get('label') or v['task']} run" for n, v in views.items())
                        + "; their losses and metrics are not comparable (MSE vs cross-entropy); compare runs of "
                        "one kind")
    return runs, names, notes


def compare_table(run_dirs: Sequence[str | Path]) -> tuple[list[str], list[tuple[str, str, list[Any]]]]:
    """The comparison: run names and rows ``(section, key, values per run)``.

    Config rows hold only keys whose values differ between runs (a setting a run
    did not use shows as ``(not used)``, see :func:`unused_settings`); metric rows
    hold every scalar metric any run has (missing ones are None); environment rows
    hold the versions and device of each run. A study is compared by its best run
    (see :func:`comparable_runs`).
    """
    runs, names, _ = comparable_runs(run_dirs)
    tasks = [detect_task(r) for r in runs]
    configs = [_read_json(r / "config.json") or {} for r in runs]
    full_metrics = [_read_json(r / "metrics.json") or {} for r in runs]
    envs = [_read_json(r / "environment.json") or {} for r in runs]
    devices = [_run_device(m, c, e) for m, c, e in zip(full_metrics, configs, envs)]
    metrics = [_scalar(m) for m in full_metrics]
    rows: list[tuple[str, str, list[Any]]] = [("run", "task", tasks)]
    keys: list[str] = []
    for c in configs:
        keys += [k for k in c if k not in keys]
    unused = [unused_settings(t, c, d) for t, c, d in zip(tasks, configs, devices)]
    missing = object()
    for k in keys:
        vals = [NOT_USED if k in u else c.get(k, missing) for c, u in zip(configs, unused)]
        if any(v != vals[0] for v in vals):
            rows.append(("config", k, [None if v is missing else v for v in vals]))
    mkeys: list[str] = []
    for m in metrics:
        mkeys += [k for k in m if k not in mkeys]
    for k in mkeys:
        rows.append(("metric", k, [m.get(k) for m in metrics]))
    for k in COMPARE_ENV_KEYS:
        vals = devices if k == "device" else [e.get(k) for e in envs]
        if any(v is not None for v in vals):
            rows.append(("environment", k, vals))
    return names, rows


def format_compare(names: list[str], rows: list[tuple[str, str, list[Any]]]) -> str:
    """The comparison as an aligned text table for the terminal."""
    label = [f"{s}: {k}" if s != "run" else k for s, k, _ in rows]
    cells = [[fmt(v) for v in vals] for _, _, vals in rows]
    w0 = max([len(x) for x in label] + [4])
    widths = [min(40, max([len(n)] + [len(c[i]) for c in cells])) for i, n in enumerate(names)]
    cut = lambda s, w: s if len(s) <= w else s[: w - 1] + "…"  # noqa: E731
    lines = ["  ".join([f"{'':<{w0}}"] + [f"{cut(n, w):>{w}}" for n, w in zip(names, widths)])]
    lines.append("  ".join(["-" * w0] + ["-" * w for w in widths]))
    prev = None
    for (section, _, _), lab, row in zip(rows, label, cells):
        if prev is not None and section != prev:
            lines.append("")
        prev = section
        lines.append("  ".join([f"{lab:<{w0}}"] + [f"{cut(c, w):>{w}}" for c, w in zip(row, widths)]))
    if not any(s == "config" for s, _, _ in rows):
        lines.append("\n(the configs are identical)")
    return "\n".join(lines)


def compare_context(runs: list[Path], names: list[str], notes: list[str],
                    rows: list[tuple[str, str, list[Any]]]) -> dict[str, Any]:
    """What ``compare.html`` shows, as plain values: the runs (with links to their reports), notes, the
    overlaid curves (a data URI, or None without history), and the tables of :func:`compare_table`'s rows."""
    from nndl import __version__

    by_section: dict[str, list] = {"run": [], "config": [], "metric": [], "environment": []}
    for section, key, vals in rows:
        by_section[section].append([key] + list(vals))
    cols = [""] + names
    return {"names": names, "notes": notes, "version": __version__, "written": _now(),
            "runs": [{"path": str(r.resolve()),
                      "report": (r / "report.html").resolve().as_uri() if (r / "report.html").exists() else None}
                     for r in runs],
            "curves": _compare_figure(runs, names),
            "configs_differ": bool(by_section["config"]),
            "config": _table(cols, by_section["run"] + by_section["config"]),
            "metrics": _table(cols, by_section["metric"]),
            "environment": _table(cols, by_section["environment"]) if by_section["environment"] else None}


def compare(run_dirs: Sequence[str | Path], out: str | Path = "compare.html",
            echo: Callable[[str], None] | None = print) -> Path:
    """Compare runs side by side: print a table and write an HTML page with overlaid curves.

    Parameters
    ----------
    run_dirs : list of str or Path
        Two or more run folders.
    out : str or Path
        The HTML file to write (self-contained, like a report).
    echo : callable or None
        Where the text table goes (None: nowhere).

    Returns
    -------
    Path
        ``out``.
    """
    if len(run_dirs) < 2:
        raise NndlError("compare needs at least two run folders")
    from nndl.runfolder.files import check_output, record

    check_output(out, folders=[Path(r) if Path(r).is_dir() else Path(r).parent for r in run_dirs])
    runs, _, notes = comparable_runs(run_dirs)
    names, rows = compare_table(run_dirs)
    if echo is not None:
        echo("\n".join(notes + [format_compare(names, rows)]))
    text = render_page("compare.html", compare_context(runs, names, notes, rows))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    record(out)
    return out


def finish_run(run_dir: Path, metrics: dict, echo=print) -> dict:
    """Close a regress/classify run: write report.html, mark the run complete
    and put it in its place (over the run it replaces, see :func:`nndl.runfolder.files.place`), print the
    metrics table and where everything is; return ``metrics`` with ``run_dir`` (its final folder) added."""
    from nndl.runfolder.files import destination, format_metrics, place

    write_report(run_dir, shown_as=destination(run_dir))
    run_dir = place(run_dir)
    report_path = run_dir / "report.html"
    echo(format_metrics(metrics))
    echo(f"\nrun folder: {run_dir}\nfigures:    {run_dir / 'figures'}\nreport:     {report_path}")
    metrics["run_dir"] = str(run_dir)
    return metrics
