"""The time-to-accuracy preset ``speed`` (the ``lite`` network) builds for any image size and learns on real data."""
import pytest
import torch

import nndl
from conftest import needs_fashion
from nndl.base.config import resolve
from nndl.base.errors import NndlError
from nndl.nn.models import LiteCNN, build_classifier

QUIET = {"progress": False, "verbose": False, "echo": lambda s: None, "figures": False}


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 7, 7), (1, 29, 15)])
def test_lite_network_gives_one_logit_per_class_for_any_image_size(shape):
    cfg = resolve("classify", "speed", {})
    net = build_classifier(cfg, shape, 7).eval()
    assert isinstance(net, LiteCNN)
    with torch.no_grad():
        assert net(torch.randn(5, *shape)).shape == (5, 7)


def test_lite_network_refuses_images_too_small_to_pool():
    with pytest.raises(ValueError, match="at least 7x7"):
        LiteCNN(image_size=(6, 28))


def test_speed_preset_trains_the_lite_network_on_all_training_images():
    cfg = resolve("classify", "speed", {})
    assert cfg.model == "lite" and cfg.val_fraction == 0.0 and cfg.tta_flip


@needs_fashion
def test_speed_preset_learns_on_a_real_subset(tmp_path):
    m = nndl.classify("speed", {"subset": 4000, "test_subset": 2000}, seed=0, out=tmp_path / "r", **QUIET)
    assert m["test_accuracy"] > 0.8  # chance is 0.10; 0.846-0.859 measured over seeds 0-2 (2 cores, ~2 s)


def test_speed_preset_on_a_table_says_to_use_the_mlp(tmp_path):
    rows = "\n".join(f"{i % 7},{i % 5},{i % 2}" for i in range(40))
    (tmp_path / "t.csv").write_text("a,b,label\n" + rows + "\n")
    with pytest.raises(NndlError, match="'model' = 'lite'.*only model=mlp"):
        nndl.classify("speed", {"data": str(tmp_path / "t.csv")}, out=tmp_path / "r", **QUIET)


def test_bench_rows_over_seeds_in_typical_epochs():
    from nndl.tasks.classify.bench import over_seeds, summarise

    def seed(accs):  # 10 s per epoch
        return summarise("speed", [{"epoch": i + 1, "train_seconds": 10.0, "test_acc": a} for i, a in enumerate(accs)])

    row = over_seeds("speed", [seed([0.90, 0.912, 0.931]), seed([0.911, 0.92, 0.936])], typical_seconds=40.0)
    assert row["runs"] == 2 and row["final_test_acc"] == pytest.approx(0.9335)
    assert row["time_to_91"] == pytest.approx(15.0) and row["time_to_91_std"] == pytest.approx(5.0)
    assert row["typical_epochs_to_91"] == pytest.approx(15 / 40) and row["typical_epochs_to_91_std"] == pytest.approx(5 / 40)
    assert row["time_to_93"] == pytest.approx(30.0) and row["typical_epochs_to_93"] == pytest.approx(0.75)
    assert row["time_to_93.5"] is None and row["typical_epochs_to_93.5"] is None  # one seed never got there
    assert over_seeds("speed", [seed([0.95])])["typical_epochs_to_94"] is None  # no typical epoch in this run


def test_accurate_preset_is_the_deeper_lite_network():
    from nndl.nn.models import LiteCNN

    cfg = resolve("classify", "accurate", {})
    net = build_classifier(cfg, (1, 28, 28), 10)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert cfg.model == "lite4" and isinstance(net, LiteCNN) and len(convs) == 4 and cfg.val_fraction == 0.0
    lite = build_classifier(resolve("classify", "speed", {"channels": [32, 64, 128]}), (1, 28, 28), 10)
    assert set(lite.state_dict()) < set(net.state_dict())  # lite's weights keep their names (old model.pt load)


@needs_fashion
@pytest.mark.parametrize("preset", ["accurate", "record"])
def test_lite4_presets_learn_on_a_real_subset(tmp_path, preset):
    m = nndl.classify(preset, {"subset": 4000, "test_subset": 2000, "epochs": 4}, seed=0, out=tmp_path / "r",
                      **QUIET)
    assert m["test_accuracy"] > 0.8 and m["model"] == "lite4"  # chance is 0.10


def test_record_preset_is_accurate_at_twice_the_width_with_erasing():
    accurate, record = resolve("classify", "accurate", {}), resolve("classify", "record", {})
    assert record.model == accurate.model and record.channels == [2 * c for c in accurate.channels]
    assert record.erase > 0 and record.epochs > accurate.epochs and record.amp_cpu and record.amp


@pytest.mark.parametrize("device, amp, amp_cpu, native, expected", [
    ("cuda", True, False, False, True),    # amp is CUDA's switch
    ("cuda", False, True, True, False),    # amp_cpu never turns on autocast on a GPU
    ("cpu", True, False, True, False),     # amp alone never turns on autocast on a CPU
    ("cpu", False, True, True, True),      # amp_cpu on a CPU with native bf16
    ("cpu", False, True, False, False),    # ... and fp32 on one without (bf16 would be emulated: slower)
    ("mps", True, True, True, False),
])
def test_autocast_is_decided_by_device_setting_and_cpu(monkeypatch, device, amp, amp_cpu, native, expected):
    from nndl.training import trainer as training

    monkeypatch.setattr(training, "cpu_computes_bf16", lambda: native)
    cfg = resolve("classify", "cnn", {"amp": amp, "amp_cpu": amp_cpu})
    assert training.autocast_on(cfg, torch.device(device)) is expected
    assert training.ModelOptions.of(cfg, torch.device(device)).amp is expected
    assert training.autocast_on(resolve("regress", "seed", {}), torch.device(device)) is False  # no amp keys


def test_amp_cpu_is_refused_for_no_device_but_reported_unused_off_the_cpu():
    from nndl.base.config import unused_settings

    cfg = resolve("classify", "cnn", {"amp_cpu": True})  # no refusal: which device runs it is known later
    assert cfg.amp_cpu
    assert "amp_cpu" in unused_settings("classify", {"amp_cpu": True}, "cuda")
    assert "amp_cpu" not in unused_settings("classify", {"amp_cpu": True}, "cpu")
    with pytest.raises(NndlError, match="amp_cpu"):
        resolve("classify", "cnn", {"amp_cpu": "yes please"})


@needs_fashion
def test_bf16_autocast_on_cpu_learns_and_is_recorded(tmp_path):
    from nndl.training.trainer import cpu_computes_bf16

    m = nndl.classify("speed", {"subset": 4000, "test_subset": 2000, "amp_cpu": True}, seed=0, out=tmp_path / "r",
                      **QUIET)
    assert m["autocast"] == ("bf16" if cpu_computes_bf16() else "off")
    assert m["test_accuracy"] > 0.8  # as in fp32 (test_speed_preset_learns_on_a_real_subset)
    fp32 = nndl.classify("speed", {"subset": 4000, "test_subset": 2000, "amp_cpu": False}, seed=0,
                         out=tmp_path / "f", **QUIET)
    assert fp32["autocast"] == "off"
    assert abs(m["test_accuracy"] - fp32["test_accuracy"]) < 0.03
