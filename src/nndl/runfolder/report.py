"""``report.html`` for a run or study folder, and side-by-side comparison of runs.

A report is one self-contained HTML file: inline CSS, figures embedded as
base64 PNG data URIs, no JavaScript and no network access, so it can be mailed,
archived or opened from a USB stick. Everything read from the run folder
(config values, class names, file names, paths) is HTML-escaped.

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
import html
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from nndl.base.config import unused_settings
from nndl.base.errors import NndlError
from nndl.base.fileio import atomic_write_text

# Captions for the figures nndl writes; any other PNG gets a caption from its file name.
FIGURE_CAPTIONS = {
    "losses.png": "Training and validation loss per epoch.",
    "fit.png": "The fitted function: training and test points, the final model and the fold models.",
    "activations.png": "Hidden-unit activations for the probe inputs, layer by layer.",
    "confusion_matrix.png": "Confusion matrices on the test set: counts and row-normalised.",
    "misclassified.png": "The most confidently wrong test images (true vs. predicted class).",
    "first_layer.png": "First-layer weights shown as images (filters / input patterns).",
    "feature_maps.png": "Feature maps of sample test images, one row per convolution layer.",
    "activation_max.png": "Activation maximisation: synthetic inputs that most excite each class.",
    "weight_histograms.png": "Distribution of the weights of each layer (biases left out).",
}
FIGURE_ORDER = list(FIGURE_CAPTIONS)
HISTORY_MAX_ROWS = 60  # longer histories are condensed in the report (the CSV keeps everything)
TRIALS_MAX_ROWS = 200
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--accent:#0969da;--good:#1a7f37;--bad:#cf222e}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:var(--fg);background:#fff}
main{max-width:1180px;margin:0 auto;padding:28px 32px 48px}
header{border-bottom:1px solid var(--line);padding-bottom:14px;margin-bottom:18px}
h1{font-size:26px;margin:0 0 4px;font-weight:600;word-break:break-all}
h1 .task{display:inline-block;font-size:13px;font-weight:600;color:#fff;background:var(--accent);
 border-radius:12px;padding:2px 10px;margin-right:10px;vertical-align:middle;text-transform:uppercase;
 letter-spacing:.04em}
h2{font-size:19px;margin:34px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:20px 0 8px}
.meta{color:var(--muted);font-size:13px;word-break:break-all}
nav{font-size:13px;margin:6px 0 0}
nav a{color:var(--accent);text-decoration:none;margin-right:14px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px;margin:18px 0 6px}
.card{border:1px solid var(--line);border-radius:8px;padding:12px 14px;background:var(--soft)}
.card .label{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:24px;font-weight:600;margin-top:2px;font-variant-numeric:tabular-nums;word-break:break-all}
.card .sub{font-size:12px;color:var(--muted)}
.warn{border:1px solid #d4a72c;background:#fff8c5;border-radius:8px;padding:10px 14px;margin:14px 0}
table{border-collapse:collapse;margin:6px 0 4px;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--line);padding:4px 12px 4px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;position:sticky;top:0}
td.num{text-align:right;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
td.key{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:nowrap}
td.val{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all;max-width:640px}
tr.best td{background:#dafbe1}
tr:nth-child(even) td{background:#fbfcfd}
.wide{overflow-x:auto;max-width:100%}
.scroll{max-height:560px;overflow:auto;display:inline-block;max-width:100%;border-bottom:1px solid var(--line)}
.two{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:0 40px;align-items:start}
.bar{display:inline-block;height:10px;border-radius:3px;background:var(--accent);vertical-align:middle}
.barbox{display:inline-block;width:180px;height:10px;background:#eaeef2;border-radius:3px;margin-right:8px;
 vertical-align:middle}
.badge{font-size:11px;color:#9a6700;background:#fff8c5;border:1px solid #d4a72c;border-radius:10px;padding:0 6px;
 margin-left:6px}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(500px,1fr));gap:18px}
figure{margin:0;border:1px solid var(--line);border-radius:8px;padding:10px;background:#fff}
figure.full{grid-column:1/-1}
figure.solo img{max-width:min(100%,720px)}
figure img{display:block;max-width:100%;height:auto;margin:0 auto}
figcaption{font-size:13px;color:var(--muted);margin-top:6px}
figcaption b{color:var(--fg);font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-weight:600}
.note{color:var(--muted);font-size:13px;margin:4px 0}
footer{margin-top:40px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:10px}
@media print{th{position:static}figure{break-inside:avoid}}
"""


# ----------------------------------------------------------------------------- small helpers
def esc(value: Any) -> str:
    """HTML-escape anything (quotes included, so the result is safe inside attributes too)."""
    return html.escape(str(value), quote=True)


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


def detect_task(run_dir: Path) -> str:
    """``tune`` (study folder), ``classify``, ``regress`` or ``run`` (unknown), from the files present."""
    if (run_dir / "study.json").exists() or (run_dir / "trials.csv").exists():
        return "tune"
    cfg = _read_json(run_dir / "config.json") or {}
    metrics = _read_json(run_dir / "metrics.json") or {}
    if "test_accuracy" in metrics or "model" in cfg:
        return "classify"
    if "test_mse" in metrics or "folds" in cfg:
        return "regress"
    return "run"


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
    from nndl.base.config import TASK_CONFIGS

    cls = TASK_CONFIGS.get(task)
    if cls is None:
        return {}
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


# ----------------------------------------------------------------------------- HTML pieces
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
           row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cells are escaped unless given as ``("html", markup)``."""
    rows = [list(r) for r in rows]
    numeric = _numeric_columns(rows)
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, v in enumerate(row):
            cls = classes[j] if classes else ("num" if numeric[j] else "")
            inner = v[1] if isinstance(v, tuple) and len(v) == 2 and v[0] == "html" else esc(fmt(v))
            cells.append(f'<td class="{cls}">{inner}</td>' if cls else f"<td>{inner}</td>")
        rc = row_classes[i] if row_classes else ""
        body.append(f'<tr class="{rc}">' + "".join(cells) + "</tr>" if rc else "<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _kv_table(items: Iterable[tuple[str, Any]], badge: set[str] | None = None) -> str:
    rows = []
    for k, v in items:
        mark = '<span class="badge">changed</span>' if badge and k in badge else ""
        rows.append((("html", esc(k) + mark), v))
    return _table(["key", "value"], rows, classes=["key", "val"])


def _card(label: str, value: Any, sub: str = "") -> str:
    sub_html = f'<div class="sub">{esc(sub)}</div>' if sub else ""
    return (f'<div class="card"><div class="label">{esc(label)}</div>'
            f'<div class="value">{esc(value)}</div>{sub_html}</div>')


def _pct(v: Any) -> str:
    return f"{100 * v:.2f}%" if _is_num(v) and math.isfinite(v) else "–"


def _seconds(v: Any) -> str:
    if not _is_num(v) or not math.isfinite(v):
        return "–"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def _summary_cards(task: str, metrics: dict, config: dict, study: dict, trials: list[dict]) -> str:
    cards = []
    if task == "classify":
        cards += [_card("Test accuracy", _pct(metrics.get("test_accuracy")), f"{fmt(metrics.get('test_images'))} images"
                        if "test_images" in metrics else ""),
                  _card("Validation accuracy", _pct(metrics.get("val_accuracy"))),
                  _card("Test loss", fmt(metrics.get("test_loss"))),
                  _card("Epochs", fmt(metrics.get("epochs")), str(metrics.get("stop_reason", ""))),
                  _card("Training time", _seconds(metrics.get("train_seconds")), str(metrics.get("device", ""))),
                  _card("Model", str(metrics.get("model", config.get("model", "–"))),
                        f"{metrics['parameters']:,} parameters" if _is_num(metrics.get("parameters")) else "")]
    elif task == "regress":
        std = metrics.get("val_mse_std")
        cards += [_card("Test MSE", fmt(metrics.get("test_mse"))),
                  _card("CV validation MSE", fmt(metrics.get("val_mse")),
                        f"± {fmt(std)} over folds" if _is_num(std) else ""),
                  _card("CV training MSE", fmt(metrics.get("train_mse"))),
                  _card("Folds", fmt(metrics.get("folds", config.get("folds"))),
                        f"final model: {metrics.get('final', config.get('final', '–'))}"),
                  _card("Epochs", fmt(metrics.get("epochs", config.get("epochs")))),
                  _card("Training time", _seconds(metrics.get("train_seconds")))]
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
    return f'<div class="cards">{"".join(cards)}</div>' if cards else ""


def _metrics_section(task: str, metrics: dict) -> str:
    if not metrics:
        return '<p class="note">No metrics.json in this folder.</p>'
    parts = []
    scalars = [(k, v) for k, v in metrics.items() if not isinstance(v, (dict, list))]
    lists = [(k, v) for k, v in metrics.items() if isinstance(v, list) and k != "per_fold"]
    scalar_html = _kv_table(scalars + [(k, v) for k, v in lists if all(not isinstance(i, (dict, list)) for i in v)])
    parts.append(f"<div><h3>Final metrics</h3>{scalar_html}</div>")
    per_fold = metrics.get("per_fold")
    if isinstance(per_fold, list) and per_fold and all(isinstance(r, dict) for r in per_fold):
        cols = []
        for r in per_fold:
            cols += [k for k in r if k not in cols]
        rows = [[r.get(c) for c in cols] for r in per_fold]
        vals = [r.get("val_mse") for r in per_fold if _is_num(r.get("val_mse"))]
        note = ""
        if vals:
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
            note = f'<p class="note">Validation MSE over {len(vals)} folds: {fmt(mean)} ± {fmt(sd)} (mean ± std).</p>'
        parts.append(f"<div><h3>Per fold</h3>{_table(cols, rows)}{note}</div>")
    per_class = metrics.get("per_class_accuracy")
    if isinstance(per_class, dict) and per_class:
        rows = []
        for name, acc in per_class.items():
            width = max(0.0, min(1.0, acc)) * 100 if _is_num(acc) and math.isfinite(acc) else 0
            bar = f'<span class="barbox"><span class="bar" style="width:{width:.1f}%"></span></span>{esc(_pct(acc))}'
            rows.append((name, ("html", bar)))
        worst = min(((v, k) for k, v in per_class.items() if _is_num(v)), default=None)
        note = f'<p class="note">Weakest class: {esc(worst[1])} ({esc(_pct(worst[0]))}).</p>' if worst else ""
        parts.append(f"<div><h3>Per-class test accuracy</h3>"
                     f"{_table(['class', 'accuracy'], rows, classes=['key', ''])}{note}</div>")
    for k, v in metrics.items():  # any other nested metric, shown generically
        if k not in ("per_fold", "per_class_accuracy") and isinstance(v, dict):
            parts.append(f"<div><h3>{esc(k)}</h3>{_kv_table(v.items())}</div>")
    return f'<div class="two">{"".join(parts)}</div>'


TASK_CAPTIONS = {
    "regress": {"losses.png": "Training (solid) and validation (dashed) MSE per epoch, for each fold and the refit."},
    "classify": {"losses.png": "Loss and accuracy per epoch on the training and validation sets.",
                 "feature_maps.png": "Feature maps of one test image of each class: the first channels of "
                                     "selected convolution layers (each map on its own colour scale)."},
}
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
                     trials: list[dict] | None = None) -> tuple[str, int]:
    """All images in ``fig_dir`` as captioned figures (nndl's in a fixed order, then the rest by name).

    Wide images take a whole row; two narrow ones share a row. A narrow image with
    no narrow partner (it sits before a wide one, or is last) takes the row alone,
    centred, so no card is left beside an empty slot.
    """
    if not fig_dir.is_dir():
        return '<p class="note">No figures folder.</p>', 0
    order = FIGURE_ORDER + list(STUDY_FIGURES)
    files = [p for p in fig_dir.iterdir() if p.suffix.lower() in _IMAGE_TYPES and p.is_file()]
    files.sort(key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
    if not files:
        return '<p class="note">No figures in this run (run without --no-figures to get them).</p>', 0
    captions = {**FIGURE_CAPTIONS, **(_study_captions(study or {}, trials or []) if task == "tune" else {}),
                **TASK_CAPTIONS.get(task, {})}
    cards = []  # (wide, html)
    for p in files:
        caption = captions.get(p.name) or p.stem.replace("_", " ").replace("-", " ").capitalize() + "."
        uri = data_uri(p)
        if uri is None:
            cards.append((False, f'<p class="note">{esc(p.name)}: not a readable PNG/JPEG, skipped.</p>'))
            continue
        size = _image_size(p.read_bytes()[:32])
        # wide panels, and big ones whose detail a half-width card would shrink away, get a full row
        wide = size is not None and ((size[0] > 1.6 * size[1] and size[0] > 900) or size[0] >= 1100)
        cards.append((wide, f'<img src="{uri}" alt="{esc(p.name)}">'
                            f"<figcaption><b>{esc(p.name)}</b> — {esc(caption)}</figcaption>"))
    items, i = [], 0
    while i < len(cards):
        wide, markup = cards[i]
        paired = not wide and i + 1 < len(cards) and not cards[i + 1][0]
        if paired:
            items += [f"<figure>{markup}</figure>", f"<figure>{cards[i + 1][1]}</figure>"]
            i += 2
        else:
            items.append(f'<figure class="{"full" if wide else "full solo"}">{markup}</figure>')
            i += 1
    n = sum(1 for _, m in cards if m.startswith("<img"))
    return f'<div class="figs">{"".join(items)}</div>', n


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


def _history_section(path: Path) -> str:
    columns, rows = _read_csv(path)
    if not rows:
        return '<p class="note">No history.csv in this folder.</p>'
    group = "fold" if "fold" in columns else None
    shown, step = condense(rows, group)
    note = ""
    if step > 1:
        per = " of each fold" if group else ""
        note = (f'<p class="note">{len(rows)} rows: showing every {step}th epoch{per} plus the last '
                f"({len(shown)} rows). The full history is in <code>history.csv</code>.</p>")
    # A scroll box keeps a long table from pushing the configuration pages down (no JS needed).
    return note + '<div class="scroll">' + _table(columns, [[r.get(c) for c in columns] for r in shown]) + "</div>"



def _trials_section(run_dir: Path, study: dict) -> str:
    parts = []
    columns, rows = _read_csv(run_dir / "trials.csv")
    if rows:
        best_idx = _best_trial(columns, rows, study)
        shown = rows[:TRIALS_MAX_ROWS]
        note = (f'<p class="note">{len(rows)} trials; showing the first {TRIALS_MAX_ROWS}. '
                "All are in <code>trials.csv</code>.</p>") if len(rows) > TRIALS_MAX_ROWS else \
            f'<p class="note">{len(rows)} trials{"; the best is highlighted" if best_idx is not None else ""}.</p>'
        parts.append("<h3>Trials</h3>" + note + _table(columns, [[r.get(c) for c in columns] for r in shown],
                                                       row_classes=["best" if i == best_idx else ""
                                                                    for i in range(len(shown))]))
    else:
        parts.append('<p class="note">No trials.csv in this folder.</p>')
    best = run_dir / "best"
    if best.is_dir():
        link = (f' Its own report: <a href="best/report.html">best/report.html</a>.'
                if (best / "report.html").exists() else "")
        parts.append(f'<h3>Best trial</h3><p class="note">The best configuration retrained is in '
                     f"<code>best/</code>.{link}</p>")
        bm = _read_json(best / "metrics.json")
        if isinstance(bm, dict):
            parts.append(_kv_table([(k, v) for k, v in bm.items() if not isinstance(v, (dict, list))]))
    if study:
        parts.append(f"<h3>Study details (<code>study.json</code>)</h3>{_kv_table(_flatten(study))}")
    return "\n".join(parts)


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


def _config_section(task: str, config: dict, device: str) -> str:
    """The settings the run used (changed ones flagged); the others are named once, below the table."""
    if not config:
        return '<p class="note">No config.json.</p>'
    defaults = _config_defaults(task)
    unused = unused_settings(task, config, device)
    items = [(k, v) for k, v in config.items() if k not in unused]
    changed = {k for k, v in items if k in defaults and defaults[k] != v}
    note = ('<p class="note">Settings this run used (<code>config.json</code> has them all)'
            + ('; <span class="badge">changed</span> marks values that differ from the defaults' if changed else "")
            + ".</p>")
    left_out = ""
    if unused:
        left_out = ('<p class="note">Not used by this run, so not listed: '
                    + "; ".join(f"<code>{esc(k)}</code> ({esc(why)})" for k, why in unused.items() if k in config)
                    + ".</p>")
    return note + _kv_table(items, changed) + left_out


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


def _environment_items(run_dir: Path, task: str, env: dict, config: dict,
                       device: str) -> tuple[list[tuple[str, Any]], str]:
    """Rows of the Environment table and a note saying where they come from.

    A study folder records no environment of its own; the retrained best run
    (``best/environment.json``, written by the same process) stands in for it,
    else the versions of the process writing the report, labelled as such.
    """
    note = ""
    if task == "tune" and env:
        note = '<p class="note">Recorded by the retrained best run (<code>best/environment.json</code>).</p>'
    if not env:
        env = _versions_now()
        note = ('<p class="note">This folder records no environment; these are the versions of the nndl that '
                "wrote this report.</p>")
    items = [(k, env.get(k)) for k in ENV_KEYS if k in env]
    items.insert(min(2, len(items)), ("device", device))
    if "seed" in config:
        items.append(("seed", config["seed"]))
    items += [(k, v) for k, v in env.items() if k not in dict(items)]
    items.append(("run folder" if task != "tune" else "study folder", str(run_dir.resolve())))
    return items, note


# ----------------------------------------------------------------------------- public API
def render_report(run_dir: str | Path, shown_as: str | Path | None = None) -> str:
    """The HTML text of the report of ``run_dir`` (see :func:`write_report`); ``shown_as``: the folder
    the page names (a run built beside the one it replaces is named by its final folder)."""
    run_dir = check_run_dir(run_dir)
    shown = Path(shown_as) if shown_as is not None else run_dir
    task = detect_task(run_dir)
    config = _read_json(run_dir / "config.json") or {}
    metrics = _read_json(run_dir / "metrics.json") or {}
    env = _read_json(run_dir / "environment.json") or {}
    study = _read_json(run_dir / "study.json") or {}
    config = config if isinstance(config, dict) else {}
    metrics = metrics if isinstance(metrics, dict) else {}
    env = env if isinstance(env, dict) else {}
    study = study if isinstance(study, dict) else {}
    _, trials = _read_csv(run_dir / "trials.csv")
    name = shown.resolve().name
    from nndl import __version__

    sections: list[tuple[str, str, str]] = []  # (anchor, title, html)
    if task == "tune":
        sections.append(("trials", "Study and trials", _trials_section(run_dir, study)))
    if metrics or task != "tune":
        sections.append(("metrics", "Metrics", _metrics_section(task, metrics)))
    fig_html, n_figs = _figures_section(run_dir / "figures", task=task, study=study, trials=trials)
    sections.append(("figures", f"Figures ({n_figs})", fig_html))
    if (run_dir / "history.csv").exists() or task != "tune":
        sections.append(("history", "Training history", _history_section(run_dir / "history.csv")))
    if task == "tune" and not env:  # a study records no environment; its best run, from the same process, does
        best_env = _read_json(run_dir / "best" / "environment.json")
        env = best_env if isinstance(best_env, dict) else {}
        best_metrics = _read_json(run_dir / "best" / "metrics.json")
        device = _run_device(best_metrics if isinstance(best_metrics, dict) else {}, {}, env)
    else:
        device = _run_device(metrics, config, env)
    if config or task != "tune":
        sections.append(("config", "Configuration", _config_section(task, config, device)))
    env_items, env_note = _environment_items(shown, task, env, config, device)
    sections.append(("environment", "Environment", env_note + _kv_table(env_items)))

    warn = ""
    if study.get("ok") is False or (isinstance(study.get("warnings"), list) and study["warnings"]):
        warn = ('<div class="warn"><b>This study has problems.</b> ' +
                "; ".join(esc(w) for w in study.get("warnings") or ["see study.json"]) + "</div>")
    if metrics.get("diverged"):
        reasons = metrics.get("stop_reasons") or [metrics.get("stop_reason", "loss was not finite")]
        warn += ('<div class="warn"><b>Training diverged.</b> ' +
                "; ".join(esc(r) for r in (reasons if isinstance(reasons, list) else [reasons])) + "</div>")
    stamp = metrics_time = ""
    for f in ("metrics.json", "study.json", "config.json"):
        if (run_dir / f).exists():
            metrics_time = _dt.datetime.fromtimestamp((run_dir / f).stat().st_mtime).strftime("%Y-%m-%d %H:%M")
            break
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    task_label = {"classify": "classification", "regress": "regression", "tune": "tuning study"}.get(task, task)
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    blocks = [f'<section id="{a}"><h2>{esc(t)}</h2>\n{h}</section>' for a, t, h in sections]
    if [a for a, _, _ in sections[-2:]] == ["config", "environment"]:  # short tables: side by side
        blocks[-2:] = [f'<div class="two">{blocks[-2]}{blocks[-1]}</div>']
    body = "\n".join(blocks)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(task_label)} · {esc(name)} · nndl report</title>
<style>{CSS}</style></head>
<body><main>
<header><h1><span class="task">{esc(task_label)}</span>{esc(name)}</h1>
<div class="meta">{esc(str(shown.resolve()))}{" · finished " + esc(metrics_time) if metrics_time else ""}</div>
<nav>{nav}</nav></header>
{warn}
{_summary_cards(task, metrics, config, study, trials)}
{body}
<footer>Written by nndl {esc(__version__)} on {esc(stamp)}. Self-contained: figures are embedded; no network access
needed.
Regenerate with <code>nndl report {esc(str(shown))}</code>.</footer>
</main></body></html>
"""


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
    from nndl.figures.common import styled

    return styled(_draw_compare_figure)(runs, names)


def _draw_compare_figure(runs: list[Path], names: list[str]) -> str | None:
    from nndl.figures.common import epoch_axis, plt, readable_log_axis

    curves = [_history_curves(r) for r in runs]
    if not any(curves):
        return None
    has_acc = any("val_acc" in c or "train_acc" in c for c in curves)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(12 if has_acc else 8, 4.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = [(axes[0, 0], ("train_loss", "val_loss"), "loss")] + (
        [(axes[0, 1], ("train_acc", "val_acc"), "accuracy")] if has_acc else [])
    for ax, keys, ylabel in panels:
        values, epochs = [], []
        for i, (c, name) in enumerate(zip(curves, names)):
            for key, style in zip(keys, ("-", "--")):
                if key in c:
                    xs, ys = zip(*c[key])
                    values += ys
                    epochs += xs
                    ax.plot(xs, ys, style, color=colors[i % len(colors)], lw=1.4,
                            marker="o" if len(xs) < 15 else None, ms=3,
                            label=f"{name} · {key.split('_')[0].replace('val', 'validation')}")
        if ylabel == "loss" and values and min(values) > 0:
            ax.set_yscale("log")
            readable_log_axis(ax, "y", values)
        epoch_axis(ax, epochs)
        ax.set(xlabel="epoch", ylabel=ylabel, title=f"{ylabel.capitalize()}: training (solid) and validation (dashed)")
        ax.legend(fontsize=7)
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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
    kinds = {n: detect_task(r) for n, r in zip(names, runs)}
    known = {k for k in kinds.values() if k != "run"}
    if len(known) > 1:
        label = {"regress": "regression", "classify": "classification"}
        raise NndlError("compare: " + ", ".join(f"{n} is a {label.get(k, k)} run" for n, k in kinds.items())
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
    sections: dict[str, list] = {"run": [], "config": [], "metric": [], "environment": []}
    for section, key, vals in rows:
        sections[section].append([key] + list(vals))
    cols = [""] + names
    cfg_html = (_table(cols, sections["run"] + sections["config"]) if sections["config"]
                else '<p class="note">The runs have identical configs.</p>' + _table(cols, sections["run"]))
    uri = _compare_figure(runs, names)
    fig_html = (f'<figure class="full"><img src="{uri}" alt="overlaid curves"><figcaption>Loss (and accuracy) per '
                "epoch: training solid, validation dashed, one colour per run; the folds of a cross-validated run "
                "are averaged per epoch.</figcaption></figure>" if uri
                else '<p class="note">No history.csv in these runs.</p>')
    from nndl import __version__

    note_html = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    if sections["environment"]:
        env_html = _table(cols, sections["environment"])
    else:
        env_html = (f'<p class="note">These runs record no environment; this page was written by nndl '
                    f"{esc(__version__)}.</p>")
    links = "".join(f"<li><code>{esc(r.resolve())}</code>" + (
        f' — <a href="{esc((r / "report.html").resolve().as_uri())}">report</a>'
        if (r / "report.html").exists() else "") + "</li>" for r in runs)
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>nndl comparison · {esc(", ".join(names))}</title><style>{CSS}</style></head>
<body><main>
<header><h1><span class="task">compare</span>{len(runs)} runs</h1><nav><a href="#curves">Curves</a>
<a href="#config">Config differences</a><a href="#metrics">Metrics</a><a href="#environment">Environment</a></nav>
</header>
<ul class="meta">{links}</ul>
{note_html}
<section id="curves"><h2>Training curves</h2>{fig_html}</section>
<div class="two"><section id="config"><h2>Config differences</h2>{cfg_html}</section>
<section id="metrics"><h2>Metrics</h2>{_table(cols, sections["metric"])}</section></div>
<section id="environment"><h2>Environment</h2>{env_html}</section>
<footer>Written by nndl {esc(__version__)} on {esc(_dt.datetime.now().strftime("%Y-%m-%d %H:%M"))}.</footer>
</main></body></html>
"""
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
