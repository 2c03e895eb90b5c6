"""Bad input, table-driven: every case exits 2 with one line naming the problem, and leaves the folder as it was.

Each case runs the real CLI entry point (``nndl.cli.main``) in a scratch folder that holds a
valid training CSV, a search space and a few user files; the folder is hashed before and after.
Families and counts are listed in docs/reliability.md. Property-based fuzzing (Hypothesis) of the
CSV reader, preset files and search-space files is at the end: whatever the input, the outcome is
a result or an ``NndlError``, never another exception.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import nndl
from nndl import cli, config
from nndl.data.regression import read_table
from nndl.errors import NndlError
from nndl.runs import RUN_MARKER, _protected_reason
from nndl.search import load_space

from conftest import FASHION_DIR, INTERRUPTED_CODES, ROOT, needs_fashion

TRAIN_CSV = "x,y\n" + "".join(f"{i / 10:.2f},{np.sin(i / 10):.4f}\n" for i in range(30))
SPACE_HEAD = '[fixed]\nepochs = 5\n'
FAST = ["--set", "epochs=3", "--set", "hidden=4", "--no-figures", "--no-progress"]


def folder_digest(root: Path) -> dict[str, str]:
    """Relative path -> content hash of every file and folder under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A user's folder: inputs, a space file and unrelated files; the CLI runs from inside it."""
    (tmp_path / "train.csv").write_text(TRAIN_CSV)
    (tmp_path / "notes.txt").write_text("my own notes\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/thesis.tex").write_text("\\documentclass{article}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("nndl: error: ") and expected in lines[0], lines[0]


# ------------------------------------------------------------------ family: values (config, CLI and Python)
REGRESS_VALUES = [
    (["--set", "device=cuda"], "sees no CUDA GPU"),
    (["--set", "device=cuda:5"], "device"),
    (["--set", "device=mps"], "device"),
    (["--set", "device=foo"], "choose auto, cpu, cuda"),
    (["--set", "optimizer=sgd", "--set", "momentum=-0.5"], "momentum"),
    (["--set", "lr=inf"], "finite"),
    (["--set", "lr=nan"], "finite"),
    (["--set", "lr=0"], "must be > 0"),
    (["--set", "lr=-1"], "must be > 0"),
    (["--set", "hidden=64,0"], "hidden"),
    (["--set", "epochs=-1"], "epochs"),
    (["--set", "time_limit=-1"], "time_limit"),
    (["--set", "folds=1"], "folds"),
    (["--set", "dropout=1.5"], "dropout"),
    (["--set", "warmup_epochs=-2"], "warmup_epochs"),
    (["--set", "lr"], "expected key=value"),
    (["--set", "nosuchkey=1"], "unknown config key"),
    (["--set", "epochs=1.5"], "expected int"),
    (["--preset", "nosuch"], "unknown preset"),
    (["--set", "activation=swish"], "choose one of"),
    (["--set", "momentum=0.5"], "does not apply: only SGD uses it (optimizer adam)"),
    (["--set", "min_lr_factor=0.1"], "does not apply: the constant schedule does not decay"),
    (["--set", "optimizer=sgd", "--set", "momentum=0", "--set", "nesterov=true"], "nesterov"),
]


@pytest.mark.parametrize("extra,expected", REGRESS_VALUES, ids=[" ".join(c[0]) for c in REGRESS_VALUES])
def test_regress_bad_value(scratch, capsys, extra, expected):
    before = folder_digest(scratch)
    code, err = run_main(["regress", "--train", "train.csv", "--test", "", "--out", "run", *extra], capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(scratch) == before


CLASSIFY_VALUES = [
    (["--set", "eval_batch_size=0"], "eval_batch_size"),
    (["--set", "threads=-1"], "threads"),
    (["--set", "test_subset=-1"], "test_subset"),
    (["--set", "hidden=256,0,64"], "hidden"),
    (["--set", "channels=16,32"], "channels"),
    (["--set", "val_fraction=1"], "val_fraction"),
    (["--set", "device=cuda"], "sees no CUDA GPU"),
    (["--model", "mlp", "--set", "label_smoothing=2"], "label_smoothing"),
    (["--model", "cnn", "--set", "hidden=64"], "'hidden' = [64] does not apply: only the MLP uses it (model cnn)"),
    (["--model", "fast", "--set", "dropout=0.5"], "does not apply"),
    (["--model", "mlp", "--set", "channels=8,8"], "does not apply: the MLP has no convolutions"),
]


@pytest.mark.parametrize("extra,expected", CLASSIFY_VALUES, ids=[" ".join(c[0]) for c in CLASSIFY_VALUES])
def test_classify_bad_value_before_data(scratch, capsys, extra, expected):
    before = folder_digest(scratch)
    code, err = run_main(["classify", "--data", "nowhere", "--out", "run", *extra], capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(scratch) == before


@needs_fashion
@pytest.mark.parametrize("extra,expected", [
    (["--set", "subset=70000"], "has only 60000"),
    (["--set", "test_subset=20000"], "has only 10000"),
    (["--set", "subset=5"], "without training images"),
])
def test_classify_subset_sizes_say_why(scratch, capsys, extra, expected):
    before = folder_digest(scratch)
    code, err = run_main(["classify", "--data", FASHION_DIR, "--out", "run", *extra], capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(scratch) == before


@pytest.mark.parametrize("kwargs", [dict(epochs=-1), dict(lr=float("nan")), dict(lr="fast"), dict(device="foo"),
                                    dict(hidden=[8, 0]), dict(momentum=-1.0), dict(time_limit=-3.0)])
def test_python_configs_are_validated_when_built(kwargs):
    with pytest.raises(NndlError, match=next(iter(kwargs))):
        config.RegressConfig(**kwargs)


def test_settings_that_apply_are_accepted_and_presets_still_resolve():
    for task, presets in config.PRESETS.items():
        for name in presets:
            config.resolve(task, name)
    config.resolve("classify", "mlp", {"hidden": [32], "momentum": 0.9})  # momentum at its default: harmless
    config.resolve("regress", None, {"optimizer": "sgd", "momentum": 0.5, "nesterov": True})
    config.resolve("regress", None, {"schedule": "cosine", "min_lr_factor": 0.1})


def test_python_api_rejects_bad_values_before_writing(scratch):
    before = folder_digest(scratch)
    with pytest.raises(NndlError, match="epochs"):
        nndl.regress(train="train.csv", test="", overrides={"epochs": -1}, out="run")
    with pytest.raises(NndlError, match="eval_batch_size"):
        nndl.classify(overrides={"eval_batch_size": 0, "data": "nowhere"}, out="run2")
    assert folder_digest(scratch) == before


# ------------------------------------------------------------------ family: CSV files
CSV_CASES = [
    ("huge.csv", "x,y\n1,2\n1e300,3\n", "too large for float32"),
    ("dupe.csv", "x,x,y\n1,2,3\n4,5,6\n", "column name 'x' appears 2 times"),
    ("empty.csv", "", "file is empty"),
    ("header_only.csv", "x,y\n", "no data rows"),
    ("text.csv", "x,y\n1,abc\n", "'abc' is not a number"),
    ("nan.csv", "x,y\n1,nan\n2,3\n", "not finite"),
    ("ragged.csv", "x,y\n1,2\n3\n", "row 3 has 1 columns"),
    ("binary.csv", None, "not a text CSV"),
    ("one_col.csv", "y\n1\n2\n3\n4\n5\n6\n", "at least two columns"),
]


@pytest.mark.parametrize("name,content,expected", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_bad_training_csv(scratch, capsys, name, content, expected):
    path = scratch / name
    if content is None:
        path.write_bytes(bytes(range(256)) * 4)
    else:
        path.write_text(content)
    before = folder_digest(scratch)
    code, err = run_main(["regress", "--train", name, "--test", "", "--out", "run", *FAST], capsys)
    assert_one_line_error(code, err, expected)
    assert name in err
    assert folder_digest(scratch) == before


def test_duplicate_columns_in_the_test_file_name_the_test_file(scratch, capsys):
    (scratch / "test.csv").write_text("x,y,y\n1,2,3\n")
    before = folder_digest(scratch)
    code, err = run_main(["regress", "--train", "train.csv", "--test", "test.csv", "--out", "run", *FAST], capsys)
    assert_one_line_error(code, err, "test.csv: column name 'y' appears 2 times")
    assert folder_digest(scratch) == before


def test_missing_files_and_unknown_columns(scratch, capsys):
    before = folder_digest(scratch)
    for argv, expected in [(["--train", "missing.csv"], "missing.csv: cannot read"),
                           (["--train", "train.csv", "--y-col", "target"], "no column named 'target'"),
                           (["--train", "train.csv", "--test", "nope.csv"], "nope.csv: cannot read")]:
        code, err = run_main(["regress", *argv, "--out", "run", *FAST], capsys)
        assert_one_line_error(code, err, expected)
    assert folder_digest(scratch) == before


# ------------------------------------------------------------------ family: output folders and --overwrite
def test_overwrite_never_deletes_what_nndl_did_not_make(scratch, capsys):
    before = folder_digest(scratch)
    cases = [(["--out", ".", "--overwrite"], "current folder"),
             (["--out", str(scratch), "--overwrite"], "current folder"),
             (["--out", "mine", "--overwrite"], "it holds thesis.tex, which nndl did not write"),
             (["--out", "mine"], "not empty"),
             (["--out", "notes.txt"], "not a folder"),
             (["--out", "notes.txt/sub"], "notes.txt")]
    for extra, expected in cases:
        code, err = run_main(["regress", "--train", "train.csv", "--test", "", *FAST, *extra], capsys)
        assert_one_line_error(code, err, expected)
    assert folder_digest(scratch) == before


def test_overwrite_refuses_a_folder_holding_an_input_even_if_nndl_made_it(scratch, capsys):
    data = scratch / "data"
    data.mkdir()
    (data / RUN_MARKER).write_text("old run\n")
    (data / "train.csv").write_text(TRAIN_CSV)
    before = folder_digest(scratch)
    code, err = run_main(["regress", "--train", "data/train.csv", "--test", "", "--out", "data", "--overwrite",
                          *FAST], capsys)
    assert_one_line_error(code, err, "holds the input data/train.csv")
    assert folder_digest(scratch) == before


def test_overwrite_replaces_an_nndl_run_folder(scratch, capsys):
    with_figures = [a for a in FAST if a != "--no-figures"]
    assert run_main(["regress", "--train", "train.csv", "--test", "", "--out", "run", *with_figures], capsys)[0] == 0
    assert (scratch / "run" / RUN_MARKER).is_file() and (scratch / "run/figures/fit.png").is_file()
    assert run_main(["regress", "--train", "train.csv", "--test", "", "--out", "run", "--overwrite", *FAST],
                    capsys)[0] == 0
    assert not (scratch / "run/figures/fit.png").exists() and (scratch / "run/metrics.json").exists()
    assert (scratch / "notes.txt").read_text() == "my own notes\n"


def test_protected_folders(tmp_path, monkeypatch):
    """Root, home and the current folder's ancestors are refused before any other check (never run for real)."""
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home / "work")
    assert "root" in _protected_reason(Path("/"), [])
    assert "home" in _protected_reason(home, [])
    assert "current folder" in _protected_reason(home / "work", [])
    marked = tmp_path / "run"
    marked.mkdir()
    (marked / RUN_MARKER).write_text("")
    assert _protected_reason(marked, []) is None
    assert "input" in _protected_reason(marked, [str(marked / "sub/data.csv")])


# ------------------------------------------------------------------ family: search-space files
SPACE_CASES = [
    ('[params.lr]\ntype = "log-float"\nlow = "a"\nhigh = 0.1\n', "[params.lr]: needs numeric low and high"),
    ('[params.lr]\ntype = "log-float"\nlow = 0\nhigh = 0.1\n', "a log scale needs low > 0"),
    ('[params.lr]\ntype = "float"\nlow = -1.0\nhigh = 0.1\n', "[params.lr]: config key 'lr' = -1.0: must be > 0"),
    ('[params.lr]\ntype = "float"\nlow = 0.1\nhigh = inf\n', "[params.lr]: needs numeric low and high"),
    ('[params.activation]\ntype = "categorical"\nchoices = ["relu", "swish"]\n', "[params.activation]"),
    ('[params.epochs]\ntype = "int"\nlow = -5\nhigh = 10\n', "[params.epochs]: config key 'epochs' = -5"),
    ('[params.epochs]\ntype = "int"\nlow = 1.5\nhigh = 10\n', "needs integer low and high"),
    ('[params.epochs]\ntype = "int"\nlow = 1\nhigh = 10\nstep = -2\n', "step = -2"),
    ('[params.epochs]\ntype = "int"\nlow = 1\nhigh = 10\nsetp = 2\n', "unknown key 'setp'"),
    ('[params.lr]\ntype = "log-float"\nlow = 0.1\nhigh = 0.01\n', "needs low < high"),
    ('[grid]\nfolds = [1, 3]\n', "[grid] folds"),
    ('[grid]\nhidden = ["8", "0"]\n', "[grid] hidden"),
    ('[params.nosuch]\ntype = "int"\nlow = 1\nhigh = 2\n', "unknown config key 'nosuch'"),
    ('[params.lr]\ntype = "normal"\n', "type = 'normal'"),
    ("[params.lr\n", "not valid TOML"),
]


@pytest.mark.parametrize("body,expected", SPACE_CASES, ids=[c[1][:40] for c in SPACE_CASES])
def test_bad_space_file_stops_before_any_trial(scratch, capsys, body, expected):
    (scratch / "space.toml").write_text(SPACE_HEAD + body)
    before = folder_digest(scratch)
    code, err = run_main(["tune", "regress", "--space", "space.toml", "--out", "study", "--set",
                          "train_path=train.csv", "--trials", 1], capsys)
    assert_one_line_error(code, err, expected)
    assert "space.toml" in err
    assert folder_digest(scratch) == before


# ------------------------------------------------------------------ family: checkpoints on --resume
def _fake_run(folder: Path, checkpoint: bytes | None, marked: bool = True) -> None:
    from nndl.runs import write_marker

    folder.mkdir()
    if marked:
        write_marker(folder, "classify", state="training")
    cfg = config.to_dict(config.resolve("classify", "mlp", {"data": "nowhere"}))
    (folder / "config.json").write_text(__import__("json").dumps(cfg))
    if checkpoint is not None:
        (folder / "checkpoint.pt").write_bytes(checkpoint)


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("name,blob,expected", [
    ("truncated", _torch_bytes({"model": {"w": torch.zeros(100)}})[:200], "not a loadable checkpoint"),
    ("random", os.urandom(4096), "not a loadable checkpoint"),
    ("foreign", _torch_bytes({"weights": torch.zeros(3)}), "not an nndl training checkpoint"),
    ("empty", b"", "not a loadable checkpoint"),
])
def test_resume_refuses_a_broken_checkpoint_and_changes_nothing(scratch, capsys, name, blob, expected):
    _fake_run(scratch / "run", blob)
    before = folder_digest(scratch)
    code, err = run_main(["classify", "--resume", "run"], capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(scratch) == before


def test_resume_of_a_folder_nndl_did_not_make(scratch, capsys):
    _fake_run(scratch / "run", None, marked=False)
    code, err = run_main(["classify", "--resume", "run"], capsys)
    assert_one_line_error(code, err, "not an interrupted nndl run (no .nndl-run")


# ------------------------------------------------------------------ family: environment (disk full, export extra)
def test_file_size_limit_is_one_line(scratch):
    """`ulimit -f` (or a full disk): the write fails with one line; nothing of the user's is touched."""
    before = {k: v for k, v in folder_digest(scratch).items()}
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
            "from nndl.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "regress", "--train", "train.csv", "--test", "",
                           "--out", "run", "--set", "epochs=3", "--set", "hidden=256,256", "--no-progress"],
                          capture_output=True, text=True, cwd=scratch, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "File too large" in lines[0] and "ulimit" in lines[0]
    after = folder_digest(scratch)
    assert {k: v for k, v in after.items() if not k.startswith("run")} == before
    assert not any(k.endswith(".tmp") for k in after), "a failed write left a temporary file"
    assert not (scratch / "run").exists(), "the failed run's folder was left behind"


def test_ctrl_c_of_regress_leaves_no_half_folder(scratch):
    """Ctrl-C mid-training: exit 130 and no folder with only config.json and figures."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "nndl", "regress", "--train", "train.csv", "--test", "",
                             "--out", "run", "--set", "epochs=1000000", "--no-progress"], cwd=scratch,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=True)
    t0 = time.time()
    while not (scratch / "run/config.json").exists():  # the event: training has started
        assert proc.poll() is None and time.time() - t0 < 300, proc.stdout.read()
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode in INTERRUPTED_CODES and "interrupted" in output, output
    assert not (scratch / "run").exists()
    assert (scratch / "train.csv").read_text() == TRAIN_CSV


def test_onnx_export_without_onnx_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    from nndl import export as export_mod

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(NndlError, match=r"pip install 'nndl\[export\]'"):
        export_mod.export(tmp_path, fmt="onnx")


# ------------------------------------------------------------------ property-based fuzzing
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                  st.text(alphabet=",\"\n\r x-e.0123456789", max_size=6), st.sampled_from(["1e300", "-1e39", "", " "]))


@FUZZ
@given(rows=st.lists(st.lists(cells, min_size=1, max_size=4), min_size=0, max_size=6), header=st.booleans())
def test_fuzz_csv_reader_returns_float32_safe_values_or_one_error(tmp_path, rows, header):
    text = ("a,b,c,d\n" if header else "") + "\n".join(",".join(r) for r in rows)
    path = tmp_path / "fuzz.csv"
    path.write_text(text)
    try:
        values, names, _ = read_table(path)
    except NndlError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return
    assert len(set(names)) == len(names)
    assert np.isfinite(values.astype(np.float32)).all()


field_values = st.one_of(st.integers(-3, 10 ** 6), st.floats(allow_nan=True), st.booleans(), st.text(max_size=8),
                         st.lists(st.integers(-2, 300), max_size=4))


@FUZZ
@given(values=st.dictionaries(st.sampled_from(sorted(config.to_dict(config.RegressConfig()))), field_values,
                              max_size=4))
def test_fuzz_preset_values_give_a_valid_config_or_one_error(tmp_path, values):
    try:
        cfg = config.resolve("regress", None, values)
    except NndlError as e:
        assert "\n" not in str(e)
        return
    config.validate(cfg)  # whatever was accepted is a valid config


@FUZZ
@given(kind=st.sampled_from(["float", "log-float", "int", "log-int", "categorical", "bogus"]),
       low=field_values, high=field_values, key=st.sampled_from(["lr", "epochs", "hidden", "activation", "x"]))
def test_fuzz_space_files_load_or_fail_with_one_error(tmp_path, kind, low, high, key):
    import json

    def toml_value(v):
        return json.dumps(v) if not isinstance(v, float) or v == v and abs(v) != float("inf") else "nan"

    body = f'[params.{key}]\ntype = "{kind}"\n'
    body += f"choices = [{toml_value(low)}, {toml_value(high)}]\n" if kind == "categorical" else \
        f"low = {toml_value(low)}\nhigh = {toml_value(high)}\n"
    path = tmp_path / "space.toml"
    path.write_text(body)
    try:
        load_space(path, "regress")
    except NndlError as e:
        assert "\n" not in str(e) and str(path) in str(e)


# ------------------------------------------------------------------ family: noise around the one line
def test_library_warnings_never_precede_the_one_line_error(scratch, capsys, monkeypatch):
    import warnings

    def noisy(args):
        warnings.warn("overflow encountered in cast", RuntimeWarning)
        raise NndlError("data.csv: row 2: the real problem")

    monkeypatch.setattr(cli, "cmd_regress", noisy)
    code, err = run_main(["regress"], capsys)
    assert_one_line_error(code, err, "the real problem")


def test_warnings_of_a_successful_command_are_one_line_each(scratch, capsys, monkeypatch):
    import warnings

    def noisy(args):
        for _ in range(3):
            warnings.warn("something minor\nwith a second line", UserWarning)
        return 0

    monkeypatch.setattr(cli, "cmd_regress", noisy)
    code, err = run_main(["regress"], capsys)
    assert code == 0 and err.splitlines() == ["nndl: warning: UserWarning: something minor with a second line"]


def test_runs_restore_the_callers_thread_count(scratch):
    """threads=N is for the run; the user's process keeps its own torch thread count afterwards."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).frame
    iris.to_csv(scratch / "iris.csv", index=False)
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    nndl.classify(overrides={"data": "iris.csv", "label_col": "target", "threads": target, "epochs": 1,
                             "hidden": [8], "dropout": [0.0]}, out="c", progress=False, figures=False,
                  echo=lambda s: None)
    assert torch.get_num_threads() == before
    nndl.regress(train="train.csv", test="", overrides={"threads": target, "epochs": 2, "hidden": [4]}, out="r",
                 progress=False, figures=False, echo=lambda s: None)
    assert torch.get_num_threads() == before


def test_a_failed_run_leaves_no_half_folder(scratch, monkeypatch):
    """A run that fails after its folder was made (here: the model cannot be saved) removes that folder."""
    import nndl.regression as regression_mod

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device", "run/model.pt")

    monkeypatch.setattr(regression_mod, "save_model", broken_save)
    before = folder_digest(scratch)
    with pytest.raises(OSError):
        nndl.regress(train="train.csv", test="", overrides={"epochs": 2, "hidden": [4]}, out="run", progress=False,
                     figures=False, echo=lambda s: None)
    assert folder_digest(scratch) == before
