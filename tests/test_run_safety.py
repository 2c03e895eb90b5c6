"""Nothing a user made is lost at any moment: interrupts, --overwrite, markers, outputs, atomic writes.

Table-driven like ``tests/test_bad_inputs.py`` (whose ``scratch`` folder, ``folder_digest`` and
``assert_one_line_error`` are reused): every refused case exits 2 with one ``nndl: error:`` line and
leaves the user's folder byte-identical. The interrupt cases send a real SIGINT (or SIGKILL) at one
moment of a small real run -- in this process at named events (a training epoch, the test, the
save, a figure, the report), and in a child process when a file appears -- and accept exactly three
outcomes: the run completed; the run is resumable as the message says (the test runs that command
and checks the run completes with the numbers of an uninterrupted run); or the folder is exactly as
before (with ``--overwrite``: the old run byte-identical). Families and counts are listed in
docs/reliability.md.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nndl
from nndl import cli
from nndl.training.callbacks import Callback

from conftest import INTERRUPTED_CODES, ROOT
from test_bad_inputs import FAST, TRAIN_CSV, assert_one_line_error, folder_digest, run_main, scratch  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = dict(progress=False, echo=lambda s: None)
REGRESS = ["regress", "--train", "train.csv", "--test", "", "--no-progress"]
CLASSIFY = ["classify", "--data", "imgs", "--set", "hidden=8", "--set", "image_size=12", "--no-progress"]
# The cnn needs images of at least 12x12: found when the model is built, after the run folder exists.
CNN_TOO_SMALL = ["classify", "--data", "imgs", "--model", "cnn", "--set", "image_size=8", "--no-progress"]
# The command the interrupt message names as the next step ("continue with: nndl classify --resume R").
NEXT_STEP = re.compile(r"with: nndl ((?:classify --resume|report) \S+?)(?:\s\(|;|$)")
TIMING_COLUMNS = {"seconds", "eval_seconds"}


def write_images(root: Path) -> None:
    """Two classes of 12x12 grey images (dark and light noise): a classify run in a second."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["dark", "light"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(30):
            pixels = rng.integers(0, 100, (12, 12)) + 120 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")


@pytest.fixture
def user(scratch):
    """The scratch folder plus an image folder, so both tasks run from it."""
    write_images(scratch / "imgs")
    return scratch


def nndl_process(args, cwd: Path, fsize: int | None = None) -> subprocess.Popen:
    """``nndl ARGS`` in a child with the default SIGINT (a terminal's) and, optionally, a file-size limit."""
    code = ("import resource, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            + (f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize})); " if fsize else "")
            + "from nndl.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})


def run_limited(args, cwd: Path, fsize: int) -> tuple[int, str]:
    proc = nndl_process(args, cwd, fsize)
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def marker(folder: Path) -> dict:
    return json.loads((folder / ".nndl-run").read_text())


def history_without_timings(folder: Path) -> list[dict]:
    from nndl.runfolder.files import read_history_csv

    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in read_history_csv(folder / "history.csv")]


def assert_complete(folder: Path, reference: Path | None = None) -> None:
    """A finished run: every file there, the marker says so and, when given, the numbers of ``reference``."""
    for name in ("config.json", "history.csv", "model.pt", "metrics.json", "environment.json", "report.html"):
        assert (folder / name).is_file(), f"{folder}/{name} missing"
    assert marker(folder)["state"] == "complete"
    assert not list(folder.rglob("*.tmp"))
    if reference is not None:
        got, want = (json.loads((f / "metrics.json").read_text()) for f in (folder, reference))
        for key in ("test_accuracy", "test_loss", "val_accuracy", "epochs", "test_mse", "val_mse"):
            assert got.get(key) == want.get(key), key
        assert history_without_timings(folder) == history_without_timings(reference)


def settle(code: int, err: str, user: Path, before: dict, target: Path, reference: Path | None,
           old: tuple[Path, dict] | None = None) -> str:
    """Check that an interrupted run ended in one of the three allowed outcomes; follow its message.

    Returns the outcome: "completed", "resumed" (the named ``--resume`` completed the run),
    "reported" (the run's results were complete; the named ``nndl report`` wrote its report) or
    "as before" (nothing was kept: the user's folder is byte-identical).
    """
    assert "Traceback" not in err, err
    if code == 0:
        assert_complete(target, reference)
        return "completed"
    if old is not None:  # an interrupted --overwrite never touches the old run
        assert folder_digest(old[0]) == old[1], "the old run changed"
    if code == -signal.SIGKILL:  # no message: whatever is left must be resumable or recognisably unfinished
        return settle_killed(user, before, target, reference, old)
    assert code in INTERRUPTED_CODES, err
    line = [line for line in err.splitlines() if line.strip()][-1]
    assert line.startswith("nndl: interrupted"), line
    if "nothing was kept" in line:
        assert folder_digest(user) == before, line
        return "as before"
    if "after the run was complete" in line:  # the signal came while the summary was printed
        assert_complete(target, reference)
        return "completed"
    step = NEXT_STEP.search(line)
    assert step, f"no next step in: {line}"
    argv = step.group(1).split()
    assert cli.main(argv) == 0, line
    folder = Path(argv[-1])
    if argv[0] == "report":
        for name in ("config.json", "model.pt", "metrics.json", "report.html"):
            assert (folder / name).is_file(), name
        return "reported"
    assert_complete(folder, reference)
    return "resumed"


def settle_killed(user: Path, before: dict, target: Path, reference: Path | None, old) -> str:
    """After SIGKILL: a classify run resumes to the uninterrupted numbers; a regress run is marked unfinished
    and ``--overwrite`` replaces it; with --overwrite, the old run is intact (checked by the caller)."""
    left = [p for p in (target, *target.parent.glob(f"{target.name}.nndl-new*")) if p.is_dir()
            and (old is None or p != old[0])]
    if not left:
        assert folder_digest(user) == before
        return "as before"
    folder = left[0]
    if marker(folder)["state"] == "complete":
        assert_complete(folder, reference)
        return "completed"
    if (folder / "config.json").is_file() and json.loads((folder / "config.json").read_text()).get("dataset"):
        assert cli.main(["classify", "--resume", str(folder)]) == 0
        assert_complete(folder, reference)
        return "resumed"
    assert cli.main([*REGRESS, *FAST, "--out", str(folder), "--overwrite"]) == 0
    assert_complete(folder)
    return "replaced"


# ------------------------------------------------------------------ runs the cases start from
@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Finished runs made once: two regressions, a classification on images, and the references of the
    interrupt cases (the same settings, uninterrupted)."""
    root = tmp_path_factory.mktemp("made")
    (root / "train.csv").write_text(TRAIN_CSV)
    write_images(root / "imgs")
    old = Path.cwd()
    os.chdir(root)
    try:
        for name, seed in (("reg", 0), ("reg2", 1)):
            nndl.regress("train.csv", "", overrides={"epochs": 3, "hidden": [4]}, seed=seed, out=name, **QUIET)
        nndl.regress("train.csv", "", overrides=REGRESS_SETTINGS, out="ref-regress", **QUIET)
        for name, epochs in (("cls", 2), ("ref-classify", CLASSIFY_EPOCHS), ("ref-classify-long", 300)):
            nndl.classify(overrides={"data": "imgs", "hidden": [8], "image_size": 12, "epochs": epochs}, out=name,
                          **QUIET)
    finally:
        os.chdir(old)
    return root


def copy_in(made: Path, user: Path, *names: str) -> None:
    for name in names:
        shutil.copytree(made / name, user / name, symlinks=True)


# ------------------------------------------------------------------ family: interrupts at named moments (in process)
REGRESS_SETTINGS = {"epochs": 6, "hidden": [4], "final": "refit"}
CLASSIFY_EPOCHS = 4


class SignalAt(Callback):
    """Sends this process a real SIGINT at one training event (as a Ctrl-C there would)."""

    def __init__(self, event: str, epoch: int = 1, fold=None):
        self.event, self.epoch, self.fold = event, epoch, fold

    def _maybe(self, event: str, state) -> None:
        if event == self.event and state.epoch == self.epoch and (self.fold is None or state.fold == self.fold):
            os.kill(os.getpid(), signal.SIGINT)

    def on_batch_end(self, state, step, loss):
        self._maybe("batch", state)

    def on_epoch_end(self, state, logs):
        self._maybe("epoch_end", state)

    def on_train_end(self, state, result):
        self._maybe("train_end", state)


def signal_on_call(monkeypatch, owner, name: str, nth: int = 1) -> None:
    """Patch ``owner.name`` to send SIGINT on its ``nth`` call, then do its work."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


def at_moment(monkeypatch, moment: str) -> None:
    """Arrange a SIGINT at ``moment`` of the next run."""
    import matplotlib.figure

    import nndl.training.callbacks as callbacks
    import nndl.tasks.classify.task as classification
    import nndl.tasks.regress.task as regression
    import nndl.runfolder.report as report
    import nndl.runfolder.files as runs

    events = {"first batch": SignalAt("batch", 1), "epoch 2 end": SignalAt("epoch_end", 2),
              "training end": SignalAt("train_end", CLASSIFY_EPOCHS), "fold 1 epoch 2": SignalAt("epoch_end", 2, 1),
              "refit": SignalAt("batch", 1, "refit")}
    if moment in events:
        original = callbacks.for_run
        monkeypatch.setattr(callbacks, "for_run", lambda cbs, tb=False: original(cbs, tb).add(events[moment]))
    elif moment == "testing":
        signal_on_call(monkeypatch, classification.ClassificationTask, "test")
        signal_on_call(monkeypatch, regression.RegressionTask, "test")
    elif moment == "saving":  # inside the writes of history.csv, model.pt and metrics.json
        signal_on_call(monkeypatch, classification, "save_model")
        signal_on_call(monkeypatch, regression, "save_model")
    elif moment == "environment":
        signal_on_call(monkeypatch, runs, "environment")
    elif moment == "second figure":
        signal_on_call(monkeypatch, matplotlib.figure.Figure, "savefig", nth=2)
    elif moment == "report":
        signal_on_call(monkeypatch, report, "render_report")
    else:
        raise AssertionError(moment)


def main_in_process(argv, capsys) -> tuple[int, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except KeyboardInterrupt:  # must never reach the caller: pytest would stop the session
        pytest.fail("a KeyboardInterrupt escaped nndl.cli.main")
    return code, capsys.readouterr().err


CLASSIFY_MOMENTS = ["first batch", "epoch 2 end", "training end", "testing", "saving", "environment",
                    "second figure", "report"]
REGRESS_MOMENTS = ["fold 1 epoch 2", "refit", "testing", "saving", "environment", "second figure", "report"]
SETTINGS_ARGS = [x for k, v in REGRESS_SETTINGS.items()
                 for x in ("--set", f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")]
NAMED_CASES = ([("classify", m, False) for m in CLASSIFY_MOMENTS] + [("classify", m, True) for m in CLASSIFY_MOMENTS]
               + [("regress", m, False) for m in REGRESS_MOMENTS] + [("regress", m, True) for m in REGRESS_MOMENTS])


@pytest.mark.parametrize("task,moment,overwrite", NAMED_CASES,
                         ids=[f"{t}-{m}{'-overwrite' if o else ''}".replace(" ", "_") for t, m, o in NAMED_CASES])
def test_ctrl_c_at_a_named_moment(made, user, capsys, task, moment, overwrite):
    copy_in(made, user, "reg" if task == "regress" else "cls")
    old = user / ("reg" if task == "regress" else "cls")
    target = old if overwrite else user / "run"
    argv = [*REGRESS, *SETTINGS_ARGS] if task == "regress" else [*CLASSIFY, "--set", f"epochs={CLASSIFY_EPOCHS}"]
    argv += ["--out", target] + (["--overwrite"] if overwrite else [])
    before, old_before = folder_digest(user), folder_digest(old)
    with pytest.MonkeyPatch.context() as patch:
        at_moment(patch, moment)
        code, err = main_in_process(argv, capsys)
    reference = made / ("ref-regress" if task == "regress" else "ref-classify")
    outcome = settle(code, err, user, before, target, reference, (old, old_before) if overwrite else None)
    # which outcome each moment must have: training of a regression (no checkpoint) keeps nothing;
    # a classification keeps its checkpoint; once the results are written the run is kept whatever the task
    if task == "regress" and moment in ("fold 1 epoch 2", "refit", "testing"):
        assert outcome == "as before", err
    elif task == "classify" and moment not in ("second figure", "report"):
        assert outcome == "resumed", err
    else:
        assert outcome in ("resumed", "reported"), err


def test_ctrl_c_of_a_run_under_runs_leaves_no_empty_runs_folder(made, user, capsys):
    before = folder_digest(user)
    with pytest.MonkeyPatch.context() as patch:
        at_moment(patch, "fold 1 epoch 2")
        code, err = main_in_process([*REGRESS, *SETTINGS_ARGS, "--no-figures"], capsys)
    assert code in INTERRUPTED_CODES and "nothing was kept" in err, err
    assert folder_digest(user) == before and not (user / "runs").exists()


# ------------------------------------------------------------------ family: real signals at any moment (child process)
REAL_CASES = [
    # (task, signal, the file whose appearance is the moment, --overwrite)
    ("classify", signal.SIGINT, "config.json", False),
    ("classify", signal.SIGINT, "checkpoint.pt", False),
    ("classify", signal.SIGINT, "metrics.json", False),
    ("classify", signal.SIGINT, "figures/*.png", True),
    ("classify", signal.SIGKILL, "config.json", False),
    ("classify", signal.SIGKILL, "checkpoint.pt", True),
    ("classify", signal.SIGKILL, "model.pt", False),
    ("regress", signal.SIGINT, "config.json", True),
    ("regress", signal.SIGINT, "model.pt", True),
    ("regress", signal.SIGINT, "figures/*.png", False),
    ("regress", signal.SIGKILL, "config.json", True),
    ("regress", signal.SIGKILL, "metrics.json", False),
]


@pytest.mark.parametrize("task,sig,moment,overwrite", REAL_CASES,
                         ids=[f"{t}-{s.name}-{m}{'-overwrite' if o else ''}" for t, s, m, o in REAL_CASES])
def test_a_real_signal_when_a_file_appears(made, user, task, sig, moment, overwrite):
    """The signal is sent when the file appears (in the new run folder, or beside the old run for
    --overwrite); the run carries on for a while after, so the moments spread over the run."""
    copy_in(made, user, "reg" if task == "regress" else "cls")
    old = user / ("reg" if task == "regress" else "cls")
    target = old if overwrite else user / "run"
    argv = ([*REGRESS, "--set", "epochs=2000", "--set", "hidden=8"] if task == "regress"
            else [*CLASSIFY, "--set", "epochs=300"])
    argv += ["--out", target] + (["--overwrite"] if overwrite else [])
    before, old_before = folder_digest(user), folder_digest(old)
    proc = nndl_process(argv, user)
    watched = [user / "run"] if not overwrite else None
    t0 = time.monotonic()
    while proc.poll() is None:
        folders = watched or [p for p in user.glob(f"{old.name}.nndl-new*") if p.is_dir()]
        if any(list(f.glob(moment)) for f in folders):
            break
        assert time.monotonic() - t0 < 600, "the moment never came"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)
    reference = None
    if task == "classify":
        reference = made / "ref-classify-long"
    settle(proc.returncode, err, user, before, target, reference, (old, old_before) if overwrite else None)


# ------------------------------------------------------------------ family: --overwrite builds beside and swaps
def test_overwrite_that_fails_on_a_file_size_limit_leaves_the_old_run(made, user):
    copy_in(made, user, "reg")
    before = folder_digest(user)
    code, err = run_limited([*REGRESS, "--set", "epochs=3", "--set", "hidden=256,256", "--out", "reg",
                             "--overwrite"], user, fsize=20000)
    assert_one_line_error(code, err, "File too large")
    assert "model.pt" in err
    assert folder_digest(user) == before


def test_overwrite_that_fails_at_the_report_leaves_the_old_run(made, user):
    copy_in(made, user, "reg")
    before = folder_digest(user)
    code, err = run_limited([*REGRESS, "--set", "epochs=3", "--set", "hidden=4", "--out", "reg", "--overwrite"],
                            user, fsize=200_000)
    assert_one_line_error(code, err, "File too large")
    assert folder_digest(user) == before


def test_overwrite_that_fails_in_training_leaves_the_old_run(made, user, capsys):
    copy_in(made, user, "cls")
    before = folder_digest(user)
    code, err = run_main([*CNN_TOO_SMALL, "--out", "cls", "--overwrite"], capsys)
    assert_one_line_error(code, err, "cnn")
    assert folder_digest(user) == before


def test_overwrite_replaces_the_old_run_and_leaves_nothing_beside(made, user, capsys):
    copy_in(made, user, "reg")
    code, err = run_main([*REGRESS, *FAST, "--seed", "5", "--out", "reg", "--overwrite"], capsys)
    assert code == 0, err
    assert_complete(user / "reg")
    assert json.loads((user / "reg/config.json").read_text())["seed"] == 5
    assert sorted(p.name for p in user.iterdir()) == ["imgs", "mine", "notes.txt", "reg", "train.csv"]
    report = (user / "reg/report.html").read_text()
    assert "nndl-new" not in report  # the report names the run's own folder, not where it was built


# ------------------------------------------------------------------ family: markers
def _forged(folder: Path, text: str | None) -> None:
    if text is None:
        (folder / ".nndl-run").mkdir()
    else:
        (folder / ".nndl-run").write_text(text)


MARKER_CASES = [
    # (what the user's folder "mine" holds besides thesis.tex, the expected line)
    ("an empty marker", lambda f: _forged(f, ""), "thesis.tex"),
    ("an old plain-text marker", lambda f: _forged(f, "regress folder written by nndl; nndl --overwrite may replace "
                                                      "it\n"), "thesis.tex"),
    ("a JSON marker naming no files", lambda f: _forged(f, json.dumps({"format": "nndl-run-v2", "kind": "regress",
                                                                       "state": "complete", "files": {}})),
     "thesis.tex"),
    ("a marker that is a folder", lambda f: _forged(f, None), "thesis.tex"),
    ("a marker of random bytes", lambda f: (f / ".nndl-run").write_bytes(os.urandom(64)), "thesis.tex"),
]


@pytest.mark.parametrize("name,forge,expected", MARKER_CASES, ids=[c[0] for c in MARKER_CASES])
def test_overwrite_refuses_a_folder_with_a_forged_marker(user, capsys, name, forge, expected):
    forge(user / "mine")
    before = folder_digest(user)
    code, err = run_main([*REGRESS, *FAST, "--out", "mine", "--overwrite"], capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(user) == before


def _extra_file(run: Path) -> None:
    (run / "thesis.tex").write_text("\\documentclass{article}\n")


def _edited(run: Path) -> None:
    with open(run / "config.json", "a") as fh:
        fh.write(" ")


def _link(run: Path) -> None:
    (run / "figures/elsewhere").symlink_to(run.parent / "notes.txt")


def _old_marker(run: Path) -> None:
    (run / ".nndl-run").write_text("regress folder written by nndl; nndl --overwrite may replace it\n")


def _study(run: Path) -> None:
    from nndl.runfolder.files import write_marker

    write_marker(run, "study")


RUN_CHANGES = [
    ("a file nndl did not write", _extra_file, "thesis.tex"),
    ("a file edited since nndl wrote it", _edited, "config.json"),
    ("a symlink nndl did not write", _link, "elsewhere"),
    ("a real run with an old marker", _old_marker, "older nndl"),
    ("a study folder", _study, "study"),
]


@pytest.mark.parametrize("name,change,expected", RUN_CHANGES, ids=[c[0] for c in RUN_CHANGES])
def test_overwrite_refuses_a_run_holding_what_nndl_did_not_write(made, user, capsys, name, change, expected):
    copy_in(made, user, "reg")
    change(user / "reg")
    before = folder_digest(user)
    code, err = run_main([*REGRESS, *FAST, "--out", "reg", "--overwrite"], capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(user) == before


def test_the_marker_lists_every_file_with_its_hash(made):
    import hashlib

    run = made / "reg"
    files = marker(run)["files"]
    on_disk = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and p.name != ".nndl-run"}
    assert set(files) == on_disk
    for rel, entry in files.items():
        data = (run / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_exports_and_reports_written_into_a_run_keep_it_replaceable(made, user, capsys):
    copy_in(made, user, "reg")
    assert run_main(["export", "reg", "--format", "torchscript"], capsys)[0] == 0
    assert run_main(["report", "reg"], capsys)[0] == 0
    assert "model.torchscript.pt" in marker(user / "reg")["files"]
    code, err = run_main([*REGRESS, *FAST, "--out", "reg", "--overwrite"], capsys)
    assert code == 0, err


# ------------------------------------------------------------------ family: an output over an input or a run's files
def _links(user: Path) -> None:
    (user / "link.pt").symlink_to(user / "reg/model.pt")
    os.link(user / "reg/model.pt", user / "hard.pt")
    (user / "inputs.csv").write_text("x\n0.1\n0.5\n")
    (user / "link.csv").symlink_to(user / "inputs.csv")
    os.link(user / "inputs.csv", user / "hard.csv")
    shutil.copy(user / "imgs/dark/0.png", user / "img.png")


OUTPUT_CASES = [
    ("export torchscript over model.pt", ["export", "reg", "--format", "torchscript", "--out", "reg/model.pt"]),
    ("export onnx over model.pt", ["export", "reg", "--out", "reg/model.pt"]),
    ("export over config.json", ["export", "reg", "--format", "torchscript", "--out", "reg/config.json"]),
    ("export over the model.pt it was given", ["export", "reg/model.pt", "--format", "torchscript", "--out",
                                               "reg/model.pt"]),
    ("export through a symlink to model.pt", ["export", "reg", "--format", "torchscript", "--out", "link.pt"]),
    ("export over a hard link of model.pt", ["export", "reg", "--format", "torchscript", "--out", "hard.pt"]),
    ("export by another path to model.pt", ["export", "reg", "--format", "torchscript", "--out",
                                            "reg/figures/../model.pt"]),
    ("predict over its input image", ["predict", "cls", "img.png", "--out", "img.png"]),
    ("predict over its input csv", ["predict", "reg", "inputs.csv", "--out", "inputs.csv"]),
    ("predict through a symlink to its input", ["predict", "reg", "inputs.csv", "--out", "link.csv"]),
    ("predict over a hard link of its input", ["predict", "reg", "inputs.csv", "--out", "hard.csv"]),
    ("predict over model.pt", ["predict", "reg", "inputs.csv", "--out", "reg/model.pt"]),
    ("predict over metrics.json", ["predict", "reg", "inputs.csv", "--out", "reg/metrics.json"]),
    ("predict over a figure", ["predict", "cls", "img.png", "--out", "cls/figures/losses.png"]),
    ("compare over A/model.pt", ["compare", "reg", "reg2", "--out", "reg/model.pt"]),
    ("compare over B/report.html", ["compare", "reg", "reg2", "--out", "reg2/report.html"]),
    ("compare over A/history.csv", ["compare", "reg", "reg2", "--out", "reg/history.csv"]),
    ("compare over the marker", ["compare", "reg", "reg2", "--out", "reg/.nndl-run"]),
]


@pytest.mark.parametrize("name,argv", OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES])
def test_an_output_never_replaces_an_input_or_a_file_of_a_run(made, user, capsys, name, argv):
    copy_in(made, user, "reg", "reg2", "cls")
    _links(user)
    before = folder_digest(user)
    code, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "--out")
    assert folder_digest(user) == before


def test_outputs_beside_the_inputs_still_work(made, user, capsys):
    copy_in(made, user, "reg", "reg2", "cls")
    _links(user)
    for argv in (["export", "reg", "--format", "torchscript"], ["export", "reg", "--out", "reg/other.onnx"],
                 ["predict", "reg", "inputs.csv", "--out", "pred.csv"], ["predict", "cls", "img.png", "--out",
                                                                           "cls/pred.txt"],
                 ["compare", "reg", "reg2", "--out", "reg/compare.html"]):
        code, err = run_main(argv, capsys)
        assert code == 0, (argv, err)


# ------------------------------------------------------------------ family: atomic writes under a file-size limit
def _many_rows(user: Path) -> None:
    (user / "inputs.csv").write_text("x\n" + "".join(f"{i / 1000:.3f}\n" for i in range(2000)))
    (user / "pred.csv").write_text("the user's earlier predictions\n")


ATOMIC_CASES = [
    ("predict over an existing file", ["predict", "reg", "inputs.csv", "--out", "pred.csv"], 1024, "pred.csv"),
    ("predict to a new file", ["predict", "reg", "inputs.csv", "--out", "new.csv"], 1024, "new.csv"),
    ("predict --json", ["predict", "reg", "inputs.csv", "--json", "--out", "new.json"], 4096, "new.json"),
    ("export torchscript", ["export", "reg", "--format", "torchscript", "--out", "m.ts"], 10240, "m.ts"),
    ("export onnx", ["export", "reg", "--out", "m.onnx"], 200, "m.onnx"),
    ("export into the run", ["export", "reg", "--format", "torchscript"], 10240, "model.torchscript.pt"),
    ("compare", ["compare", "reg", "reg2", "--out", "c.html"], 10240, "c.html"),
    ("report", ["report", "reg"], 10240, "report.html"),
]


@pytest.mark.parametrize("name,argv,fsize,named", ATOMIC_CASES, ids=[c[0] for c in ATOMIC_CASES])
def test_a_write_cut_by_a_file_size_limit_leaves_no_partial_file(made, user, name, argv, fsize, named):
    copy_in(made, user, "reg", "reg2")
    _many_rows(user)
    before = folder_digest(user)
    code, err = run_limited(argv, user, fsize)
    assert_one_line_error(code, err, "File too large")
    assert named in err
    assert folder_digest(user) == before


# ------------------------------------------------------------------ family: silent ignores
def test_an_error_after_the_folder_is_made_leaves_no_empty_runs_folder(user, capsys):
    before = folder_digest(user)
    code, err = run_main(CNN_TOO_SMALL, capsys)
    assert_one_line_error(code, err, "cnn")
    assert folder_digest(user) == before and not (user / "runs").exists()


# The marker grows as files land (it lists each with its size, beside the run's view), so the
# smallest limit stops the marker itself and a 3 KiB one is first reached by model.pt.
@pytest.mark.parametrize("fsize,hidden,named", [(1024, "4", ".nndl-run"), (3072, "4", "model.pt"),
                                                (4096, "64,64", "model.pt"),
                                                (51200, "4", "figures/losses.png"), (150_000, "4", "report.html")])
def test_every_file_size_error_names_its_file(user, fsize, hidden, named):
    before = folder_digest(user)
    code, err = run_limited([*REGRESS, "--set", "epochs=3", "--set", f"hidden={hidden}", "--out", "run"], user, fsize)
    assert_one_line_error(code, err, f"nndl: error: run/{named}: File too large")
    assert folder_digest(user) == before


@pytest.mark.parametrize("extra,expected", [
    (["--out", "other"], "--out"),
    (["--overwrite"], "--overwrite"),
    (["--out", "cls", "--overwrite"], "--out"),
])
def test_resume_refuses_options_it_cannot_honour(made, user, capsys, extra, expected):
    copy_in(made, user, "cls")
    before = folder_digest(user)
    code, err = run_main(["classify", "--resume", "cls", *extra], capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(user) == before


def test_resume_refuses_a_folder_nndl_did_not_make(user, capsys):
    (user / "mine/config.json").write_text("{}")
    before = folder_digest(user)
    code, err = run_main(["classify", "--resume", "mine"], capsys)
    assert_one_line_error(code, err, "mine")
    assert folder_digest(user) == before
