"""Optional TensorBoard logging of a finished run: scalars, weight histograms and figures.

Written from the run folder itself (history.csv, model.pt, figures/), so the CLI, the
Python API and any old run folder log the same thing:

    nndl classify --tensorboard ...      tensorboard --logdir RUN/tensorboard
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import NndlError
from .runs import load_model_file, read_history_csv


def log_run(run_dir: str | Path) -> Path:
    """Write ``RUN/tensorboard/`` event files for a run folder and return that folder.

    Scalars: every numeric history column per epoch (``fold N/`` prefixes for
    cross-validated runs). Histograms: every weight tensor of ``model.pt``.
    Images: every PNG in ``figures/``.

    Raises
    ------
    NndlError
        When the ``tensorboard`` package is missing (``pip install tensorboard``).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise NndlError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    import matplotlib.image as mpimg

    run_dir = Path(run_dir)
    log_dir = run_dir / "tensorboard"
    writer = SummaryWriter(log_dir=str(log_dir))
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
                        writer.add_histogram(f"{tag}{name}", tensor.float().numpy(), 0)
        for png in sorted((run_dir / "figures").glob("*.png")):
            image = mpimg.imread(png)[..., :3]  # HxWx4 float in [0, 1] -> RGB
            writer.add_image(f"figures/{png.stem}", image, 0, dataformats="HWC")
    finally:
        writer.close()
    return log_dir
