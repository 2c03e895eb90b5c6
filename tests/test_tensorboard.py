"""TensorBoard: logged live during training (real wall times), histograms every N epochs, figures at
the end, and a missing package reported before any work."""
import sys
import time

import pytest

import nndl
from conftest import run_cli
from nndl.training.callbacks import Callback, TensorBoard
from nndl.base.errors import NndlError

pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install nndl[tensorboard])")

QUIET = dict(progress=False, echo=lambda s: None)


def events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


def test_regress_tensorboard_logs_scalars_histograms_and_figures(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("regress", "--set", "epochs=20", "--out", out, "--no-progress", "--tensorboard", check=0)
    assert "tensorboard --logdir" in proc.stdout
    acc = events(out / "tensorboard")
    tags = acc.Tags()
    assert "fold 1/train_loss" in tags["scalars"] and "fold refit/train_loss" in tags["scalars"]
    assert [e.step for e in acc.Scalars("fold 1/val_loss")] == list(range(1, 21))
    hist = [t for t in tags["histograms"] if t.startswith("fold 1/weights/") and t.endswith("layers.0.weight")]
    assert hist, tags["histograms"]
    assert len(acc.Histograms(hist[0])) >= 10  # every N epochs during training, not only the final weights
    assert {"figures/fit", "figures/losses"} <= set(tags["images"])


class WallClock(Callback):
    """Records the time at each epoch end of fold 1; at epoch `peek` reads the event file back mid-training."""

    def __init__(self, tb, peek):
        self.tb, self.peek, self.times, self.seen_mid_training = tb, peek, [], None

    def on_epoch_end(self, state, logs):
        if state.fold != 1:
            return
        self.times.append(time.time())
        if logs["epoch"] == self.peek:
            self.tb.writer.flush()
            self.seen_mid_training = len(events(self.tb.log_dir).Scalars("fold 1/train_loss"))


def test_event_wall_times_increase_during_training(tmp_path):
    tb = TensorBoard(histogram_every=5)
    clock = WallClock(tb, peek=10)
    run = nndl.regress(out=tmp_path / "r", overrides={"epochs": 30, "folds": 3}, callbacks=[tb, clock],
                       figures=False, **QUIET)
    assert clock.seen_mid_training == 10  # the first 10 epochs were on disk while epoch 11 had not begun
    walls = [e.wall_time for e in events(run.path / "tensorboard").Scalars("fold 1/train_loss")]
    assert len(walls) == 30 == len(clock.times)
    assert all(a < b for a, b in zip(walls, walls[1:]))  # one stamp per epoch, not one for the whole run
    # Epoch e's event was written when epoch e ended: after the previous epoch's end, before the next one's.
    assert all(prev <= w <= now for prev, w, now in zip([0.0] + clock.times, walls, clock.times))


def test_plain_train_logs_to_a_given_folder(tmp_path):
    import torch

    from nndl.base import config
    from nndl.nn.models import build_regressor

    cfg = config.resolve("regress", "seed", {"hidden": [8], "epochs": 7, "lr": 0.01})
    x = torch.linspace(-2, 2, 40)[:, None]
    nndl.train(build_regressor(cfg, 1), x, x[:, 0] ** 2, cfg, task="regression", progress=False,
               callbacks=[TensorBoard(tmp_path / "tb", histogram_every=3)])
    acc = events(tmp_path / "tb")
    assert [e.step for e in acc.Scalars("train_loss")] == list(range(1, 8))
    assert [e.step for e in acc.Histograms("weights/layers.0.weight")] == [3, 6, 7]  # every 3, and the end


def test_missing_tensorboard_is_reported_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.raises(NndlError, match=r"pip install nndl\[tensorboard\]"):
        nndl.regress(out=tmp_path / "r", tensorboard=True, **QUIET)
    assert not (tmp_path / "r").exists()


def test_log_run_writes_a_finished_folder(tmp_path):
    from nndl.training.tensorboard import log_run

    run = nndl.regress(out=tmp_path / "r", overrides={"epochs": 5, "folds": 2}, **QUIET)
    acc = events(log_run(run.path))
    assert len(acc.Scalars("fold 2/val_loss")) == 5 and "figures/fit" in acc.Tags()["images"]
