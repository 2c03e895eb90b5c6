import json

import pytest

from nndl.config import PRESETS, RegressConfig, format_config, read_preset_file, resolve, to_dict
from nndl.errors import NndlError


def test_defaults_are_the_reference_seed_preset():
    cfg = resolve("regress", "seed")
    assert (cfg.hidden, cfg.activation, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.batch_size,
            cfg.folds) == ([128, 256], "sigmoid", "adam", 0.02, 1e-5, 600, 256, 5)


def test_overrides_are_typed():
    cfg = resolve("regress", "seed", ["hidden=32,16,8", "lr=1e-3", "batched=false", "probe_inputs=[1, 2.5]"], seed=7)
    assert cfg.hidden == [32, 16, 8] and cfg.lr == 1e-3 and cfg.batched is False
    assert cfg.probe_inputs == [1.0, 2.5] and cfg.seed == 7


@pytest.mark.parametrize("override, needle", [
    (["lrr=0.1"], "unknown config key 'lrr'.*did you mean lr"),
    (["lr=fast"], "lr=fast: expected float"),
    (["epochs=1.5"], "epochs=1.5: expected int"),
    (["batched=maybe"], "expected true or false"),
    (["activation=swish"], "choose one of sigmoid, tanh, relu, gelu"),
    (["lr=-1"], "'lr' = -1.0: must be > 0"),
    (["noequals"], "expected key=value"),
])
def test_bad_overrides(override, needle):
    with pytest.raises(NndlError, match=needle):
        resolve("regress", "seed", override)


def test_unknown_preset():
    with pytest.raises(NndlError, match="unknown preset 'nope'"):
        resolve("regress", "nope")


def test_preset_file_round_trip(tmp_path):
    (tmp_path / "p.toml").write_text('task = "regress"\nlr = 0.05\nhidden = [16, 16]\nactivation = "tanh"\n')
    cfg = resolve("regress", str(tmp_path / "p.toml"))
    assert cfg.lr == 0.05 and cfg.hidden == [16, 16] and cfg.activation == "tanh"
    (tmp_path / "p.json").write_text(json.dumps(to_dict(cfg)))
    assert resolve("regress", str(tmp_path / "p.json")) == cfg
    (tmp_path / "bad.toml").write_text("lr = = 1")
    with pytest.raises(NndlError, match="bad.toml: not a valid toml"):
        read_preset_file(tmp_path / "bad.toml")


def test_every_preset_resolves_and_prints():
    for task, presets in PRESETS.items():
        for name in presets:
            assert "lr" in format_config(resolve(task, name))
    assert isinstance(resolve("regress"), RegressConfig)
