"""TensorBoard support: the import check, figures as images, and logging of an existing run folder.

Live logging during training is the :class:`nndl.training.callbacks.TensorBoard` callback, which
``--tensorboard`` (and ``tensorboard=True`` in Python) adds to a run:

    nndl classify --tensorboard ...      tensorboard --logdir RUN/tensorboard

:func:`log_run` writes the same tags afterwards from a finished run folder (history.csv,
model.pt, figures/), for runs trained without ``--tensorboard``; their scalars then all carry
the time of logging, not of training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nndl.base.errors import NndlError
from nndl.runfolder.files import load_model_file, read_history_csv

INSTALL_HINT = "pip install nndl[tensorboard]"


def require_tensorboard():
    """Return ``torch.utils.tensorboard.SummaryWriter``, or raise a one-line :class:`NndlError`.

    Called before training starts, so a missing package is reported at once, not after the run.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise NndlError(f"--tensorboard needs the tensorboard package: {INSTALL_HINT} "
                        "(or pip install tensorboard)") from None
    return SummaryWriter


def log_figures(writer, fig_dir: str | Path, step: int = 0) -> int:
    """Add every PNG in ``fig_dir`` as an image ``figures/<name>``; returns how many."""
    import matplotlib.image as mpimg

    pngs = sorted(Path(fig_dir).glob("*.png"))
    for png in pngs:
        image = mpimg.imread(png)[..., :3]  # HxWx4 float in [0, 1] -> RGB
        writer.add_image(f"figures/{png.stem}", image, step, dataformats="HWC")
    return len(pngs)


def log_run(run_dir: str | Path) -> Path:
    """Write ``RUN/tensorboard/`` event files for a finished run folder and return that folder.

    Scalars: every numeric history column per epoch (``fold N/`` prefixes for
    cross-validated runs). Histograms: every weight tensor of ``model.pt``
    (``[model N/]weights/<name>``). Images: every PNG in ``figures/``.

    Raises
    ------
    NndlError
        When the ``tensorboard`` package is missing.
    """
    writer_cls = require_tensorboard()
    run_dir = Path(run_dir)
    log_dir = run_dir / "tensorboard"
    writer = writer_cls(log_dir=str(log_dir))
    try:
        history = read_history_csv(run_dir / "history.csv") if (run_dir / "history.csv").exists() else []
        for row in history:
            prefix = f"fold {row['fold']}/" if row.get("fold") not in (None, "") else ""
            step = int(row["epoch"])
            for key, value in row.items():
                if key not in ("epoch", "fold") and isinstance(value, float) and np.isfinite(value):
                    writer.add_scalar(f"{prefix}{key}", value, step)
        if (run_dir / "model.pt").exists():
            payload = load_model_file(run_dir / "model.pt")
            for i, state in enumerate(payload["state_dicts"]):
                tag = f"model {i + 1}/" if len(payload["state_dicts"]) > 1 else ""
                for name, tensor in state.items():
                    if tensor.is_floating_point() and tensor.dim() > 1:
                        writer.add_histogram(f"{tag}weights/{name}", tensor.float().numpy(), 0)
        log_figures(writer, run_dir / "figures")
    finally:
        writer.close()
    return log_dir
