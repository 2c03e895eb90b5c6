import json

import pytest

from nndl.base import config
from nndl.base.config import PRESETS, format_config, read_preset_file, resolve, to_dict
from nndl.base.errors import NndlError
from nndl.tasks.classify.config import ClassifyConfig
from nndl.tasks.regress.config import RegressConfig


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


def test_model_registry_drives_builders_choices_and_what_applies():
    """One list of models: every registered kind has a builder, is a config choice and a CLI
    choice, and a model setting it does not read is refused for it (and only for it)."""
    import torch

    from nndl.cli import build_parser
    from nndl.base.errors import NndlError
    from nndl.base.model_kinds import MODEL_KINDS, MODEL_SETTINGS
    from nndl.nn.models import BUILDERS

    assert set(BUILDERS) == set(MODEL_KINDS)
    assert config.field_choices(ClassifyConfig, "model") == list(MODEL_KINDS)
    classify_cli = build_parser()._subparsers._group_actions[0].choices["classify"]
    model_arg = next(a for a in classify_cli._actions if "--model" in a.option_strings)
    assert list(model_arg.choices) == list(MODEL_KINDS)
    changed = {"hidden": [32], "dropout": [0.5, 0.5, 0.5], "activation": "tanh", "init": "xavier",
               "channels": [8, 8, 8]}
    assert set(changed) == set(MODEL_SETTINGS)
    for name, kind in MODEL_KINDS.items():
        model = BUILDERS[name](ClassifyConfig(model=name, channels=[4, 8, 8], hidden=[8], dropout=[0.0]),
                               (1, 28, 28), 3)
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
        for key, value in changed.items():
            if key in kind.reads:
                config.resolve("classify", None, {"model": name, key: value})
            else:
                with pytest.raises(NndlError, match=f"'{key}' = .* does not apply"):
                    config.resolve("classify", None, {"model": name, key: value})


def test_tasks_register_their_configs_and_a_new_task_plugs_in():
    """Each task's config module registers its dataclass, presets and rules; the machinery reads only the
    registry, so a task registered from outside gets resolve, presets, the rules and round trips."""
    from dataclasses import dataclass

    assert config.TASK_CONFIGS["regress"] is RegressConfig and config.TASK_CONFIGS["classify"] is ClassifyConfig
    assert RegressConfig.__module__ == "nndl.tasks.regress.config"
    assert ClassifyConfig.__module__ == "nndl.tasks.classify.config"

    @dataclass
    class ToyConfig(config.TrainConfig):
        width: int = config._doc(4, "toy width")
        extra: int = config._doc(0, "read only when width > 4")

        def range_checks(self):
            return [("width", self.width >= 1, "must be >= 1")]

    def unused(cfg):
        return {"extra": "only width > 4 reads it"} if cfg.get("width", 4) <= 4 else {}

    def given(cfg, keys):
        if "width" in keys and cfg.width == 3:
            raise NndlError("config key 'width' = 3: toy says no")

    config.register("toy", ToyConfig, {"big": {"width": 8, "extra": 2}}, unused, given)
    try:
        assert "toy" in config.TASK_CONFIGS and config.PRESETS["toy"] == {"big": {"width": 8, "extra": 2}}
        cfg = resolve("toy", "big", ["epochs=2"])
        assert (cfg.width, cfg.extra, cfg.epochs) == (8, 2, 2)
        assert config.from_dict("toy", to_dict(cfg)) == cfg and config.field_names("toy") >= {"width", "lr"}
        assert "big      width=8, extra=2" in config.describe_presets("toy")
        assert config.unused_settings("toy", to_dict(resolve("toy")))["extra"] == "only width > 4 reads it"
        for overrides, needle in [(["width=0"], "must be >= 1"), (["extra=1"], "does not apply"),
                                  (["width=3"], "toy says no")]:
            with pytest.raises(NndlError, match=needle):
                resolve("toy", None, overrides)
    finally:
        config._REGISTERED.pop("toy")
