import pytest

from conftest import run_cli

pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install tensorboard)")


def test_regress_tensorboard_logs_scalars_histograms_and_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    proc = run_cli("regress", "--set", "epochs=20", "--out", out, "--no-progress", "--tensorboard", check=0)
    assert "tensorboard --logdir" in proc.stdout
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "fold 1/train_loss" in tags["scalars"] and "fold refit/train_loss" in tags["scalars"]
    assert len(acc.Scalars("fold 1/val_loss")) == 20
    assert "layers.0.weight" in tags["histograms"]
    assert {"figures/fit", "figures/losses"} <= set(tags["images"])
