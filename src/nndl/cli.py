"""The ``nndl`` command: thin subcommands over the Python API.

Input problems (``NndlError``) print one line and exit with code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .errors import NndlError


def _add_run_args(p: argparse.ArgumentParser, default_preset: str | None) -> None:
    p.add_argument("--preset", default=default_preset,
                   help=f"preset name or .toml/.json preset file (default: {default_preset})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set lr=0.01 --set hidden=64,64 (repeatable)")
    p.add_argument("--out", help="run folder (default: a new timestamped folder under runs/)")
    p.add_argument("--overwrite", action="store_true", help="allow --out to be an existing non-empty folder")
    p.add_argument("--seed", type=int, help="random seed (overrides the config's seed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figures", action="store_true", help="skip writing figures")


def _split_cols(text: str | None) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else []


def cmd_regress(args) -> int:
    from .regression import regress

    overrides = list(args.overrides)
    if args.x_cols:
        overrides.append(f"x_cols={args.x_cols}")
    if args.y_col:
        overrides.append(f"y_col={args.y_col}")
    regress(train=args.train, test=args.test, preset=args.preset, overrides=overrides, seed=args.seed, out=args.out,
            overwrite=args.overwrite, progress=not args.no_progress, figures=not args.no_figures)
    return 0


def cmd_classify(args) -> int:
    from .classification import classify

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model={args.model}")
    if args.data:
        overrides.append(f"data={args.data}")
    if args.no_verify:
        overrides.append("verify=false")
    classify(preset=args.preset, overrides=overrides, seed=args.seed, out=args.out, overwrite=args.overwrite,
             resume=args.resume, progress=not args.no_progress, figures=not args.no_figures)
    return 0


def cmd_data(args) -> int:
    from .data.fashion import download, find_source

    if args.action == "download":
        path = download(dest=args.dest, mirror=args.mirror, progress=True)
        print(f"Fashion-MNIST is in {path}")
    else:
        print(find_source(args.data))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nndl", description="Train, tune and inspect small neural networks.")
    parser.add_argument("--version", action="version", version=f"nndl {__import__('nndl').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("regress", help="fit an MLP to a CSV of numeric columns with K-fold CV",
                       description="Fit a regression MLP with shuffled K-fold cross-validation, evaluate once on "
                                   "the test set and write a run folder with figures.")
    p.add_argument("--train", help="training CSV (default: bundled data/regression/train.csv)")
    p.add_argument("--test", help="test CSV (default: bundled data/regression/test.csv; '' for none)")
    p.add_argument("--x-cols", help="input columns by header name, comma-separated (default: all but the last)")
    p.add_argument("--y-col", help="target column by header name (default: the last)")
    _add_run_args(p, "seed")
    p.set_defaults(func=cmd_regress)

    p = sub.add_parser("classify", help="classify Fashion-MNIST with an MLP or a CNN",
                       description="Train a Fashion-MNIST classifier, evaluate it once on the test set and write a "
                                   "run folder with figures. Ctrl-C saves a checkpoint; --resume continues it.")
    p.add_argument("--model", choices=["mlp", "cnn", "resnet", "fast"], help="network (default: the preset's)")
    p.add_argument("--data", help="folder with the Fashion-MNIST files (default: $NNDL_DATA, the Debian "
                                  "package's /usr/share/datasets/fashion-mnist, then the user cache)")
    p.add_argument("--no-verify", action="store_true", help="accept files whose SHA-256 differs from the official")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run folder")
    _add_run_args(p, "mlp")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("data", help="find or download the Fashion-MNIST files")
    p.add_argument("action", choices=["download", "where"], help="download into the cache, or print the source used")
    p.add_argument("--mirror", help="base URL holding the four .gz files (default: the official one)")
    p.add_argument("--dest", help="folder to download into (default: the user cache)")
    p.add_argument("--data", help="folder to check first (with 'where')")
    p.set_defaults(func=cmd_data)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .training import TrainingInterrupted

    try:
        return args.func(args) or 0
    except NndlError as e:
        print(f"nndl: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"nndl: {e}; continue with --resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("nndl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
