"""The ``nndl`` command: thin subcommands over the Python API.

Input problems (``NndlError``) print one line and exit with code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from nndl.base.errors import NndlError, TrainingInterrupted
from nndl.base.masking import mask_secrets


def _add_run_args(p: argparse.ArgumentParser, default_preset: str | None, default_help: str = "") -> None:
    p.add_argument("--preset", default=default_preset,
                   help=f"preset name or .toml/.json preset file (default: {default_help or default_preset})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set lr=0.01 --set hidden=64,64 (repeatable)")
    p.add_argument("--out", help="run folder (default: a new timestamped folder under runs/)")
    p.add_argument("--overwrite", action="store_true", help="allow --out to be an existing non-empty folder")
    p.add_argument("--seed", type=int, help="random seed (overrides the config's seed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figures", action="store_true", help="skip writing figures")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log scalars, weight histograms and figures to RUN/tensorboard (needs tensorboard)")


def _settings(args, **flags) -> dict:
    """The ``--set`` pairs with the values of the dedicated flags given (``--data``, ``--y-col``, ...)
    added as values, not as ``key=value`` text to be parsed back."""
    from nndl.base.config import parse_overrides

    settings = parse_overrides(args.overrides)
    settings.update({key: value for key, value in flags.items() if value not in (None, "")})
    return settings


def cmd_regress(args) -> int:
    from nndl.tasks.regress.task import regress

    overrides = _settings(args, x_cols=args.x_cols, y_col=args.y_col, reference="none" if args.no_reference else None)
    regress(train=args.train, test=args.test, preset=args.preset, overrides=overrides, seed=args.seed, out=args.out,
            overwrite=args.overwrite, progress=not args.no_progress, figures=not args.no_figures,
            tensorboard=args.tensorboard)
    return 0


def cmd_classify(args) -> int:
    from nndl.tasks.classify.task import classify

    overrides = _settings(args, model=args.model, data=args.data, label_col=args.label_col, test_data=args.test,
                          verify=False if args.no_verify else None)
    classify(preset=args.preset, overrides=overrides, seed=args.seed, out=args.out, overwrite=args.overwrite,
             resume=args.resume, progress=not args.no_progress, figures=not args.no_figures,
             tensorboard=args.tensorboard)
    return 0


def cmd_data(args) -> int:
    from nndl.data.fashion import download, find_source

    if args.action == "download":
        path = download(dest=args.dest, mirror=args.mirror, progress=True)
        print(f"Fashion-MNIST is in {path}")
    else:
        print(find_source(args.data))
    return 0


def cmd_tune(args) -> int:
    import os

    from nndl.search import tune

    from_env = not args.storage and os.environ.get("NNDL_TUNE_STORAGE")
    try:
        summary = tune(args.task, args.space, sampler=args.sampler, trials=args.trials, folds=args.folds,
                       pruner=args.pruner, study=args.study, storage=args.storage or from_env or None,
                       repair_journal=args.repair_journal, workers=args.workers, out=args.out, preset=args.preset,
                       overrides=args.overrides, seed=args.seed, timeout_per_trial=args.timeout_per_trial,
                       heartbeat=args.heartbeat, worker_only=args.worker_only, worker_index=args.worker_index,
                       batch_trials=args.batch_trials, allow_changes=args.allow_changes)
    except NndlError as e:  # say where a storage nobody typed came from
        if from_env and str(e).startswith("--storage"):
            raise NndlError(f"--storage (from $NNDL_TUNE_STORAGE){str(e)[len('--storage'):]}") from None
        raise
    return 0 if summary.get("ok", True) else 3  # 3: most trials failed, or none completed


def cmd_presets(args) -> int:
    from nndl.base.config import PRESETS, describe_presets
    from nndl.base.model_kinds import describe_models

    for task in [args.task] if args.task else list(PRESETS):
        print(describe_presets(task))
        if task == "classify":
            print(describe_models())
    return 0


def cmd_config(args) -> int:
    from nndl.base.config import describe_config

    print(describe_config(args.task, args.preset))
    return 0


def cmd_report(args) -> int:
    from nndl.runfolder.report import write_report

    print(write_report(args.run))
    return 0


def cmd_compare(args) -> int:
    from nndl.runfolder.report import compare

    path = compare(args.runs, out=args.out)
    print(f"\ncomparison: {path}")
    return 0


def cmd_predict(args) -> int:
    from nndl.tools.predict import predict

    predict(args.run, args.files, json=args.json, out=args.out, top=args.top)
    return 0


def cmd_export(args) -> int:
    from nndl.tools.export import export

    print(export(args.run, fmt=args.format, out=args.out))
    return 0


def cmd_lr_find(args) -> int:
    from nndl.tools.lr_find import lr_find

    overrides = _settings(args, data=args.data, label_col=args.label_col, train_path=args.train)
    lr_find(args.task, preset=args.preset, overrides=overrides, seed=args.seed, lr_min=args.lr_min,
            lr_max=args.lr_max, fraction=args.fraction, min_steps=args.min_steps, out=args.out,
            overwrite=args.overwrite, progress=not args.no_progress)
    return 0


def cmd_bench(args) -> int:
    from nndl.tools.bench import run_bench

    run_bench(typical_epochs=args.typical_epochs, cnn_epochs=args.cnn_epochs, fast_runs=args.fast_runs,
              speed_runs=args.speed_runs, subset=args.subset, test_subset=args.test_subset, regression_epochs=args.regression_epochs,
              loaded_epochs=args.loaded_epochs,
              search_trials=args.search_trials, extra_presets=tuple(args.presets),
              preset_runs=args.preset_runs, data_dir=args.data, out=args.out, device=args.device)
    return 0


def _add_regress(sub) -> None:
    p = sub.add_parser("regress", help="fit an MLP to a CSV of numeric columns with K-fold CV",
                       description="Fit a regression MLP with shuffled K-fold cross-validation, evaluate once on "
                                   "the test set and write a run folder with figures.")
    p.add_argument("--train", help="training CSV (default: the data set bundled with nndl)")
    p.add_argument("--test", help="test CSV (default: the bundled test set; '' for none)")
    p.add_argument("--x-cols", help="input columns by header name, comma-separated (default: all but the last)")
    p.add_argument("--y-col", help="target column by header name (default: the last)")
    p.add_argument("--no-reference", action="store_true",
                   help="fit no reference model beside the net (the same as --set reference=none)")
    _add_run_args(p, None, "seed for one input column, a table recipe for several")
    p.set_defaults(func=cmd_regress)


def _add_classify(sub) -> None:
    p = sub.add_parser("classify", help="classify images (Fashion-MNIST, IDX, class folders) or CSV table rows",
                       description="Train a classifier, evaluate it once on the test set and write a run folder "
                                   "with figures. Data: Fashion-MNIST by default, or --data pointing at an "
                                   "MNIST-format IDX folder, a folder of class subfolders of images (ROOT/CLASS/"
                                   "*.png, or ROOT/train/... + ROOT/test/...), or a CSV table with --label-col. "
                                   "Ctrl-C keeps the run at any moment; --resume continues it.")
    from nndl.base.config import field_choices
    from nndl.tasks.classify.config import ClassifyConfig  # the model registry (nndl.base.model_kinds) via the config

    p.add_argument("--model", choices=field_choices(ClassifyConfig, "model"), help="network (default: the preset's)")
    p.add_argument("--data", help="dataset folder or .csv file (default: Fashion-MNIST from $NNDL_DATA, the Debian "
                                  "package's /usr/share/datasets/fashion-mnist, then the user cache)")
    p.add_argument("--label-col", help="CSV table: the class column (default: a column named 'label')")
    p.add_argument("--test", metavar="FILE.csv", help="CSV table: its own test file, with the same columns (default: "
                                                      "a stratified test_fraction of --data)")
    p.add_argument("--no-verify", action="store_true", help="accept files whose SHA-256 differs from the official")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run in its folder (no --out, --set)")
    _add_run_args(p, "mlp")
    p.set_defaults(func=cmd_classify)


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="search hyperparameters with Optuna and K-fold CV",
                       description="Search a space of config values with Optuna, scoring each trial by K-fold "
                                   "cross-validation; failed trials keep their reason. Writes trials.csv, "
                                   "study.json, best_preset.toml, the retrained best run and figures. Exit code 3 "
                                   "when most trials failed or none completed.")
    p.add_argument("task", metavar="TASK", help="regress or classify")
    p.add_argument("--space", metavar="SPACE.toml", help="search-space file (see docs/tuning.md); regress "
                   "defaults to the built-in nndl/spaces/regress_default.toml")
    p.add_argument("--sampler", help="grid, random or tpe (default: grid for a [grid]-only space, else tpe)")
    p.add_argument("--trials", type=int, help="total trials of the study, over all workers and reruns "
                                              "(default: the grid size, or 20)")
    p.add_argument("--folds", type=int, help="K of the K-fold CV (default: config folds for regress, 3 for classify)")
    p.add_argument("--pruner", default="none", help="none, median, hyperband or wilcoxon (default: none)")
    p.add_argument("--study", help="study name (default: TASK-SPACESTEM, or the one already in --out)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage: a database URL, e.g. postgresql://user:pw@host/db "
                                                    "(percent-encode @ : / in the password), or a journal file path "
                                                    "(default: $NNDL_TUNE_STORAGE, else journal.log in the study "
                                                    "folder)")
    p.add_argument("--repair-journal", action="store_true",
                   help="the journal's last line was cut short by a crash: drop it (the damaged file is kept as "
                        "JOURNAL.damaged); any other damage is still refused")
    p.add_argument("--workers", type=int, default=1, help="trial processes on this machine (default: 1)")
    p.add_argument("--batch-trials", type=int, default=1, metavar="N",
                   help="claim N trials at a time and train those sharing a network (regress; classify MLPs "
                        "without augmentation) as one stacked model of all their folds (default: 1, one trial "
                        "at a time)")
    p.add_argument("--out", help="study folder (default: runs/tune-TASK-TIMESTAMP); reusing it resumes the study")
    p.add_argument("--preset", help="base preset name or file (default: the space file's, else the task's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field for every trial (repeatable)")
    p.add_argument("--seed", type=int, help="config seed; the sampler's seed is this plus the worker index")
    p.add_argument("--timeout-per-trial", type=float, metavar="S", help="seconds of training before a trial FAILs")
    p.add_argument("--heartbeat", type=int, default=10, metavar="S",
                   help="RDB storage: heartbeat interval; a worker silent for 3 intervals loses its trial")
    p.add_argument("--worker-only", action="store_true",
                   help="only run trials, write no outputs (extra workers, e.g. on other machines)")
    p.add_argument("--allow-changes", action="store_true",
                   help="resume a study in --out although its space, preset, --set, --seed or --folds changed "
                        "(its earlier trials were scored with the old settings)")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_tune)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time-to-accuracy and s/epoch: typical DataLoader loop vs nndl",
                       description="Measure in one run: a typical per-sample DataLoader loop, the cnn preset, the "
                                   "fast preset, and regression K-fold sequential vs batched. Prints a table and "
                                   "writes bench.json to the run folder.")
    p.add_argument("--typical-epochs", type=int, default=2, help="epochs of the typical loop (default 2)")
    p.add_argument("--cnn-epochs", type=int, default=0, help="epochs of the cnn preset (default: the preset's)")
    p.add_argument("--fast-runs", type=int, default=3, help="seeds of the fast preset (default 3)")
    p.add_argument("--speed-runs", type=int, default=3, help="seeds of the speed preset (default 3; 0 skips it)")
    p.add_argument("--subset", type=int, default=0, help="training images to use (default all)")
    p.add_argument("--test-subset", type=int, default=0, help="test images to use (default all)")
    p.add_argument("--loaded-epochs", type=int, default=150,
                   help="epochs of the regression CV timed beside one busy process (default 150; 0 skips it)")
    p.add_argument("--regression-epochs", type=int, default=600,
                   help="epochs of the regression K-fold and search comparisons (0 skips them)")
    p.add_argument("--presets", nargs="*", default=[], metavar="PRESET",
                   help="more classify presets to time after fast (e.g. accurate wide resnet)")
    p.add_argument("--preset-runs", type=int, default=1, help="seeds of each --presets preset (default 1)")
    p.add_argument("--search-trials", type=int, default=8,
                   help="trials of the regression search comparison (default 8; 0 skips it)")
    p.add_argument("--data", help="Fashion-MNIST folder (default: the usual search)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--out", help="run folder (default runs/bench-<timestamp>)")
    p.set_defaults(func=cmd_bench)


def _add_presets(sub) -> None:
    p = sub.add_parser("presets", help="list the named presets of each task and what they set",
                       description="List the presets of regress and classify with the config values each sets "
                                   "on top of the task's defaults.")
    p.add_argument("task", nargs="?", choices=["regress", "classify"], help="only this task's presets")
    p.set_defaults(func=cmd_presets)


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="list a task's config keys with defaults, choices and help",
                       description="List every config key of a task (what --set KEY=VALUE accepts), with its "
                                   "type, its value (the defaults, or a preset's) and help.")
    p.add_argument("task", choices=["regress", "classify"], help="regress or classify")
    p.add_argument("--preset", help="show the values of this preset (name or file) instead of the defaults")
    p.set_defaults(func=cmd_config)


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="find or download the Fashion-MNIST files")
    p.add_argument("action", choices=["download", "where"], help="download into the cache, or print the source used")
    p.add_argument("--mirror", help="base URL holding the four .gz files (default: the official one)")
    p.add_argument("--dest", help="folder to download into (default: the user cache)")
    p.add_argument("--data", help="folder to check first (with 'where')")
    p.set_defaults(func=cmd_data)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="(re)write RUN/report.html", description="Write RUN/report.html: one "
                       "self-contained page (figures embedded, no network) with the metrics, figures, history, "
                       "config and environment of a run, or the trials of a tuning study. Prints its path.")
    p.add_argument("run", metavar="RUN", help="run or study folder")
    p.set_defaults(func=cmd_report)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="compare runs: config differences, metrics, overlaid curves",
                       description="Print a side-by-side table of the runs' config differences and metrics, and "
                                   "write an HTML page with their training curves overlaid.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders")
    p.add_argument("--out", default="compare.html", help="HTML file to write (default: ./compare.html)")
    p.set_defaults(func=cmd_compare)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict with a trained run: images, IDX/CSV batches, or regression CSVs",
                       description="Classification: PNG/JPEG images of any size and colour, brought to the "
                                   "model's input shape (MNIST-style models: grayscale, light object on dark "
                                   "background, a light background inverted; image-folder models: resized, colour "
                                   "kept), IDX files or CSV batches, or CSV rows for a table model; prints the top "
                                   "classes with probabilities. Regression: CSV files of inputs; writes CSV with "
                                   "prediction, fold_mean and fold_std.")
    p.add_argument("run", metavar="RUN", help="run folder (or its model.pt)")
    p.add_argument("files", nargs="+", metavar="FILE", help="input files")
    p.add_argument("--json", action="store_true", help="print JSON instead of text/CSV")
    p.add_argument("--out", help="write the output to this file instead of stdout (a .csv file: CSV columns "
                   "file, index, class_1, probability_1, ...)")
    p.add_argument("--top", type=int, default=3, help="classes listed per image (default: 3; JSON key: top)")
    p.set_defaults(func=cmd_predict)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a run's model to ONNX or TorchScript",
                       description="Write a model file that loads without nndl. Image classifiers take float32 "
                                   "(N, C, H, W) raw pixels 0..255 in the dataset's shape (normalisation built in), "
                                   "table classifiers (N, features); both output logits. Regressors take "
                                   "(N, inputs) and output (N, 1). The batch size is dynamic.")
    p.add_argument("run", metavar="RUN", help="run folder (or its model.pt)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default: onnx")
    p.add_argument("--out", help="output file (default: RUN/model.onnx or RUN/model.torchscript.pt)")
    p.set_defaults(func=cmd_export)


def _add_lr_find(sub) -> None:
    p = sub.add_parser("lr-find", help="sweep the learning rate exponentially and suggest one",
                       description="Train a fresh model of the preset for a fraction of an epoch while the lr grows "
                                   "geometrically from --lr-min to --lr-max; plot the loss against the lr "
                                   "(lr_find.png) and suggest a tenth of the lr at the smoothed loss minimum (the "
                                   "steepest-fall lr is marked on the plot beside it).")
    p.add_argument("task", choices=["regress", "classify"], help="regress or classify")
    p.add_argument("--preset", help="preset name or file (default: seed for regress, mlp for classify)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable); lr, epochs and schedule are ignored")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--lr-min", type=float, default=1e-6, help="first lr of the sweep (default 1e-6)")
    p.add_argument("--lr-max", type=float, default=1.0, help="last lr of the sweep (default 1)")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="part of an epoch to sweep over (default 0.5), at least --min-steps batches")
    p.add_argument("--min-steps", type=int, help="fewest batches in the sweep (default: 300 regress, 100 classify)")
    p.add_argument("--train", help="regress: training CSV (default: the bundled set)")
    p.add_argument("--data", help="classify: Fashion-MNIST, an IDX or image folder, or a CSV table (default: "
                   "Fashion-MNIST, the usual search)")
    p.add_argument("--label-col", help="classify, CSV table: the label column (default: label)")
    p.add_argument("--out", help="folder for lr_find.png and lr_find.json (default: runs/lr-find-TASK-<time>)")
    p.add_argument("--overwrite", action="store_true", help="allow --out to be an existing non-empty folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_lr_find)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nndl", description="Train, tune and inspect small neural networks.")
    parser.add_argument("--version", action="version", version=f"nndl {__import__('nndl').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_regress, _add_classify, _add_tune, _add_bench, _add_presets, _add_config, _add_data,
                _add_report, _add_compare, _add_predict, _add_export, _add_lr_find):
        add(sub)  # one function per subcommand, in the order --help lists them
    return parser


def _os_error_line(e: OSError) -> str:
    """A failed read or write (missing, read-only, disk full, file too large) as one line naming the file."""
    where = f"{e.filename}: " if e.filename else ""
    hint = {28: "; free some disk space", 27: "; the file-size limit (ulimit -f) was reached",
            13: "; choose a folder you can write to", 30: "; choose a folder you can write to"}.get(e.errno, "")
    return f"nndl: error: {where}{e.strerror or e}{hint}"


def main(argv: list[str] | None = None) -> int:
    """Run one ``nndl`` command; return its exit code (2: the user's input or environment, 130: Ctrl-C)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        settings = [a for a in extra if "=" in a and not a.startswith("-")]
        if settings:  # `--set a=1 b=2`: argparse alone says only "unrecognized arguments: b=2"
            print(f"nndl: error: unrecognized arguments: {' '.join(extra)}; each setting takes its own --set: "
                  f"{' '.join('--set ' + a for a in settings)}", file=sys.stderr)
            return 2
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # Library warnings (numpy, torch, PIL) are held back and printed as one line each after a
    # successful command; before a one-line error they would only be noise.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            code = args.func(args) or 0
        except NndlError as e:
            print(mask_secrets(f"nndl: error: {e}"), file=sys.stderr)
            return 2
        except BrokenPipeError:  # `nndl config regress | head`: the reader left; nothing to report
            sys.stdout = None
            return 1
        except OSError as e:
            print(mask_secrets(_os_error_line(e)), file=sys.stderr)
            return 2
        except TrainingInterrupted as e:  # the message says what was kept and the next step
            print(f"nndl: {e}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print("nndl: interrupted", file=sys.stderr)
            return 130
    for line in dict.fromkeys(f"nndl: warning: {w.category.__name__}: {' '.join(str(w.message).split())}"
                              for w in caught):
        print(mask_secrets(line), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
