""":func:`tune`: resolve the options into a plan, open the study, run the workers, write the outputs."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from nndl.base import config as config_mod
from nndl.base.errors import NndlError, path_argument
from nndl.base.masking import remember_secrets
from nndl.search import optuna_shim
from nndl.search.folder import study_folder, study_settings
from nndl.search.objective import Objective
from nndl.search.options import Plan, TuneOptions
from nndl.search.outputs import finish, reason
from nndl.search.space import SPACES, Space, check_nothing_overridden, check_space_values, load_space
from nndl.search.storage import check_storage, close_storage, is_url, mask_url, open_storage, repair_journal, trial_lock
from nndl.tasks import get_task
from nndl.search.workers import _sigterm_interrupts, run_with_workers, work


def _quiet(fn):
    """Inside ``fn`` only: no ExperimentalWarning (heartbeats, retries, plots), no Optuna log lines
    (we print one line per trial ourselves)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return fn(*args, **kwargs)
        finally:
            optuna.logging.set_verbosity(verbosity)
    return wrapper


@_quiet
def tune(task: str, space: str | Path | None = None, options: TuneOptions | None = None, **kwargs: Any):
    """Search hyperparameters with Optuna, scoring each trial by K-fold cross-validation.

    Parameters
    ----------
    task : {"regress", "classify"}
    space : path, optional
        Search-space TOML: optional ``preset``, ``[fixed]`` overrides, ``[params.NAME]``
        tables (``type`` = categorical/float/log-float/int/log-int) and/or a ``[grid]`` table.
        Regress has a documented default space; classify needs one.
    options : TuneOptions, optional
        The search's options; each is also a keyword of ``tune`` (``trials=30, folds=5, ...``),
        which takes precedence. See :class:`nndl.search.TuneOptions` for all of them.

    Returns
    -------
    nndl.runfolder.objects.Study
        The study (``.metrics``, ``.history`` of trials, ``.best_run``, ``.figure(name)``); as a
        mapping it is the summary written to ``study.json`` (``best``, ``counts``, ``ok``,
        ``best_run``, ...) plus ``study_dir``. With ``worker_only`` a plain dict.
    """
    opts = _options(options, kwargs)
    remember_secrets(opts.storage)  # from here on its password is masked in every line and file, in any form
    opts.check(task)
    path_argument(space, "space")
    optuna_shim.require()  # an Optuna that changed what the search relies on: say so before any trial
    plan, store, seed = _plan(task, space, opts)
    try:
        return _search(plan, store, seed, opts)
    finally:
        close_storage(store)


def _search(plan: Plan, store, seed: int, opts: TuneOptions):
    """Open the study, run this process's and the workers' trials, and write the outputs."""
    from nndl.training.threads import threads_per_worker

    index = opts.worker_index if opts.worker_index is not None else (os.getpid() % 1000 + 1 if opts.worker_only else 0)
    with threads_per_worker(opts.workers):
        st = _open_study(plan, store, opts, seed + index)
        slot = plan.objective.slot = trial_lock(opts.storage, plan.journal, plan.name)
        try:
            batching = f", {opts.batch_trials} trials per stacked batch" if opts.batch_trials > 1 else ""
            opts.echo(f"study '{plan.name}' ({plan.task}, {plan.sampler} sampler, {opts.pruner} pruner, {plan.folds} "
                      f"folds, {plan.n_total} trials{batching}) in {plan.where}")
            on_trial = functools.partial(_print_trial, plan.metric, opts.echo)
            if opts.worker_only:
                with _sigterm_interrupts():
                    work(st, plan.objective, plan.n_total, slot, plan.journal, wait=False, on_trial=on_trial,
                         batch=opts.batch_trials)
                return {"worker": index, "study": plan.name}
            t0 = time.perf_counter()
            run_with_workers(plan, st, slot, opts, on_trial)
            seconds = time.perf_counter() - t0
        finally:
            slot.close()
    from nndl.runfolder.objects import Study  # a read-only mapping over the summary, as the dict it replaces

    return Study.from_summary(finish(plan, st, opts, seconds))


def _options(options: TuneOptions | None, kwargs: dict[str, Any]) -> TuneOptions:
    """``options`` (or the defaults) with the keywords given to :func:`tune` on top."""
    names = {f.name for f in dataclasses.fields(TuneOptions)}
    unknown = sorted(set(kwargs) - names)
    if unknown:  # a misspelt keyword is a TypeError, as for any Python function
        raise TypeError(f"tune() got an unexpected keyword argument '{unknown[0]}'")
    if options is not None and not isinstance(options, TuneOptions):
        raise NndlError(f"options = {options!r:.60}: expected nndl.search.TuneOptions (or give the options as "
                        "keywords: tune(task, trials=20, ...))")
    opts = dataclasses.replace(options or TuneOptions(), **kwargs)
    if isinstance(opts.storage, os.PathLike):  # a journal given as a Path
        opts.storage = os.fspath(opts.storage)
    return opts


def _signature() -> inspect.Signature:
    """``tune(task, space=None, options=None, *, sampler=None, trials=None, ...)`` for help() and IDEs."""
    P = inspect.Parameter
    params = [P("task", P.POSITIONAL_OR_KEYWORD, annotation="str"),
              P("space", P.POSITIONAL_OR_KEYWORD, default=None, annotation="str | Path | None"),
              P("options", P.POSITIONAL_OR_KEYWORD, default=None, annotation="TuneOptions | None")]
    params += [P(f.name, P.KEYWORD_ONLY, default=f.default, annotation=f.type) for f in dataclasses.fields(TuneOptions)]
    return inspect.Signature(params, return_annotation="Study")


tune.__signature__ = _signature()


def _resolve_space(task: str, space, opts: TuneOptions) -> tuple[Space, str, int]:
    """The space, the sampler and the study's total number of trials."""
    if space is None:  # a task may ship a documented default space with the package
        if get_task(task).default_space is None:
            raise NndlError(f"nndl tune {task} needs --space SPACE.toml (e.g. examples/spaces/fashion_grid.toml)")
        space = SPACES / get_task(task).default_space
    sp = load_space(space, task)
    sampler = opts.sampler or ("grid" if sp.grid and not sp.params else "tpe")
    if sampler == "grid" and (sp.params or not sp.grid):
        raise NndlError(f"{sp.path}: --sampler grid searches only a [grid] table; move [params.*] into [grid] "
                        "or use --sampler random/tpe")
    n_total = opts.trials or (sp.grid_size if sampler == "grid" else 20)
    if sampler == "grid" and n_total > sp.grid_size:
        opts.echo(f"note: the grid has {sp.grid_size} points; running {sp.grid_size} trials, not {n_total}")
        n_total = sp.grid_size
    return sp, sampler, n_total


def _plan(task: str, space, opts: TuneOptions) -> tuple[Plan, Any, int]:
    """(plan, storage, the config's seed): every input checked before the study folder is written."""
    sp, sampler, n_total = _resolve_space(task, space, opts)
    base_preset = opts.preset or sp.preset or get_task(task).default_preset
    objective = Objective(task, sp, base_preset, opts.overrides, opts.seed, opts.folds, opts.timeout_per_trial,
                          opts.pruner)
    base_cfg = objective.config()  # a bad preset/[fixed]/--set is an input error, not N failed trials
    check_space_values(sp, objective.config)  # so is a range or choice the config rejects
    check_nothing_overridden(sp, config_mod.parse_overrides(opts.overrides))  # nor a value it replaces
    check_storage(opts.storage, opts.out, repair=opts.repair_journal)  # before anything is written
    k = opts.folds or get_task(task).search_folds(base_cfg)
    settings = study_settings(sp, base_preset, opts.overrides, opts.seed, k)
    folder, name, store, journal = _folder_and_storage(task, sp, opts, settings)
    # Load the task's modules now, not inside the first trial: a Ctrl-C that lands while a module
    # defines its dataclasses (exec of generated code) is still handled, but CPython 3.11 then
    # records it as unhandled and ends the process by SIGINT instead of with exit code 130.
    get_task(task)
    plan = Plan(task, sp, sampler, n_total, k, objective, name, folder, opts.storage, journal)
    return plan, store, base_cfg.seed


def _folder_and_storage(task: str, sp: Space, opts: TuneOptions, settings: dict[str, Any]):
    """(study folder, study name, opened storage, journal path or None). A database is opened before
    the folder is made, so a database it cannot use leaves no folder; a journal is repaired first
    when ``--repair-journal`` asks for it."""
    storage = opts.storage
    store, journal = open_storage(storage, None, opts.heartbeat) if is_url(storage) else (None, None)
    try:
        folder, name = study_folder(opts.out, task, opts.study, sp, storage, need=not is_url(storage),
                                    create=not opts.worker_only, settings=settings,
                                    allow_changes=opts.allow_changes)
    except BaseException:
        close_storage(store)
        raise
    if store is None:
        journal = Path(storage) if storage else folder / "journal.log"
        note = repair_journal(journal) if opts.repair_journal and journal.is_file() else None
        if note:
            opts.echo(note)
        store = open_storage(str(journal), None, opts.heartbeat)[0]
    return folder, name, store, journal


def _open_study(plan: Plan, store, opts: TuneOptions, seed: int) -> optuna.Study:
    """The study (created if new) with its sampler and pruner; ``seed`` is the config's seed plus the
    worker index, and a rerun moves it on so that it does not replay the same samples."""
    try:
        st = optuna.create_study(study_name=plan.name, storage=store, direction=plan.direction, load_if_exists=True)
    except Exception as e:
        raise NndlError(f"storage {mask_url(opts.storage) or plan.journal}: "
                        f"{mask_url(str(e).splitlines()[0])}") from None
    if st.direction.name.lower() != plan.direction:
        raise NndlError(f"study '{plan.name}' maximises/minimises differently: it is not a {plan.task} study")
    # Optuna's samplers take numpy RandomState seeds (32 bits); the config's seed may be up to 2**63 - 1.
    seed = (seed + 1000 * len(st.trials)) % 2**32
    samplers = {"grid": lambda: optuna.samplers.GridSampler(plan.space.grid, seed=seed),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                "tpe": lambda: optuna.samplers.TPESampler(seed=seed)}
    pruners = {"none": optuna.pruners.NopPruner, "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3),
               "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=plan.folds),
               "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1)}
    return optuna.load_study(study_name=plan.name, storage=store, sampler=samplers[plan.sampler](),
                             pruner=pruners[opts.pruner]())


def _print_trial(metric: str, echo, _study, t) -> None:
    value = f"{metric} = {t.value:.6g}" if t.value is not None else reason(t, {})
    echo(f"trial {t.number:>3} {t.state.name:<8} {value}  {t.params}")

