"""Export a run's model to ONNX or TorchScript, to be loaded without nndl.

What the exported model expects (the same contract for both formats):

- **Image classifier**: input ``"input"``, float32 of shape ``(N, C, H, W)`` (the
  dataset's shape, stored in ``model.pt`` and in the ``input_shape`` metadata: one grey
  channel for Fashion-MNIST, three for a colour image folder) holding *raw pixel values in 0..255*
  (MNIST-style sets: light object on a dark background; see
  :func:`nndl.tools.predict.preprocess_image`). The dataset's per-channel normalisation is
  built into the graph, and so is the mirror-image averaging when the run used
  ``tta_flip`` (:class:`nndl.nn.inference.RawInputClassifier`), so the outputs equal what
  nndl computes. Output ``"logits"``, float32 ``(N, classes)``; apply softmax for
  probabilities.
- **Table classifier** (``csv_table``): input float32 ``(N, features)`` in the CSV's
  units, columns in the order of the ``feature_names`` metadata; standardisation inside.
- Classifier metadata (ONNX ``metadata_props``; TorchScript extra file ``nndl.json``):
  ``class_names``, ``input_shape``, ``dataset``, ``feature_names`` (tables).
- **Regressor**: input ``"input"``, float32 ``(N, in_features)`` in the training
  CSV's units; output ``"prediction"``, float32 ``(N, 1)``. Input/target
  standardisation and the fold ensemble (``final=ensemble``) are inside the graph.
  The 90% prediction interval that ``nndl predict`` writes is in the file too (runs that
  saved one; metadata ``interval``): ONNX has two more outputs, ``"lower"`` and ``"upper"``
  (each ``(N, 1)``); TorchScript has a second method, ``model.interval(x)`` -> ``(lower, upper)``.

The batch dimension ``N`` is dynamic in both formats.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from nndl.base.errors import NndlError, path_argument
from nndl.base.fileio import atomic_write_bytes
from nndl.runfolder.files import check_output, record
from nndl.tasks import get_task

ONNX_OPSET = 17
FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}


def export_module(run_dir: str | Path) -> tuple[nn.Module, torch.Tensor, str, dict]:
    """The module to export, an example input, the output name and metadata.

    Returns
    -------
    module : nn.Module (eval mode)
    example : Tensor
        A batch of two inputs of the right shape.
    output_name : str
    metadata : dict of str -> str
    """
    from nndl import __version__
    from nndl.tools.predict import load_run

    run = load_run(run_dir)
    module, example, output_name, task_meta = get_task(run.task).export_module(run)
    return module, example, output_name, {"nndl_version": __version__, "task": run.task, **task_meta}


class _PredictionWithInterval(nn.Module):
    """TorchScript's form of :class:`~nndl.uncertainty.IntervalModel`: ``forward`` stays the plain
    prediction (as in files without an interval), ``interval`` gives ``(lower, upper)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]

    def interval(self, x):
        _, lower, upper = self.model(x)
        return lower, upper


def _has_interval(module: nn.Module) -> bool:
    from nndl.nn.intervals import IntervalModel

    return isinstance(module, IntervalModel)


def _require_onnx() -> None:
    """ONNX export is an optional extra: say which one before any work is done."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise NndlError("ONNX export needs the onnx package: pip install 'nndl[export]' "
                        "(or use --format torchscript, which needs nothing more)")


def _onnx_bytes(module: nn.Module, example: torch.Tensor, output_name: str, meta: dict) -> bytes:
    """The ONNX file, serialised in memory (written once, atomically, by :func:`export`)."""
    # The TorchScript-based exporter (dynamo=False) needs torch and onnx; the newer dynamo exporter
    # would also need onnxscript, which is not a dependency of nndl.
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice is not the user's concern
        names = [output_name] + (["lower", "upper"] if _has_interval(module) else [])
        torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=["input"],
                          output_names=names, opset_version=ONNX_OPSET,
                          dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}})
    model = onnx.load_from_string(buffer.getvalue())
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _torchscript_bytes(module: nn.Module, example: torch.Tensor, meta: dict) -> bytes:
    """The TorchScript file, serialised in memory: torch's own file writer aborts the process when a
    write fails (a full disk, ``ulimit -f``)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream but still the format others load
        if _has_interval(module):
            traced = torch.jit.trace_module(_PredictionWithInterval(module),
                                            {"forward": (example,), "interval": (example,)}, check_trace=False)
        else:
            traced = torch.jit.trace(module, (example,), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={"nndl.json": json.dumps(meta)})
    return buffer.getvalue()


def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None) -> Path:
    """Export the model of a run folder.

    Parameters
    ----------
    run_dir : str or Path
        A run folder (or its ``model.pt``).
    fmt : {"onnx", "torchscript"}
    out : str or Path, optional
        The file to write (default: ``model.onnx`` / ``model.torchscript.pt`` in the run folder).

    Returns
    -------
    Path
        The written file. See the module docstring for the input/output contract.

    Raises
    ------
    NndlError
        Unknown format, or ``run_dir`` holds no nndl checkpoint.
    """
    run_dir, out = path_argument(run_dir, "run_dir") or Path("."), path_argument(out, "out")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise NndlError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx()
    base = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
    path = Path(out) if out is not None else base / FORMATS[fmt]
    if path.is_dir():
        raise NndlError(f"--out {path}: is a folder; give a file name, e.g. {path / FORMATS[fmt]}")
    check_output(path, inputs=[run_dir], folders=[base])  # never over the model it reads, nor the run's files
    module, example, output_name, meta = export_module(run_dir)
    data = (_onnx_bytes(module, example, output_name, meta) if fmt == "onnx"
            else _torchscript_bytes(module, example, meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)  # a failed export never leaves half a file, nor replaces a good one
    record(path)  # written into a run folder: its marker names it
    return path
