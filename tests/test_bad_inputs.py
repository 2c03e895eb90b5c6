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
from nndl import cli
from nndl.base import config
from nndl.data.regression_table import read_table
from nndl.base.errors import NndlError
from nndl.runfolder.files import RUN_MARKER, _protected_reason
from nndl.search import load_space
from nndl.tasks.regress.config import RegressConfig

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
    (["--seed", "18446744073709551616"], "'seed' = 18446744073709551616: must be in 0 .. 2**63 - 1"),
    (["--seed", "-1"], "'seed' = -1: must be in 0 .. 2**63 - 1"),
    (["--set", "seed=9223372036854775808"], "must be in 0 .. 2**63 - 1"),
    (["--set", "ensemble_top=2"], "'ensemble_top' = 2 does not apply: only search=auto"),
    (["--set", "group_col=x"], "'group_col' = 'x' does not apply: only splitter=cluster reads group labels"),
    (["--preset", "auto", "--set", "group_col=x"], "(splitter blocked)"),
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
    # a number that is not what its name says: early stopping without a validation split reported the
    # train loss as val_accuracy
    (["--set", "val_fraction=0", "--set", "patience=3"], "'patience' = 3: needs a validation split"),
    (["--preset", "fast", "--set", "patience=2"], "set val_fraction > 0"),
    (["--seed", "18446744073709551616"], "'seed' = 18446744073709551616: must be in 0 .. 2**63 - 1"),
    # one rate per hidden layer: the MLP cut a longer list and padded a shorter one with 0
    (["--set", "dropout=0.5"], "'dropout' = [0.5]: one rate per hidden layer, but hidden = [256, 128, 64] has 3"),
    (["--set", "hidden=64,64", "--set", "dropout=0.1,0.2,0.3"], "give 2 rates"),
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
        RegressConfig(**kwargs)


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
    from nndl.runfolder.files import write_marker

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

    from nndl.tools import export as export_mod

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
@given(values=st.dictionaries(st.sampled_from(sorted(config.to_dict(RegressConfig()))), field_values,
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
    import nndl.tasks.regress.task as regression_mod

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device", "run/model.pt")

    monkeypatch.setattr(regression_mod, "save_model", broken_save)
    before = folder_digest(scratch)
    with pytest.raises(OSError):
        nndl.regress(train="train.csv", test="", overrides={"epochs": 2, "hidden": [4]}, out="run", progress=False,
                     figures=False, echo=lambda s: None)
    assert folder_digest(scratch) == before


# ------------------------------------------------------------------ shared: small data sets and trained runs
def _write_idx(path: Path, array: np.ndarray) -> None:
    import struct

    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _grey_folder(root: Path, n: int = 8) -> Path:
    """Two classes of 8x8 grey PNGs (dark and light squares)."""
    from PIL import Image

    for c, level in (("dark", 40), ("light", 210)):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.full((8, 8), level, np.uint8)
            img[2:6, 2:6] = 255 - level
            Image.fromarray(img).save(root / c / f"{i}.png")
    return root


def _idx_folder(root: Path, n_test: int = 6) -> Path:
    """An IDX set of 8x8 images of two classes (n_test test images)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = np.arange(24) % 2
    images = (rng.random((24, 8, 8)) * 60 + labels[:, None, None] * 150).astype(np.uint8)
    for split, sl in (("train", slice(0, 18)), ("t10k", slice(18, 18 + n_test))):
        _write_idx(root / f"{split}-images-idx3-ubyte", images[sl])
        _write_idx(root / f"{split}-labels-idx1-ubyte", labels[sl])
    return root


def _table(path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{'yes' if a > b else 'no'}" for a, b in rng.random((30, 2))]
    path.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny finished runs to predict with and export: image folder, IDX, table classifiers and a regressor."""
    root = tmp_path_factory.mktemp("trained")
    (root / "train.csv").write_text(TRAIN_CSV)
    quiet = dict(progress=False, figures=False, echo=lambda s: None)
    small = {"epochs": 1, "hidden": [4], "dropout": [0.0], "val_fraction": 0.0}
    nndl.classify("mlp", {**small, "data": str(_grey_folder(root / "png_data")), "image_size": 8}, out=root / "image",
                  **quiet)
    nndl.classify("mlp", {**small, "data": str(_idx_folder(root / "idx_data"))}, out=root / "idx", **quiet)
    nndl.classify("mlp", {**small, "data": str(_table(root / "t.csv"))}, out=root / "table", **quiet)
    nndl.regress(train=str(root / "train.csv"), test="", overrides={"epochs": 2, "hidden": [4], "folds": 2},
                 out=root / "regress", **quiet)
    nndl.regress(train=str(root / "train.csv"), test="", overrides={"epochs": 2, "hidden": [4], "folds": 2,
                                                                     "standardize": True, "final": "ensemble"},
                 out=root / "regress_std", **quiet)
    return root


def _copy_run(trained, kind: str, scratch: Path) -> Path:
    import shutil

    return Path(shutil.copytree(trained / kind, scratch / kind))


def _an_input(kind: str, scratch: Path) -> Path:
    """A valid input file for predicting with a run of this kind."""
    if kind in ("image", "idx"):
        return _grey_folder(scratch / "inputs", n=1) / "light" / "0.png"
    if kind == "table":
        (scratch / "rows.csv").write_text("a,b\n0.5,0.2\n")
        return scratch / "rows.csv"
    (scratch / "x.csv").write_text("x\n0.5\n1.5\n")
    return scratch / "x.csv"


# ------------------------------------------------------------------ family: settings a dataset kind never reads
def _apply_data(scratch: Path, kind: str) -> str:
    if kind == "idx":
        return str(_idx_folder(scratch / "idx"))
    if kind == "image":
        return str(_grey_folder(scratch / "png"))
    if kind == "split":  # an image folder with its own train/test split
        _grey_folder(scratch / "split" / "train")
        return str(_grey_folder(scratch / "split" / "test", n=2).parent)
    return str(_table(scratch / "t.csv"))


APPLY_CASES = [
    ("idx", ["--set", "image_size=16"], "'image_size' = 16 does not apply to idx data (only to image_folder)"),
    ("idx", ["--set", "label_col=kind"], "'label_col' = 'kind' does not apply to idx data (only to csv_table)"),
    ("idx", ["--set", "test_fraction=0.3"], "'test_fraction' = 0.3 does not apply to idx data"),
    ("table", ["--set", "image_size=16"], "does not apply to csv_table data"),
    ("table", ["--set", "verify=false"],
     "'verify' = False does not apply to csv_table data (only to fashion_mnist, idx)"),
    ("image", ["--set", "label_col=kind"], "does not apply to image_folder data"),
    ("split", ["--set", "test_fraction=0.3"], "has its own test split"),
]


@pytest.mark.parametrize("kind,extra,expected", APPLY_CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in APPLY_CASES])
def test_dataset_settings_that_do_not_apply(scratch, capsys, kind, extra, expected):
    data = _apply_data(scratch, kind)
    before = folder_digest(scratch)
    code, err = run_main(["classify", "--data", data, "--out", "run", "--set", "epochs=1", "--no-progress", *extra],
                         capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(scratch) == before


@needs_fashion
@pytest.mark.parametrize("extra,expected", [(["--set", "image_size=64"], "does not apply to fashion_mnist data"),
                                            (["--label-col", "kind"], "'label_col' = 'kind' does not apply"),
                                            (["--set", "test_fraction=0.5"], "'test_fraction' = 0.5 does not apply")])
def test_fashion_mnist_refuses_settings_it_never_reads(scratch, capsys, extra, expected):
    before = folder_digest(scratch)
    code, err = run_main(["classify", "--data", FASHION_DIR, "--out", "run", *extra], capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(scratch) == before


# ------------------------------------------------------------------ family: inputs that crashed later
# (an empty test split, a damaged config.json, a first CSV row mixing numbers and text)
def _empty_test_folder(scratch: Path) -> str:
    _grey_folder(scratch / "photos" / "train")
    (scratch / "photos" / "test").mkdir()
    return "photos"


INPUT_CASES = [
    ("empty test/", lambda d: ["classify", "--data", _empty_test_folder(d)],
     "photos/test: no class folders with images"),
    ("IDX without test images", lambda d: ["classify", "--data", str(_idx_folder(d / "idx", n_test=0)),
                                           "--set", "val_fraction=0"], "the test set is empty"),
    ("typo in row 1 of a headerless CSV", lambda d: (d / "t.csv").write_text("0.5,1.2x\n1,2\n3,4\n5,6\n") and
     ["regress", "--train", "t.csv", "--test", ""], "t.csv: row 1, column 2: '1.2x' is not a number"),
    ("a number as a column name", lambda d: (d / "t.csv").write_text("x,2\n1,2\n3,4\n5,6\n") and
     ["regress", "--train", "t.csv", "--test", ""], "give every column a name that is not a number"),
    ("headerless table", lambda d: (d / "t.csv").write_text("5.1,3.5,setosa\n4.9,3.0,setosa\n") and
     ["classify", "--data", "t.csv"], "no header row (row 1 holds the number '5.1')"),
]


@pytest.mark.parametrize("name,argv,expected", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_inputs_that_used_to_crash_later(scratch, capsys, name, argv, expected):
    args = argv(scratch)
    before = folder_digest(scratch)
    code, err = run_main([*args, "--out", "run", "--set", "epochs=1", "--no-progress", "--no-figures"], capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(scratch) == before


@pytest.mark.parametrize("name,content,expected", [
    ("truncated", '{"model": "mlp", "epo', "config.json: not valid JSON"),
    ("binary", "\x00\x01\x02 garbage", "config.json: not valid JSON"),
    ("a list", "[1, 2, 3]", "config.json: not a config"),
    ("a wrong value", '{"epochs": "ten"}', "'epochs=ten: expected int"),
])
def test_resume_of_a_run_with_a_damaged_config(scratch, capsys, name, content, expected):
    _fake_run(scratch / "run", b"not used")
    (scratch / "run/config.json").write_text(content)
    before = folder_digest(scratch)
    code, err = run_main(["classify", "--resume", "run"], capsys)
    assert_one_line_error(code, err, expected.lstrip("'"))
    assert folder_digest(scratch) == before


def test_a_mixed_first_row_in_files_to_predict(scratch, capsys, trained):
    run = _copy_run(trained, "regress", scratch)
    (scratch / "x.csv").write_text("0.5x,1.0\n1.5,2.0\n")  # input and target by position, no header
    idx_run = _copy_run(trained, "idx", scratch)
    (scratch / "pixels.csv").write_text(",".join(["0"] * 63 + ["1x"]) + "\n" + ",".join(["0"] * 64) + "\n")
    before = folder_digest(scratch)
    for argv, expected in (([run, "x.csv"], "x.csv: row 1, column 1: '0.5x' is not a number"),
                           ([idx_run, "pixels.csv"], "pixels.csv: row 1, column 64: '1x' is not a number")):
        code, err = run_main(["predict", *argv], capsys)
        assert_one_line_error(code, err, expected)
    assert folder_digest(scratch) == before


# ------------------------------------------------------------------ family: model.pt with bad metadata (predict, export)
def _set(key, value):
    def change(payload):
        payload[key] = value
    return change


def _drop(key):
    def change(payload):
        payload.pop(key)
    return change


def _config(key, value):
    def change(payload):
        payload["config"][key] = value
    return change


MODEL_CASES = [
    ("image", "input_shape huge", _set("input_shape", [1, 100_000, 100_000]), "'input_shape' = [1, 100000, 100000]"),
    ("image", "input_shape negative", _set("input_shape", [1, -8, 8]), "whole numbers >= 1"),
    ("image", "input_shape text", _set("input_shape", ["one", 8, 8]), "'input_shape' = ['one', 8, 8]"),
    ("image", "input_shape of 2 dims", _set("input_shape", [8, 8]), "(channels, height, width) or (features,)"),
    ("image", "input_shape a wrong size", _set("input_shape", [1, 16, 16]), "weights do not fit"),
    ("image", "class_names not strings", _set("class_names", [1, 2]),
     "'class_names' = [1, 2]: expected a list of names"),
    ("image", "class_names a string", _set("class_names", "ab"), "expected a list of names"),
    ("image", "class_names one", _set("class_names", ["dark"]), "expected at least 2 names"),
    ("image", "class_names three", _set("class_names", ["a", "b", "c"]), "weights do not fit"),
    ("image", "class_names missing", _drop("class_names"), "'class_names' = None: missing"),
    ("image", "mean of 2 channels", _set("mean", [0.1, 0.2]), "'mean' = [0.1, 0.2]: expected 1 finite numbers"),
    ("image", "std 0", _set("std", [0.0]), "'std' = [0.0]: expected 1 finite numbers > 0"),
    ("image", "mean text", _set("mean", ["x"]), "'mean' = ['x']"),
    ("image", "dataset unknown", _set("dataset", "nosuch"), "'dataset' = 'nosuch': expected one of"),
    ("image", "weights not tensors", _set("state_dicts", [{"layers.0.weight": "text"}]),
     "expected a list of state dicts"),
    ("image", "config hidden huge", _config("hidden", [10 ** 9]), "weights do not fit"),
    ("image", "config epochs text", _config("epochs", "ten"), "its saved config: --set epochs=ten: expected int"),
    ("table", "feature_names not strings", _set("feature_names", [1, 2]), "'feature_names' = [1, 2]"),
    ("table", "feature_names too few", _set("feature_names", ["a"]), "expected 2 names, found 1"),
    ("regress", "in_features huge", _set("in_features", 10 ** 12), "'in_features' = 1000000000000"),
    ("regress", "in_features negative", _set("in_features", -3), "'in_features' = -3"),
    ("regress", "in_features text", _set("in_features", "two"), "expected a whole number"),
    ("regress", "in_features wrong", _set("in_features", 3), "expected 3 names, found 1"),
    ("regress", "x_names not strings", _set("x_names", [1]), "'x_names' = [1]"),
    ("regress", "y_name a list", _set("y_name", ["y"]), "'y_name' = ['y']: expected a name"),
    ("regress", "interval text", _set("interval", {"noise_var": "x", "spread_scale": 1.0, "level": 0.9}),
     "'interval' = "),
    ("regress", "fold weights not dicts", _set("fold_state_dicts", [5]), "'fold_state_dicts' = [5]"),
    ("regress_std", "member_configs text", _set("member_configs", "x"), "'member_configs' = 'x'"),
    ("regress_std", "statistics missing", lambda p: p["state_dicts"][0].pop("x_mean"), "no input/target statistics"),
]


@pytest.mark.parametrize("kind,name,change,expected", MODEL_CASES, ids=[f"{c[0]}: {c[1]}" for c in MODEL_CASES])
def test_model_file_with_bad_metadata_is_one_line_for_predict_and_export(scratch, capsys, trained, kind, name,
                                                                        change, expected):
    run = _copy_run(trained, kind, scratch)
    payload = torch.load(run / "model.pt", weights_only=True)
    change(payload)
    torch.save(payload, run / "model.pt")
    sample = _an_input(kind, scratch)
    before = folder_digest(scratch)
    for argv in (["predict", run, sample], ["export", run, "--format", "torchscript"]):
        code, err = run_main(argv, capsys)
        assert_one_line_error(code, err, expected)
        assert "model.pt" in err
    assert folder_digest(scratch) == before


# ------------------------------------------------------------------ family: images whose pixels have no scale
def _deep_image(kind: str, path: Path) -> Path:
    from PIL import Image

    values = {"32-bit integer TIFF": np.full((8, 8), 70000, np.int32), "float TIFF in 0..255": np.full((8, 8), 200.0,
                                                                                                        np.float32),
              "float TIFF with NaN": np.full((8, 8), np.nan, np.float32)}[kind]
    Image.fromarray(values).save(path)
    return path


PIXEL_CASES = [("32-bit integer TIFF", "32-bit integer pixels have no agreed scale"),
               ("float TIFF in 0..255", "float pixels from 200 to 200; nndl reads a float image as 0..1"),
               ("float TIFF with NaN", "float pixels from nan to nan")]


@pytest.mark.parametrize("style", ["image", "idx"])
@pytest.mark.parametrize("kind,expected", PIXEL_CASES, ids=[c[0] for c in PIXEL_CASES])
def test_predict_refuses_pixels_without_a_scale(scratch, capsys, trained, style, kind, expected):
    run = _copy_run(trained, style, scratch)
    image = _deep_image(kind, scratch / "odd.tif")
    before = folder_digest(scratch)
    code, err = run_main(["predict", run, image], capsys)
    assert_one_line_error(code, err, f"odd.tif: {expected}")
    assert folder_digest(scratch) == before


@pytest.mark.parametrize("kind,expected", PIXEL_CASES, ids=[c[0] for c in PIXEL_CASES])
def test_training_refuses_pixels_without_a_scale(scratch, capsys, kind, expected):
    _deep_image(kind, _grey_folder(scratch / "photos") / "light" / "odd.tif")
    before = folder_digest(scratch)
    code, err = run_main(["classify", "--data", "photos", "--out", "run", "--set", "image_size=8"], capsys)
    assert_one_line_error(code, err, f"odd.tif: {expected}")
    assert folder_digest(scratch) == before


# ------------------------------------------------------------------ family: the Python API's wrong types
def _predict(*args, **kwargs):
    from nndl.tools.predict import predict

    return predict(*args, **{"echo": None, **kwargs})


def _export(*args, **kwargs):
    from nndl.tools.export import export

    return export(*args, **kwargs)


def _damaged(name: str, text: str):
    """A copy of the regression run with one of its files replaced by ``text``; returns the folder."""
    def make(trained, scratch):
        run = _copy_run(trained, "regress", scratch)
        (run / name).write_text(text)
        return run
    return make


REG = dict(train="train.csv", test="", out="run", progress=False, figures=False, echo=lambda s: None)
API_CASES = [  # (name, call(trained, scratch), the text the one line must contain)
    ("regress overrides=5", lambda t, d: nndl.regress(overrides=5, **REG), "overrides = 5: give a dict"),
    ("regress overrides='epochs=2'", lambda t, d: nndl.regress(overrides="epochs=2", **REG), "overrides = 'epochs=2'"),
    ("regress overrides=[1, 2]", lambda t, d: nndl.regress(overrides=[1, 2], **REG),
     "overrides: 1 is not a 'key=value'"),
    ("regress overrides={1: 2}", lambda t, d: nndl.regress(overrides={1: 2}, **REG), "key 1 is not a config key name"),
    ("regress preset=5", lambda t, d: nndl.regress(preset=5, **REG), "preset = 5: expected a name or a path"),
    ("regress out=5", lambda t, d: nndl.regress(**{**REG, "out": 5}), "out = 5: expected a path"),
    ("regress seed=2**70", lambda t, d: nndl.regress(seed=2 ** 70, **REG), "'seed' = 1180591620717411303424"),
    ("regress echo=5", lambda t, d: nndl.regress(**{**REG, "echo": 5}), "echo = 5: expected a function"),
    ("classify overrides=5", lambda t, d: nndl.classify(overrides=5, out="run"), "overrides = 5"),
    ("classify preset=5", lambda t, d: nndl.classify(preset=5, out="run"), "preset = 5"),
    ("classify resume=5", lambda t, d: nndl.classify(resume=5), "resume = 5: expected a path"),
    ("classify data=5", lambda t, d: nndl.classify(overrides={"data": "x"}, data=5, out="run"), "data = 5: expected"),
    ("classify seed=-1", lambda t, d: nndl.classify(overrides={"data": "nowhere"}, seed=-1), "'seed' = -1"),
    ("tune task=5", lambda t, d: nndl.tune(5), "unknown task 5"),
    ("tune trials='3'", lambda t, d: nndl.tune("regress", trials="3", out="study"), "trials = '3': expected int"),
    ("tune workers=1.5", lambda t, d: nndl.tune("regress", workers=1.5, out="study"), "workers = 1.5: expected int"),
    ("tune space=5", lambda t, d: nndl.tune("regress", space=5, out="study"), "space = 5: expected a path"),
    ("tune options=5", lambda t, d: nndl.tune("regress", options=5), "options = 5: expected nndl.search.TuneOptions"),
    ("tune out=5", lambda t, d: nndl.tune("regress", out=5), "out = 5"),
    ("tune seed=2**64", lambda t, d: nndl.tune("regress", seed=2 ** 64, out="study", trials=1), "'seed' = "),
    ("load_run(5)", lambda t, d: nndl.load_run(5), "path = 5: expected a path"),
    ("load_run(None)", lambda t, d: nndl.load_run(None), "give the folder of a regress/classify/tune run"),
    ("Run.metrics of damaged JSON", lambda t, d: nndl.load_run(_damaged("metrics.json", "{oops")(t, d)).metrics,
     "metrics.json: not valid JSON"),
    ("Run.metrics of a JSON list", lambda t, d: nndl.load_run(_damaged("metrics.json", "[1]")(t, d))["test_mse"],
     "metrics.json: holds a JSON list"),
    ("Run.config of binary bytes", lambda t, d: nndl.load_run(_damaged("config.json", "\x00\x01")(t, d)).config,
     "config.json: not valid JSON"),
    ("Run.history of a damaged CSV", lambda t, d: nndl.load_run(_damaged("history.csv", "epoch\nabc\n")(t, d)).history,
     "history.csv: not a history.csv nndl wrote"),
    ("predict run_dir=5", lambda t, d: _predict(5, ["x.csv"]), "run_dir = 5: expected a path"),
    ("predict files=5", lambda t, d: _predict(_copy_run(t, "regress", d), 5), "files = 5: expected a path or a list"),
    ("predict files=[5]", lambda t, d: _predict(_copy_run(t, "regress", d), [5]), "files[0] = 5"),
    ("predict out=5", lambda t, d: _predict(_copy_run(t, "regress", d), ["train.csv"], out=5), "out = 5"),
    ("export run_dir=5", lambda t, d: _export(5), "run_dir = 5"),
    ("export fmt=['onnx']", lambda t, d: _export(_copy_run(t, "regress", d), fmt=["onnx"]), "--format ['onnx']"),
    ("export out=5", lambda t, d: _export(_copy_run(t, "regress", d), fmt="torchscript", out=5), "out = 5"),
]


@pytest.mark.parametrize("name,call,expected", API_CASES, ids=[c[0] for c in API_CASES])
def test_python_api_wrong_types_are_one_line(scratch, trained, name, call, expected):
    before = folder_digest(scratch)
    with pytest.raises(NndlError) as err:
        call(trained, scratch)
    message = str(err.value)
    assert expected in message and "\n" not in message, message
    after = folder_digest(scratch)
    assert {k: v for k, v in after.items() if k.split("/")[0] != "regress"} == before  # a copied run aside


def test_a_single_path_is_one_file_to_predict(scratch, trained):
    run = _copy_run(trained, "regress", scratch)
    (scratch / "x.csv").write_text("x\n0.5\n")
    assert len(_predict(run, "x.csv")) == 1  # not one file per character of the name


def test_a_misspelt_keyword_is_a_type_error(scratch):
    """Python's own convention: an unknown keyword argument is a TypeError naming it (editors and linters flag it,
    and ``help()`` shows the real names); nndl keeps it, and adds no other exception types."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'epochs'"):
        nndl.regress(epochs=5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nosuch'"):
        nndl.tune("regress", nosuch=1)
