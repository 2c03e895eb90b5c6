"""Predictions from a saved run, for any task: the model rebuilt from ``model.pt``, files in, results out.

The model is rebuilt from ``model.pt`` alone (config, state dicts and the dataset's input
shape, classes and normalisation, loaded with ``weights_only=True``), so a run folder can be
copied anywhere and used. What is generic lives here: reading and checking the file, the saved
config, where the output goes. What differs per task (its metadata checks, its model, how a file
becomes its input and how results read) is the task's, reached through its interface
(:meth:`~nndl.tasks.base.Task.check_model_meta`, :meth:`~nndl.tasks.base.Task.rebuild`,
:meth:`~nndl.tasks.base.Task.predict_files`): :mod:`nndl.tasks.classify.predict` and
:mod:`nndl.tasks.regress.predict`.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

from nndl.base.errors import NndlError, function_argument, path_argument, paths_argument
from nndl.tasks import get_task, task_names
from nndl.tasks.predict_base import LoadedRun, state_dicts
# Public import paths of the tasks' predict functions, kept from when they lived here.
from nndl.tasks.classify.predict import (MAX_IMAGE_PIXELS, class_probabilities, preprocess_image,  # noqa: F401
                                         read_batch, read_pixel_csv)
from nndl.tasks.regress.predict import read_inputs, regression_predictions  # noqa: F401


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild the model of a run folder (or a ``model.pt`` path).

    Returns
    -------
    LoadedRun
        The task's own kind of it (:class:`~nndl.tasks.classify.predict.LoadedClassifier`,
        :class:`~nndl.tasks.regress.predict.LoadedRegressor`).

    Raises
    ------
    NndlError
        Missing file, a file that is not an nndl checkpoint, or weights that do not
        match the saved config.
    """
    from nndl.base import config as config_mod
    from nndl.runfolder.files import load_model_file

    payload = load_model_file(run_dir)
    path = Path(run_dir) / "model.pt" if Path(run_dir).is_dir() else Path(run_dir)
    name = payload.get("task")
    states = payload.get("state_dicts")
    if name not in task_names() or not isinstance(states, list) or not states:
        raise NndlError(f"{path}: checkpoint has no task/weights nndl can use (task={name!r})")
    if not isinstance(payload.get("config"), dict):
        raise NndlError(f"{path}: checkpoint has no config")
    for key in ("state_dicts", "fold_state_dicts"):
        state_dicts(path, payload, key)
    task = get_task(name)
    task.check_model_meta(path, payload)
    # Keys this nndl version does not know (a checkpoint from another version) cannot change the
    # architecture it rebuilds, so they are dropped instead of refusing the file.
    known = config_mod.field_names(name)

    def saved_config(values: dict):
        try:
            return config_mod.from_dict(name, {k: v for k, v in values.items() if k in known})
        except NndlError as e:
            raise NndlError(f"{path}: its saved config: {e}") from None

    return task.rebuild(payload, path, saved_config(payload["config"]), saved_config)


def predict(run_dir: str | Path, files: Sequence[str | Path], json: bool = False, out: str | Path | None = None,
            top: int = 3, echo: Callable[[str], None] | None = print) -> list[dict]:
    """Predict with the model of a run folder.

    Parameters
    ----------
    run_dir : str or Path
        A run folder (or its ``model.pt``).
    files : list of str or Path
        Classification: PNG/JPEG images (any size and colour; brought to the model's
        input shape, see :func:`preprocess_image` for MNIST-style models), IDX image files
        (gzipped or raw) and CSV batches (Kaggle form with labels, or H*W pixel
        columns); for a model trained on a CSV table, CSV files with its feature columns
        (one prediction per row). Regression: CSV files of input rows (see :func:`read_inputs`).
    json : bool
        Emit JSON instead of text (classification) or CSV (regression).
    out : str or Path, optional
        Write the output to this file instead of ``echo``. Classification into a ``.csv`` file
        (without ``json``) writes a CSV: ``file, index, [label,] class_1, probability_1, ...``.
    top : int
        How many classes to list per image (at least 1).
    echo : callable or None
        Where the output goes when ``out`` is not given.

    Returns
    -------
    list of dict
        Classification: ``{"file", "index", "top": [{"class", "probability"}, ...]}``
        (plus ``"label"`` when the batch has labels), the ``top`` most probable classes
        (the key is ``top`` whatever ``top`` is), sorted by probability,
        probabilities rounded to 4 decimals. An image with no object (blank or
        uniform) gets an empty list and a ``"warning"`` instead of made-up classes.
        Regression: one dict per input row with the input columns (the values as
        written in the file), ``prediction`` and, when the fold models were saved,
        ``fold_mean`` and ``fold_std`` (float32 outputs as their shortest decimals).

    Raises
    ------
    NndlError
        Not an nndl run / checkpoint, an unreadable, oversized or mismatched input
        file, ``top < 1``, or an ``out`` that cannot be written.
    """
    run_dir, out = path_argument(run_dir, "run_dir") or Path("."), path_argument(out, "out")
    files, echo = paths_argument(files, "files"), function_argument(echo, "echo")
    if not files:
        raise NndlError("give at least one input file")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise NndlError(f"--top {top}: list at least 1 class per image (e.g. --top 3)")
    if out is not None:  # never over an input, nor over a file of the run it reads
        from nndl.runfolder.files import check_output

        run_folder = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
        check_output(out, inputs=[*files, run_dir], folders=[run_folder])
    with warnings.catch_warnings():
        # numpy/Pillow/torch notes about an odd input (an empty text file, a palette PNG, a legacy
        # pickle) are noise here: a bad input ends in one NndlError line, a good one in the predictions.
        warnings.simplefilter("ignore")
        run = load_run(run_dir)
        table = out is not None and out.suffix.lower() == ".csv"
        results, text = get_task(run.task).predict_files(run, files, top=top, json=json, table=table)
    if out is not None:
        from nndl.base.fileio import atomic_write_text
        from nndl.runfolder.files import record

        try:
            atomic_write_text(out, text + "\n")  # a failed write leaves no half file (and an older one intact)
            record(out)
        except OSError as e:
            fix = {28: "free some disk space", 27: "the file-size limit (ulimit -f) was reached"}.get(
                e.errno, "check the folder exists and is writable")
            raise NndlError(f"{out}: cannot write the predictions ({e.strerror}); {fix}") from None
        if echo is not None:
            echo(f"wrote {len(results)} predictions to {out}")
    elif echo is not None:
        echo(text)
    return results
