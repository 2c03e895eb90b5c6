"""Runs and studies as Python objects, for scripts and notebooks.

:func:`nndl.regress` and :func:`nndl.classify` return a :class:`Run`, :func:`nndl.tune`
returns a :class:`Study`, and :func:`load_run` opens any run or study folder::

    run = nndl.load_run("runs/regress-20260101-120000")
    run.metrics["test_mse"], run.config["lr"], run.history[:3]
    run.figure("losses")          # a matplotlib Figure
    run                           # in Jupyter: summary, key numbers and figures inline

Both objects are also read-only mappings, so code written for the dicts these functions
used to return keeps working: ``run["test_mse"]``, ``run["run_dir"]``, ``study["best"]``,
``study["study_dir"]``, ``dict(run)``.

``.history`` is a list of dicts (one per epoch; per fold and epoch for regression), whatever
is installed: ``pandas.DataFrame(run.history)`` turns it into a frame.
"""
from __future__ import annotations

import base64
import csv
import html
import math
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

from nndl.base.errors import NndlError, path_argument
from nndl.base.progress import in_notebook

# The figures a study shows inline (a run's come from its task's view; the others are one .figure(name) away).
STUDY_FIGURES_INLINE = ("history", "importances")


def is_verbose(verbose: bool | None) -> bool:
    """``verbose`` as given, else True in a terminal and False in a notebook (the Run shows it all)."""
    return (not in_notebook()) if verbose is None else bool(verbose)


def load_run(path: str | Path) -> "Run | Study":
    """Open a run folder as a :class:`Run`, or a tuning study folder as a :class:`Study`.

    Raises
    ------
    NndlError
        When ``path`` is neither (no metrics.json / config.json / study.json there).
    """
    path = path_argument(path, "path")
    if path is None:
        raise NndlError("load_run(None): give the folder of a regress/classify/tune run")
    if path.is_file():
        path = path.parent
    if (path / "study.json").exists() or (path / "tune.json").exists():
        return Study(path)
    if (path / "metrics.json").exists() or (path / "config.json").exists():
        return Run(path)
    raise NndlError(f"{path}: not an nndl run or study folder (no metrics.json, config.json or study.json); "
                    "give the folder a regress/classify/tune run wrote")


# --------------------------------------------------------------------------- shared machinery
def _read_json(path: Path) -> dict:
    """A run file's JSON object ({} when the file is missing); a damaged one is one NndlError line."""
    from nndl.runfolder.files import read_json

    data = read_json(path) if path.exists() else {}
    if not isinstance(data, dict):
        raise NndlError(f"{path}: holds a JSON {type(data).__name__}, not the object of names and values nndl "
                        "writes; restore it, or rerun the command that wrote it")
    return data


def _number(value: str) -> Any:
    """A CSV cell as int/float where it is one, else the text (empty -> None)."""
    if value in ("", None):
        return None
    try:
        f = float(value)
    except ValueError:
        return value
    return int(f) if f.is_integer() and "." not in value and "e" not in value.lower() else f


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.6g}"
    if value is None or value == "":
        return "—"
    return str(value)


def _png_figure(path: Path):
    """The PNG at ``path`` drawn into a matplotlib Figure of the same pixel size (axes off)."""
    import matplotlib.image as mpimg

    from nndl.figures.inline import inline_figure

    image = mpimg.imread(path)
    dpi = 100
    fig = inline_figure(figsize=(image.shape[1] / dpi, image.shape[0] / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image)
    ax.set_axis_off()
    return fig


def _img_tag(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure style="display:inline-block;margin:4px;vertical-align:top">'
            f'<img src="data:image/png;base64,{data}" style="max-width:480px" alt="{html.escape(title)}"/>'
            f'<figcaption style="text-align:center;font-size:90%">{html.escape(title)}</figcaption></figure>')


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:right'>"
                    f"{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


class _Folder(Mapping):
    """What runs and studies share: a folder, figures, a mapping view and an HTML display."""

    path: Path
    kind: str
    _mapping_extra: str

    @property
    def figures(self) -> dict[str, Path]:
        """``name -> PNG path`` of every figure in ``figures/``."""
        return {p.stem: p for p in sorted((self.path / "figures").glob("*.png"))}

    def _redraw(self, name: str):  # overridden: figures drawn from data
        return None

    def _no_figures(self) -> str:  # overridden: why a folder has none
        return "no figures (run without --no-figures)"

    def figure(self, name: str):
        """The figure ``name`` (see :attr:`figures`) as a ``matplotlib.figure.Figure``.

        History figures (``losses`` of a run, ``history`` of a study) are drawn again from
        the saved numbers, so axes can be changed; the others are the saved PNG shown in a
        Figure (``imshow``), because the models and data that drew them are not in the folder.
        """
        fig = self._redraw(name)
        if fig is not None:
            return fig
        figures = self.figures
        if name not in figures:
            raise NndlError(f"{self.path}: no figure '{name}'; this {self.kind} has "
                            f"{', '.join(figures) or self._no_figures()}")
        return _png_figure(figures[name])

    # Mapping protocol: the metrics (or study summary) plus the folder key, as the old dicts had.
    @abstractmethod
    def _data(self) -> dict:
        """The mapping's values: a run's metrics, or a study's summary."""

    def __getitem__(self, key: str) -> Any:
        if key == self._mapping_extra:
            return str(self.path)
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._data()
        yield self._mapping_extra

    def __len__(self) -> int:
        return len(self._data()) + 1

    def _figures_html(self, names: tuple[str, ...]) -> str:
        figures = self.figures
        return "".join(_img_tag(figures[n], n.replace("_", " ")) for n in names if n in figures)


def _scalar_keys(metrics: dict) -> list[str]:
    return [k for k, v in metrics.items() if not isinstance(v, (dict, list))]


# --------------------------------------------------------------------------- Run
class Run(_Folder):
    """A regress or classify run folder.

    Attributes
    ----------
    path : Path
    task : str
        The task that made the run (its marker records it), or ``"run"`` for an old folder whose
        config does not tell.
    metrics : dict
        ``metrics.json``.
    config : dict
        ``config.json``: the resolved config.
    history : list of dict
        ``history.csv``: one row per epoch (regression: per fold and epoch, ``fold`` is
        1..K or "refit").
    environment : dict
        ``environment.json``: versions, device, commit.
    figures : dict
        ``name -> PNG path``.
    """

    kind = "run"
    _mapping_extra = "run_dir"

    def __init__(self, path: str | Path, metrics: dict | None = None):
        self.path = Path(path)
        self._metrics = metrics
        self._config = self._history = self._view = None

    @property
    def metrics(self) -> dict:
        if self._metrics is None:
            self._metrics = _read_json(self.path / "metrics.json")
        return self._metrics

    @property
    def config(self) -> dict:
        if self._config is None:
            self._config = _read_json(self.path / "config.json")
        return self._config

    @property
    def environment(self) -> dict:
        return _read_json(self.path / "environment.json")

    @property
    def history(self) -> list[dict]:
        if self._history is None:
            from nndl.runfolder.files import read_history_csv

            file = self.path / "history.csv"
            self._history = read_history_csv(file) if file.exists() else []
        return self._history

    @property
    def view(self) -> dict:
        """How the run's task wants it shown (``task``, ``key_metrics``, ``main_figures``), as the run
        recorded it in its marker; a folder from before nndl recorded it gets the task from its config keys."""
        if self._view is None:
            from nndl.runfolder.files import run_view

            view = run_view(self.path, self.config)
            self._view = {"task": view["task"],
                          "key_metrics": list(view.get("key_metrics") or _scalar_keys(self.metrics)[:6]),
                          "main_figures": list(view.get("main_figures") or ["losses"])}
        return self._view

    @property
    def task(self) -> str:
        return self.view["task"]

    def _data(self) -> dict:
        return self.metrics

    def _redraw(self, name: str):
        if name != "losses" or not self.history:
            return None
        from nndl.figures.curves import styled

        return styled(self._draw_losses)()

    def _draw_losses(self):
        """``losses.png`` drawn again from ``history.csv``, by the functions that drew it, in a notebook figure."""
        from nndl.figures.curves import draw_accuracy_curves, draw_loss_curves  # no pyplot: a notebook may lack it
        from nndl.figures.inline import inline_figure

        fig = inline_figure(figsize=(7, 4), dpi=100)
        if any("train_acc" in row for row in self.history):  # a classifier's history: loss and accuracy
            draw_accuracy_curves(fig, self.history, "Training curves")
        else:
            folds: dict[str, list[dict]] = {}
            for row in self.history:
                folds.setdefault(str(row.get("fold", "")), []).append(row)
            labels = [f"fold {f}" if f and f != "refit" else (f or "model") for f in folds]
            draw_loss_curves(fig, list(folds.values()), "Training and validation MSE per fold", labels)
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        keys = [k for k in self.view["key_metrics"][:3] if k in self.metrics]
        numbers = ", ".join(f"{k}={_fmt(self.metrics[k])}" for k in keys)
        return f"Run({str(self.path)!r}, {self.task}{', ' + numbers if numbers else ''})"

    def _repr_html_(self) -> str:
        m, c = self.metrics, self.config
        model = m.get("model", c.get("model"))
        what = f"model {model}" if model else f"MLP {c.get('hidden')} {c.get('activation', '')}"
        summary = [f"<b>nndl {self.task} run</b> <code>{html.escape(str(self.path))}</code>",
                   html.escape(f"{what}; {m.get('epochs', c.get('epochs', '?'))} epochs; "
                               f"seed {c.get('seed', '?')}; device {m.get('device', c.get('device', '?'))}")]
        if m.get("diverged"):
            summary.append(f"<b style='color:#b00'>diverged</b>: {html.escape(str(m.get('stop_reason', '')))}")
        key_metrics = self.view["key_metrics"]
        key = [(k, m[k]) for k in key_metrics if k in m]
        rest = [(k, v) for k, v in m.items() if k not in key_metrics and not isinstance(v, (dict, list))]
        return (f"<div class='nndl-run'><p>{'<br/>'.join(summary)}</p>{_table(key)}"
                f"<div>{self._figures_html(self.view['main_figures'])}</div>"
                f"<details><summary>all metrics</summary>{_table(rest)}</details>"
                f"<p style='font-size:90%'>figures: {html.escape(', '.join(self.figures) or 'none')} "
                f"(<code>run.figure(name)</code>); full report: <code>{html.escape(str(self.path / 'report.html'))}"
                f"</code></p></div>")


# --------------------------------------------------------------------------- Study
class Study(_Folder):
    """A tuning study folder (``nndl tune``).

    Attributes
    ----------
    path : Path
    metrics : dict
        ``study.json``: the summary (``best``, ``counts``, ``ok``, ``best_run``, ``warnings`` ...).
    config : dict
        The best trial's resolved config (``best_preset.toml`` over the defaults), or {} when
        no trial completed.
    history : list of dict
        ``trials.csv``: one row per trial (``number``, ``state``, ``value``, ``params_*``, ...).
    best_run : Run or None
        The best config retrained on all training data (``best/``).
    """

    kind = "study"
    _mapping_extra = "study_dir"

    def __init__(self, path: str | Path, summary: dict | None = None):
        self.path = Path(path)
        self._summary = summary

    @classmethod
    def from_summary(cls, summary: dict) -> "Study":
        """Wrap what the search returns (its ``study.json`` summary plus ``study_dir``)."""
        rest = {k: v for k, v in summary.items() if k != "study_dir"}
        return cls(summary["study_dir"], rest)

    @property
    def metrics(self) -> dict:
        if self._summary is None:
            self._summary = _read_json(self.path / "study.json")
        return self._summary

    @property
    def config(self) -> dict:
        file = self.path / "best_preset.toml"
        if not file.exists():
            return {}
        from nndl.base import config as config_mod

        task = self.metrics.get("task")
        if task not in config_mod.TASK_CONFIGS:  # a study.json that does not name a known task
            return {}
        # The preset file holds only what differs from the defaults; resolve it as `--preset FILE` would.
        return config_mod.to_dict(config_mod.resolve(task, str(file)))

    @property
    def history(self) -> list[dict]:
        file = self.path / "trials.csv"
        if not file.exists():
            return []
        with open(file, newline="") as fh:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]

    trials = history

    def _no_figures(self) -> str:
        if not any(str(t.get("state", "")).upper() == "COMPLETE" for t in self.history):
            return "no figures, because no trial completed (see fail_reason in trials.csv)"
        return super()._no_figures()

    @property
    def best_run(self) -> Run | None:
        return Run(self.path / "best") if (self.path / "best" / "metrics.json").exists() else None

    def _data(self) -> dict:
        return self.metrics

    def _redraw(self, name: str):
        rows = [r for r in self.history if isinstance(r.get("value"), (int, float))]
        if name != "history" or not rows:
            return None
        from nndl.figures.inline import inline_figure

        maximise = self.metrics.get("direction") == "maximize"
        fig = inline_figure(figsize=(7, 4), dpi=100)
        ax = fig.subplots()
        numbers, values = [r["number"] for r in rows], [r["value"] for r in rows]
        ax.plot(numbers, values, "o", ms=4, label="trial")
        best = [max(values[:i + 1]) if maximise else min(values[:i + 1]) for i in range(len(values))]
        ax.step(numbers, best, where="post", color="C3", label="best so far")
        ax.set(xlabel="trial", ylabel=str(self.metrics.get("metric", "value")), title="Search history")
        ax.legend()
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        best = self.metrics.get("best") or {}
        value = f", best {self.metrics.get('metric', 'value')}={_fmt(best.get('value'))}" if best else ""
        return f"Study({str(self.path)!r}, {self.metrics.get('trials', '?')} trials{value})"

    def _repr_html_(self) -> str:
        s = self.metrics
        best = s.get("best") or {}
        head = (f"<b>nndl tune study</b> '{html.escape(str(s.get('study', '')))}' "
                f"<code>{html.escape(str(self.path))}</code><br/>"
                + html.escape(f"{s.get('task', '?')}, {s.get('sampler', '?')} sampler, {s.get('folds', '?')} folds, "
                              f"{s.get('trials', '?')} trials {s.get('counts', {})}"))
        rows = [("best trial", best.get("number")), (f"best {s.get('metric', 'value')}", best.get("value"))]
        rows += [(f"best {k}", v) for k, v in (best.get("params") or {}).items()]
        best_run = s.get("best_run") or {}
        rows += [(f"retrained {k}", v) for k, v in best_run.items() if k not in ("dir", "diverged")]
        warn = "".join(f"<p style='color:#b00'>{html.escape(w)}</p>" for w in s.get("warnings") or [])
        return (f"<div class='nndl-study'><p>{head}</p>{warn}{_table(rows)}"
                f"<div>{self._figures_html(STUDY_FIGURES_INLINE)}</div>"
                f"<p style='font-size:90%'>figures: {html.escape(', '.join(self.figures) or 'none')}; trials: "
                f"<code>study.history</code>; best run: <code>study.best_run</code></p></div>")
