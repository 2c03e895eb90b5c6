"""What a finished search leaves in its folder: ``trials.csv``, the printed trial table, warnings,
``best_preset.toml``, the retrained best run ``best/``, ``figures/``, ``study.json`` and the report."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from nndl.base import config as config_mod
from nndl.runfolder.files import write_json
from nndl.search import optuna_shim
from nndl.search.options import NOT_IN_PRESET, Plan, TuneOptions
from nndl.search.storage import counted


def reason(t, retried_as: dict[int, int]) -> str:
    """Why a trial did not complete (empty for a complete one), and the number of its retry."""
    text = t.user_attrs.get("fail_reason") or ""
    if t.state == TrialState.FAIL and not text:
        text = "worker lost mid-trial (killed, or no heartbeat)"
    if t.number in retried_as:
        text += f"; retried as trial {retried_as[t.number]}"
    return text


def write_trials(trials, path: Path, names: list[str], retried_as) -> list[dict]:
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "duration_s": (t.datetime_complete - t.datetime_start).total_seconds()
             if t.datetime_complete and t.datetime_start else None,
             **{f"params_{n}": t.params.get(n) for n in names}, "fail_reason": reason(t, retried_as)}
            for t in trials]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["number"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def format_table(rows: list[dict], metric: str) -> str:
    lines = [f"{'#':>4}  {'state':<8} {metric:>12} {'sec':>7}  params / reason"]
    for r in rows:
        value = f"{r['value']:.6g}" if r["value"] is not None else "-"
        sec = f"{r['duration_s']:.1f}" if r["duration_s"] is not None else "-"
        params = " ".join(f"{k[7:]}={v:.4g}" if isinstance(v, float) else f"{k[7:]}={v}"
                          for k, v in r.items() if k.startswith("params_"))
        reason = f"  <- {r['fail_reason'][:110]}" if r["fail_reason"] else ""
        lines.append(f"{r['number']:>4}  {r['state']:<8} {value:>12} {sec:>7}  {params}{reason}")
    return "\n".join(lines)


def to_toml(values: dict[str, Any], header: str = "") -> str:
    """A flat TOML document of scalars and lists (all a preset holds)."""
    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return json.dumps(str(v))  # a JSON string is a valid TOML basic string
    lines = [f"# {line}" for line in header.splitlines()]
    return "\n".join(lines + [f"{k} = {fmt(v)}" for k, v in values.items()]) + "\n"


def finish(plan: Plan, st, opts: TuneOptions, seconds: float) -> dict[str, Any]:
    """Write every output of a finished search; the summary (as in ``study.json``) plus ``study_dir``."""
    echo, folder = opts.echo, plan.folder
    trials = st.get_trials()
    retried_as = {optuna_shim.retry_history(t)[-1]: t.number for t in trials if optuna_shim.retry_history(t)}
    names = list(plan.space.params) + list(plan.space.grid)
    rows = write_trials(trials, folder / "trials.csv", names, retried_as)
    done = counted(trials)
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    best = st.best_trial if complete else None
    echo("\n" + format_table(rows, plan.metric))
    summary: dict[str, Any] = {
        "study": st.study_name, "task": plan.task, "direction": plan.direction, "metric": plan.metric,
        "storage": plan.where, "sampler": plan.sampler, "pruner": opts.pruner, "folds": plan.folds,
        "batch_trials": opts.batch_trials, "trials_requested": plan.n_total, "trials": len(done),
        "counts": dict(Counter(t.state.name for t in done)), "lost_and_retried": len(trials) - len(done),
        "wall_seconds": seconds,
        "best": {"number": best.number, "value": best.value, "params": best.params} if best else None}
    problems = _problems(done, complete)
    summary["ok"], summary["warnings"] = not problems, problems
    if problems:
        bar = "!" * 78
        echo("\n".join(["", bar, *(f"!! {p}" for p in problems), "!! Fix the search space (see fail_reason in "
                        "trials.csv) before trusting any result.", bar]))
    if best is not None:
        summary.update(_best(plan, st, best, opts))
    # nndl's own style, the real metric name (not Optuna's stock plots and their global ggplot style)
    summary["figures_skipped"] = _figures(plan, st, len(complete), len(names)) if opts.figures else {}
    for plot, note in summary["figures_skipped"].items():
        echo(f"figure {plot}: {note}")
    write_json(folder / "study.json", summary)
    from nndl.runfolder.report import write_report

    write_report(folder)
    echo(f"browse it: optuna-dashboard {plan.where}")
    echo(f"study folder: {folder}")
    return {**summary, "study_dir": str(folder)}


def _problems(done: list, complete: list) -> list[str]:
    """Loud warnings: most trials failed, or none completed."""
    failed = [t for t in done if t.state == TrialState.FAIL]
    problems = []
    if len(failed) * 2 > len(done):
        common = Counter(reason(t, {}) for t in failed).most_common(1)[0][0]
        problems.append(f"{len(failed)} of {len(done)} trials FAILED; most common reason: {common}")
    if not complete:
        problems.append("no trial completed: there is NO best configuration")
    return problems


def _best(plan: Plan, st, best, opts: TuneOptions) -> dict[str, Any]:
    """Write ``best_preset.toml`` (what differs from the defaults) and retrain it unless told not to."""
    task, folder, metric = plan.task, plan.folder, plan.metric
    cfg = plan.objective.config(best.params)
    defaults = config_mod.to_dict(config_mod.TASK_CONFIGS[task]())
    values = {k: v for k, v in config_mod.to_dict(cfg).items() if v != defaults[k] and k not in NOT_IN_PRESET}
    header = (f"best trial {best.number} of study '{st.study_name}': {metric} = {best.value:.6g} "
              f"({plan.folds}-fold mean)\nrun it: nndl {task} --preset {folder / 'best_preset.toml'}")
    (folder / "best_preset.toml").write_text(to_toml({"task": task, **values}, header))
    out = {"best_preset": str(folder / "best_preset.toml")}
    opts.echo(f"\nbest: trial {best.number}, {metric} = {best.value:.6g}, params {best.params}")
    if opts.retrain:
        try:
            out["best_run"] = _retrain(task, folder, plan.objective.data, plan.test_metric, opts.echo)
        except Exception as e:  # the search results stay valid; say what went wrong
            out["best_run"] = {"error": f"{type(e).__name__}: {e}"}
            opts.echo(f"warning: retraining the best config failed: {out['best_run']['error']}")
    return out


def _figures(plan: Plan, st, n_complete: int, n_params: int) -> dict[str, str]:
    from nndl.figures.study import write_study_figures

    return write_study_figures(st, plan.folder / "figures", n_complete, n_params, metric=plan.metric,
                               folds=plan.folds)


def _retrain(task, folder, data, test_metric, echo) -> dict[str, Any]:
    """Train the best config once on all training data and evaluate it once on the test set."""
    from nndl.base import config as config_mod
    from nndl.training.callbacks import CallbackList
    from nndl.tasks.base import run_task
    from nndl.tasks import get_task

    preset, out = str(folder / "best_preset.toml"), str(folder / "best")
    cfg = config_mod.resolve(task, preset)
    # the task's own run skeleton: a run folder like any other, quietly (the run folder holds the details)
    m = run_task(get_task(task), cfg, data=data, out=out, overwrite=True,
                 progress=False, echo=lambda s: None, callbacks=CallbackList([]))
    echo(f"best config retrained on all training data: {test_metric} = {m[test_metric]:.6g} (run folder {out})")
    return {"dir": out, test_metric: m[test_metric], "diverged": m.get("diverged", False)}
