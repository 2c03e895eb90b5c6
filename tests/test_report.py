"""report.html and `nndl compare`: contents, embedded images, escaping, and a real browser check."""
import base64
import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

import nndl
from nndl.base.errors import NndlError
from nndl.data.regression_table import bundled_path
from nndl.runfolder.report import compare, compare_table, condense, write_report

from conftest import FASHION_DIR, ROOT, needs_fashion, run_cli

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARTIFACTS = ROOT / "test-artifacts"
EVIL = "<script>alert(1)</script>"
TRAIN, TEST = str(bundled_path("regression_train.csv")), str(bundled_path("regression_test.csv"))
quiet = lambda s: None  # noqa: E731


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "reg"
    nndl.regress(TRAIN, TEST, overrides={"epochs": 30}, out=str(out), progress=False, echo=quiet)
    write_report(out)
    return out


@pytest.fixture(scope="module")
def reg_run2(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "reg2"
    nndl.regress(TRAIN, TEST, overrides={"epochs": 20, "lr": 0.01, "activation": "tanh"}, out=str(out), progress=False,
                 figures=False, echo=quiet)
    return out


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST Debian package (dataset-fashion-mnist) not installed")
    out = tmp_path_factory.mktemp("report") / "cls"
    nndl.classify(overrides={"subset": 1500, "epochs": 2, "test_subset": 500, "model": "cnn"}, out=str(out),
                  progress=False, figures=True, echo=quiet)
    write_report(out)
    return out


SPACE = """preset = "seed"
[fixed]
epochs = 40
[params.lr]
type = "log-float"
low = 1e-4
high = 1e-1
[params.hidden]
type = "categorical"
choices = ["32", "64,64", "128,128", "128,256"]
[params.activation]
type = "categorical"
choices = ["sigmoid", "tanh", "relu", "gelu"]
[params.weight_decay]
type = "log-float"
low = 1e-7
high = 1e-2
"""


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """A real 6-trial study, its figures drawn by nndl.figures.study (the style the report is made for)."""
    optuna = pytest.importorskip("optuna")
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from nndl.figures.study import write_study_figures

    root = tmp_path_factory.mktemp("report")
    (root / "space.toml").write_text(SPACE)
    out = root / "study"
    summary = nndl.tune("regress", root / "space.toml", sampler="random", trials=6, folds=3, out=out, echo=quiet)
    st = optuna.load_study(study_name=summary["study"],
                           storage=JournalStorage(JournalFileBackend(str(out / "journal.log"))))
    for old in (out / "figures").glob("*.png"):
        old.unlink()
    assert write_study_figures(st, out / "figures", metric=summary["metric"], folds=summary["folds"]) == {}
    write_report(out)
    return out


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory):
    """Run folders written by hand (no training): a CNN and an MLP classifier, and an SGD regression,
    each with the marker a run writes (it records how the task wants the folder shown)."""
    from nndl.base import config as config_mod
    from nndl.runfolder.files import write_marker
    from nndl.tasks import get_task

    root = tmp_path_factory.mktemp("report")
    folders = {}
    for name, task, changes, metrics in (
            ("cnn", "classify", {"model": "cnn"}, {"test_accuracy": 0.9, "epochs": 1}),
            ("mlp", "classify", {"model": "mlp", "optimizer": "sgd", "momentum": 0.0}, {"test_accuracy": 0.8}),
            ("sgd", "regress", {"optimizer": "sgd", "schedule": "cosine"}, {"test_mse": 0.5})):
        folder = root / name
        folder.mkdir()
        cfg = {**config_mod.to_dict(config_mod.TASK_CONFIGS[task]()), **changes}
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "metrics.json").write_text(json.dumps({**metrics, "device": "cpu"}))
        write_marker(folder, "run", view=get_task(task).view())
        folders[name] = folder
    return folders


def section(text: str, anchor: str) -> str:
    return text.split(f'<section id="{anchor}">', 1)[1].split("</section>", 1)[0]


def table_keys(html_text: str) -> list[str]:
    """The first column of the key/value tables in ``html_text`` (badges stripped)."""
    return [re.sub(r"<[^>]+>.*", "", k) for k in re.findall(r'<td class="key">(.*?)</td>', html_text)]


def figure_captions(text: str) -> dict[str, str]:
    """File name -> caption text of every embedded figure."""
    out = {}
    for fig in re.findall(r"<figure[^>]*>(.*?)</figure>", text, re.S):
        if "<img" in fig:
            m = re.search(r"<figcaption>(?:<b>(.*?)</b> — )?(.*?)</figcaption>", fig, re.S)
            assert m, fig[-300:]
            out[m.group(1) or re.search(r'alt="([^"]*)"', fig).group(1)] = m.group(2)
    return out


def img_sources(text: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)


def assert_images_decode(text: str) -> int:
    """Every <img> is a base64 PNG data URI that Pillow opens; returns how many."""
    sources = img_sources(text)
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:60]
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        im.verify()
        assert im.format == "PNG" and im.size[0] > 50 and im.size[1] > 50
    return len(sources)


def assert_self_contained(text: str) -> None:
    assert "<script" not in text.lower()
    for attr in re.findall(r'\s(?:src|href)="([^"]*)"', text):  # nothing fetched from anywhere
        assert attr.startswith(("data:", "#", "best/report.html", "file://")), attr[:80]
    assert "http://" not in text and "https://" not in text


# ----------------------------------------------------------------------------- report contents
def test_regression_report_sections(reg_run):
    text = (reg_run / "report.html").read_text()
    assert_self_contained(text)
    for anchor in ("metrics", "figures", "history", "config", "environment"):
        assert f'<section id="{anchor}">' in text
    assert "<h1>" in text and "regression" in text and "reg</h1>" in text
    assert "Test MSE" in text and "Per fold" in text  # summary card + per-fold table
    metrics = json.loads((reg_run / "metrics.json").read_text())
    assert f"{metrics['test_mse']:.4g}" in text
    env = json.loads((reg_run / "environment.json").read_text())
    assert env["torch"] in text and (env["git_commit"] or "") in text
    assert ">seed<" in text
    n = assert_images_decode(text)
    assert n == len(list((reg_run / "figures").glob("*.png"))) == 4
    # 30 epochs x 5 folds + refit = 180 rows: condensed, and it says so
    assert "showing every" in text and "history.csv" in text


@needs_fashion
def test_classification_report_sections(cls_run):
    text = (cls_run / "report.html").read_text()
    assert_self_contained(text)
    for anchor in ("metrics", "figures", "history", "config", "environment"):
        assert f'<section id="{anchor}">' in text
    assert "Test accuracy" in text and "Per-class test accuracy" in text
    for name in ("T-shirt/top", "Trouser", "Ankle boot"):
        assert name in text
    assert text.count('class="bar"') == 10
    n = assert_images_decode(text)
    assert n == len(list((cls_run / "figures").glob("*.png"))) >= 5
    assert "confusion_matrix.png" in text


def test_condense_keeps_last_row_per_group():
    rows = [{"fold": f, "epoch": e} for f in (1, 2, "refit") for e in range(1, 101)]
    shown, step = condense(rows, "fold", max_rows=30)
    assert step == 10
    for f in (1, 2, "refit"):
        epochs = [r["epoch"] for r in shown if r["fold"] == f]
        assert epochs[0] == 1 and epochs[-1] == 100
    assert condense(rows[:10], "fold")[1] == 1


def test_html_escaping(reg_run, tmp_path):
    evil = tmp_path / "evil<b onmouseover=alert(1)>run"
    shutil.copytree(reg_run, evil)
    cfg = json.loads((evil / "config.json").read_text())
    cfg["train_path"] = EVIL
    (evil / "config.json").write_text(json.dumps(cfg))
    metrics = json.loads((evil / "metrics.json").read_text())
    metrics["per_class_accuracy"] = {EVIL: 0.5, 'quote" onload="x': 0.25}
    metrics["stop_reason"] = EVIL
    (evil / "metrics.json").write_text(json.dumps(metrics))
    shutil.copy(evil / "figures" / "fit.png", evil / "figures" / "<img src=x onerror=alert(1)>.png")
    text = write_report(evil).read_text()
    assert EVIL not in text and "<b onmouseover" not in text and "<img src=x" not in text
    assert 'quote" onload' not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "evil&lt;b onmouseover=alert(1)&gt;run" in text
    assert "<script" not in text.lower()
    assert assert_images_decode(text) == 5


def test_study_report(reg_run, tmp_path):
    study = tmp_path / "study"
    (study / "figures").mkdir(parents=True)
    shutil.copytree(reg_run, study / "best")
    shutil.copy(reg_run / "figures" / "losses.png", study / "figures" / "history.png")
    rows = [{"number": 0, "state": "COMPLETE", "value": 2.5, "params_lr": 0.01, "fail_reason": ""},
            {"number": 1, "state": "COMPLETE", "value": 1.5, "params_lr": 0.02, "fail_reason": ""},
            {"number": 2, "state": "FAIL", "value": "", "params_lr": 9.0, "fail_reason": "loss is NaN " + EVIL}]
    with open(study / "trials.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (study / "study.json").write_text(json.dumps({
        "study": "regress-space", "task": "regress", "direction": "minimize", "metric": "val_mse", "trials": 3,
        "counts": {"COMPLETE": 2, "FAIL": 1}, "best": {"number": 1, "value": 1.5, "params": {"lr": 0.02}},
        "ok": True, "warnings": [], "best_run": {"dir": "best", "test_mse": 2.0}}))
    text = write_report(study).read_text()
    assert_self_contained(text)
    assert "tuning study" in text and "Best val_mse" in text
    assert '<section id="trials">' in text and '<section id="figures">' in text
    assert text.count('<tr class="best">') == 1
    best_row = text.split('<tr class="best">')[1].split("</tr>")[0]
    assert ">1<" in best_row and "1.5" in best_row
    assert "best.params.lr" in text and 'href="best/report.html"' in text
    assert EVIL not in text and "loss is NaN &lt;script&gt;" in text
    assert assert_images_decode(text) == 1


def test_not_a_run_folder(tmp_path):
    with pytest.raises(NndlError, match="not an nndl run"):
        write_report(tmp_path)
    with pytest.raises(NndlError, match="no such folder"):
        write_report(tmp_path / "missing")


# ----------------------------------------------------------------------------- compare
def test_compare_table_and_html(reg_run, reg_run2, tmp_path):
    names, rows = compare_table([reg_run, reg_run2])
    assert names == ["reg", "reg2"]
    config_keys = {k for s, k, _ in rows if s == "config"}
    assert config_keys == {"lr", "epochs", "activation"}  # only what differs
    metric_keys = {k for s, k, _ in rows if s == "metric"}
    assert {"test_mse", "val_mse", "train_mse"} <= metric_keys
    lines = []
    out = compare([reg_run, reg_run2], out=tmp_path / "cmp" / "compare.html", echo=lines.append)
    table = "\n".join(lines)
    assert "config: lr" in table and "0.02" in table and "0.01" in table and "metric: test_mse" in table
    text = out.read_text()
    assert "Config differences" in text and "activation" in text and "tanh" in text
    assert assert_images_decode(text) == 1
    with pytest.raises(NndlError, match="at least two"):
        compare([reg_run], out=tmp_path / "x.html", echo=None)


def test_cli_report_and_compare(reg_run, reg_run2, tmp_path):
    (reg_run / "report.html").unlink()
    proc = run_cli("report", reg_run, check=0)
    assert proc.stdout.strip() == str(reg_run / "report.html") and (reg_run / "report.html").exists()
    proc = run_cli("compare", reg_run, reg_run2, "--out", tmp_path / "c.html", check=0)
    assert "config: activation" in proc.stdout and (tmp_path / "c.html").exists()
    proc = run_cli("report", tmp_path, check=2)
    assert proc.stderr.startswith("nndl: error:") and len(proc.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- what a reader sees
def test_no_literal_empty_quotes(reg_run, study_run, fake_runs):
    for folder in (reg_run, study_run, fake_runs["cnn"]):
        text = write_report(folder).read_text()
        assert '""' not in re.sub(r"<style>.*?</style>", "", text, flags=re.S), folder
    cfg = section((reg_run / "report.html").read_text(), "config")
    assert re.search(r'<td class="key">y_col</td><td class="val">–</td>', cfg)
    history = section((reg_run / "report.html").read_text(), "history")
    assert "eval_seconds" not in history or "<td>–</td>" in history or ">–<" in history


@pytest.mark.parametrize("name, hidden, shown", [
    ("cnn", {"momentum", "nesterov", "hidden", "dropout", "activation", "init", "min_lr_factor", "amp"},
     {"channels", "lr", "optimizer", "model"}),
    ("mlp", {"channels", "nesterov", "min_lr_factor", "amp"}, {"hidden", "dropout", "momentum", "activation"}),
    ("sgd", {"ensemble_top", "group_col", "block_col"}, {"momentum", "nesterov", "min_lr_factor", "hidden"}),
])
def test_config_lists_only_what_the_run_used(fake_runs, name, hidden, shown):
    text = write_report(fake_runs[name]).read_text()
    cfg = section(text, "config")
    keys = set(table_keys(cfg))
    assert not keys & hidden, keys & hidden
    assert shown <= keys
    note = cfg.split("Not used by this run", 1)[1] if hidden else ""
    assert all(f"<code>{k}</code> (" in note for k in hidden)  # and it says what it left out, and why
    assert bool(note) == bool(hidden)
    config = json.loads((fake_runs[name] / "config.json").read_text())
    assert keys | hidden == set(config)  # config.json keeps everything


def test_regression_report_leaves_out_sgd_settings_under_adam(reg_run):
    keys = set(table_keys(section((reg_run / "report.html").read_text(), "config")))
    assert {"lr", "hidden", "folds"} <= keys and not {"momentum", "nesterov"} & keys


def test_every_report_kind_has_captions_and_versions(reg_run, study_run, fake_runs, tmp_path):
    import torch

    compare_page = compare([reg_run, study_run], out=tmp_path / "c.html", echo=None)
    pages = {"regression": reg_run / "report.html", "study": study_run / "report.html",
             "classification": write_report(fake_runs["cnn"]), "compare": compare_page}
    for kind, page in pages.items():
        text = page.read_text()
        env = section(text, "environment")
        assert torch.__version__ in env and nndl.__version__ in env, kind
        for name, caption in figure_captions(text).items():
            words = re.sub(r"<[^>]+>", "", caption)
            assert len(words) > 30 and words.rstrip().endswith("."), (kind, name, words)
    study = (study_run / "report.html").read_text()
    captions = figure_captions(study)
    assert set(captions) == {"history.png", "importances.png", "slices.png", "parallel_coordinate.png"}
    assert all("val MSE (3-fold mean)" in c for c in captions.values())
    assert "Caution: only 6 completed trials" in captions["importances.png"]
    assert "best/environment.json" in section(study, "environment")
    assert "These runs record no environment" not in compare_page.read_text()


def test_trial_table_aligns_each_column_one_way(study_run):
    trials = section((study_run / "report.html").read_text(), "trials").split("</table>", 1)[0]
    header = re.findall(r"<th>(.*?)</th>", trials)
    rows = [re.findall(r'<td( class="num")?>([^<]*)</td>', r) for r in re.findall(r"<tr[^>]*>(.*?)</tr>", trials)]
    rows = [r for r in rows if r]
    col = header.index("params_hidden")
    hidden = {r[col][1] for r in rows}
    aligned = {bool(r[col][0]) for r in rows}
    assert len(aligned) == 1  # one alignment per column
    if any("," in h for h in hidden):  # "32" and "64,64" in one column: text, so all left-aligned
        assert aligned == {False}
    assert {bool(r[header.index("value")][0]) for r in rows} == {True}


def test_layout_leaves_no_card_beside_an_empty_slot(reg_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reg_run, run)
    figs = run / "figures"
    # a narrow figure followed by a wide one (first_layer.png before feature_maps.png in a CNN run)
    Image.new("RGB", (600, 600), "white").save(figs / "first_layer.png")
    Image.new("RGB", (1400, 500), "white").save(figs / "feature_maps.png")
    text = write_report(run).read_text()
    classes = re.findall(r'<figure( class="[^"]*")?>.*?alt="([^"]+)"', text, re.S)
    layout = {name: cls for cls, name in classes}
    assert layout["first_layer.png"] == ' class="full solo"' and layout["feature_maps.png"] == ' class="full"'
    # every row is full, or a pair of half-width cards
    halves = [name for cls, name in classes if not cls]
    assert len(halves) % 2 == 0


def test_a_folder_from_before_the_view_was_recorded_gets_its_task_from_its_config(fake_runs, tmp_path):
    """No marker (older nndl): the task comes from the config's keys, the cards are the first metrics,
    and runs of different tasks are still refused by compare."""
    from nndl.runfolder.report import detect_task

    old = {}
    for name in ("cnn", "sgd"):
        old[name] = tmp_path / name
        shutil.copytree(fake_runs[name], old[name])
        (old[name] / ".nndl-run").unlink()
    assert detect_task(old["cnn"]) == "classify" and detect_task(old["sgd"]) == "regress"
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd/metrics.json").write_text('{"score": 1}')
    assert detect_task(tmp_path / "odd") == "run"
    text = write_report(old["cnn"]).read_text()
    assert re.search(r'test accuracy</div><div class="value">0.9<', text)
    with pytest.raises(NndlError, match="cnn is a classify run, sgd is a regress run"):
        compare([old["cnn"], old["sgd"]], out=tmp_path / "x.html", echo=None)


def test_compare_refuses_mixed_kinds(reg_run, fake_runs, tmp_path):
    with pytest.raises(NndlError, match="reg is a regression run, cnn is a classification run"):
        compare([reg_run, fake_runs["cnn"]], out=tmp_path / "x.html", echo=None)
    proc = run_cli("compare", reg_run, fake_runs["cnn"], "--out", tmp_path / "c.html", check=2)
    assert len(proc.stderr.strip().splitlines()) == 1 and "not comparable" in proc.stderr
    assert not (tmp_path / "c.html").exists() and proc.stdout == ""


def test_compare_a_study_by_its_best_run(reg_run, study_run, tmp_path):
    names, rows = compare_table([study_run, reg_run])
    assert names == ["study (best)", "reg"]
    metrics = {k: v for s, k, v in rows if s == "metric"}
    assert all(v is not None for v in metrics["test_mse"])  # no column of dashes
    lines = []
    page = compare([study_run, reg_run], out=tmp_path / "c.html", echo=lines.append).read_text()
    assert "compared by its retrained best run" in lines[0] and "compared by its retrained best run" in page
    assert assert_images_decode(page) == 1


@needs_fashion
def test_resume_of_a_finished_run_changes_nothing(cls_run):
    def state():
        return {str(p.relative_to(cls_run)): (p.read_bytes(), p.stat().st_mtime_ns)
                for p in sorted(cls_run.rglob("*")) if p.is_file()}

    before = state()
    proc = run_cli("classify", "--resume", cls_run, check=0)
    assert "already complete" in proc.stdout and "nothing changed" in proc.stdout
    assert state() == before


# ----------------------------------------------------------------------------- figure contents
@pytest.fixture
def kept(monkeypatch):
    """Figures that ``nndl.figures.common.save`` would have written, kept open (drawn) by file name."""
    import matplotlib.pyplot as plt

    from nndl.figures import common

    figures = {}

    def keep(fig, path, tight=True):
        fig.canvas.draw()
        figures[Path(path).name] = fig
        return Path(path)

    monkeypatch.setattr(common, "save", keep)
    yield figures
    for fig in figures.values():
        plt.close(fig)


def _texts(fig) -> list[str]:
    out = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]
    return [t for t in out if t]


def _overlaps(texts) -> list[tuple[str, str]]:
    """Pairs of visible text objects whose drawn boxes intersect."""
    boxes = [(t.get_text(), t.get_window_extent()) for t in texts if t.get_text() and t.get_visible()]
    return [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:] if ba.overlaps(bb)]


def test_loss_curves_log_axis_reads_in_plain_numbers(tmp_path, monkeypatch, kept):
    from nndl.figures import common

    figures = kept
    histories = [[{"epoch": e, "train_loss": 2.2 + 28 / e ** 2, "val_loss": 2.4 + 27 / e ** 2} for e in range(1, 51)]]
    common.loss_curves(histories, tmp_path / "losses.png", "t")
    ax = figures["losses.png"].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert ax.get_yscale() == "log" and {"3", "5", "10", "20"} <= set(labels), labels
    assert not any("\\times" in t or "$" in t or "×" in t for t in labels)
    common.loss_curves([[{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2}]], tmp_path / "one.png", "t")
    assert [t.get_text() for t in figures["one.png"].axes[0].get_xticklabels()] == ["1"]


def test_activation_profiles_label_rows_with_input_values(tmp_path, monkeypatch, kept):
    import numpy as np
    import torch

    from nndl.figures import regression as rf
    from nndl.nn.models import MLP

    figures = kept
    monkeypatch.setattr(rf, "save", lambda fig, path, tight=True: figures.setdefault(Path(path).name, fig))
    torch.manual_seed(0)
    probes = np.array([[0.5, -1.25], [2.0, 3.0]], np.float32)
    rf.activation_profiles(MLP(2, [6, 4], 1, "tanh", 0.0, "default"), probes, tmp_path / "a.png",
                           x_names=["temp", "pressure"])
    fig = figures["a.png"]
    fig.canvas.draw()
    heat = [ax for ax in fig.axes if ax.get_xlabel() == "hidden unit"]
    assert len(heat) == 2
    for ax in heat:
        assert [t.get_text() for t in ax.get_yticklabels()] == ["temp=0.5, pressure=-1.25", "temp=2, pressure=3"]
    assert _texts(fig).count("activation") == 2  # one axis label per row of panels: the colour bars have none
    assert not _overlaps([t for ax in fig.axes for t in (ax.yaxis.label, ax.title)])


def _toy_study(n_trials: int):
    optuna = pytest.importorskip("optuna")
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "weight_decay": FloatDistribution(1e-7, 1e-2, log=True),
             "hidden": CategoricalDistribution(["32", "64,64", "128,128", "128,256,256", "512,512,512"])}
    study = optuna.create_study(direction="minimize")
    rng = __import__("random").Random(0)
    for i in range(n_trials):
        params = {"lr": 10 ** rng.uniform(-4, -1), "weight_decay": 10 ** rng.uniform(-7, -2),
                  "hidden": rng.choice(dists["hidden"].choices)}
        value = abs(__import__("math").log10(params["lr"]) + 2) + 0.1 * rng.random()
        state = optuna.trial.TrialState.FAIL if i == 3 else optuna.trial.TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, state=state,
                                                  value=None if i == 3 else value))
    return study


@pytest.mark.parametrize("n_trials", [8, 25])
def test_study_figures_in_nndl_style(tmp_path, monkeypatch, kept, n_trials):
    from nndl.figures.study import write_study_figures

    figures = kept
    notes = write_study_figures(_toy_study(n_trials), tmp_path, metric="val_mse", folds=5)
    assert notes == {} and set(figures) == {"history.png", "importances.png", "slices.png",
                                            "parallel_coordinate.png"}
    label = "val MSE (5-fold mean)"
    for name, fig in figures.items():
        texts = _texts(fig)
        assert not any("Objective" in t for t in texts), name
        assert any(label in t for t in texts), name
    history = figures["history.png"].axes[0]
    assert history.get_ylabel() == label and any("did not complete (1" in t for t in _texts(figures["history.png"]))
    caution = [t for t in _texts(figures["importances.png"]) if t.startswith("Caution")]
    assert bool(caution) == (n_trials - 1 < 20)
    slices = figures["slices.png"]
    lr_ax = next(ax for ax in slices.axes if ax.get_xlabel().startswith("lr"))
    lr_ticks = [t.get_text() for t in lr_ax.get_xticklabels() if t.get_text()]
    assert lr_ax.get_xscale() == "log" and {"0.001", "0.01"} <= set(lr_ticks), lr_ticks
    wd_ax = next(ax for ax in slices.axes if ax.get_xlabel().startswith("weight_decay"))
    assert all(re.fullmatch(r"1e-\d", t.get_text()) for t in wd_ax.get_xticklabels() if t.get_text())
    cat_ax = next(ax for ax in slices.axes if ax.get_xlabel() == "hidden")
    assert [t.get_text() for t in cat_ax.get_xticklabels()][:2] == ["32", "64,64"]
    for ax in slices.axes:  # categorical and log tick labels do not collide
        assert not _overlaps(ax.get_xticklabels()), ax.get_xlabel()
    parallel = figures["parallel_coordinate.png"].axes[0]
    assert not _overlaps(parallel.texts) and not _overlaps(parallel.get_xticklabels())


# ----------------------------------------------------------------------------- a real browser
# Runs first in <head>: records script errors, failed resources and console.error calls, then, on load,
# writes what it saw (and whether every image decoded) as attributes of <body>, which --dump-dom prints.
PROBE_JS = """<script>(function () {
  var errors = 0;
  window.addEventListener('error', function () { errors += 1; }, true);
  var original = console.error;
  console.error = function () { errors += 1; return original.apply(console, arguments); };
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
    var body = document.body;
    body.setAttribute('data-images', imgs.length);
    body.setAttribute('data-broken', broken.length);
    body.setAttribute('data-errors', errors);
    body.setAttribute('data-overflow', document.documentElement.scrollWidth > window.innerWidth ? 'yes' : 'no');
  });
})();</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with console messages logged to stderr (``...:CONSOLE...`` lines)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--window-size=1280,2000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def console_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def browser_check(page: Path, tmp_path: Path) -> dict[str, str]:
    """Open a copy of ``page`` with the probe; return the attributes it set on <body>, plus the number of
    console messages Chromium logged (``console``)."""
    probe = tmp_path / f"probe-{page.parent.name}-{page.stem}.html"
    probe.write_text(page.read_text().replace("<head>", "<head>" + PROBE_JS, 1))
    proc = chromium(tmp_path, "--dump-dom", probe.as_uri())
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body, f"chromium printed no DOM (rc {proc.returncode}): {proc.stderr[-1500:]}"
    state = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert "images" in state, f"the probe did not run: {body.group(0)[:300]}"
    state["console"] = str(len(console_lines(proc)))
    return state


@pytest.mark.skipif(CHROMIUM is None, reason="headless browser check needs Chromium (Debian package `chromium`)")
def test_every_report_kind_in_chromium(reg_run, reg_run2, study_run, tmp_path, request):
    # A negative control first: the probe must notice a broken image and a console error.
    bad = tmp_path / "bad" / "report.html"
    bad.parent.mkdir()
    bad.write_text('<!DOCTYPE html><html><head><script>console.error("x")</script></head>'
                   '<body><img src="data:image/png;base64,AAAA"></body></html>')
    state = browser_check(bad, tmp_path)
    assert state["broken"] == "1" and int(state["errors"]) >= 1 and state["console"] != "0", state

    pages = {"regression": (reg_run / "report.html", len(list((reg_run / "figures").glob("*.png")))),
             "study": (study_run / "report.html", len(list((study_run / "figures").glob("*.png")))),
             "compare": (compare([reg_run, reg_run2], out=tmp_path / "cmp" / "compare.html", echo=None), 1)}
    if (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        cls = request.getfixturevalue("cls_run")
        pages["classification"] = (cls / "report.html", len(list((cls / "figures").glob("*.png"))))
    ARTIFACTS.mkdir(exist_ok=True)
    for kind, (page, n_images) in pages.items():
        state = browser_check(page, tmp_path)
        assert n_images > 0
        assert state == {"images": str(n_images), "broken": "0", "errors": "0", "overflow": "no",
                         "console": "0"}, (kind, state)
        # The page as shipped (no probe): no console message either, and a screenshot for humans in
        # test-artifacts/ (report.png is the classification report when there is one).
        name = "report.png" if kind == "classification" else f"report-{kind}.png"
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        proc = chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
        assert shot.exists(), proc.stderr[-1500:]
        assert console_lines(proc) == [], (kind, console_lines(proc))
        im = Image.open(shot)
        assert im.size == (1280, 2000)
        assert len(set(im.convert("L").resize((64, 100)).tobytes())) > 20  # not a blank page
        shutil.copy(page, ARTIFACTS / name.replace(".png", ".html"))


def test_figures_keep_nndl_style_after_another_library_changes_it(tmp_path, monkeypatch, kept):
    import matplotlib.pyplot as plt

    from nndl.figures import common
    from nndl.figures.study import write_study_figures

    figures = kept
    with plt.style.context("ggplot"):  # what each of Optuna's own matplotlib plots does, process-wide
        common.loss_curves([[{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}]], tmp_path / "l.png",
                           "t")
        write_study_figures(_toy_study(5), tmp_path, metric="val_mse", folds=3)
    for name, fig in figures.items():
        assert fig.axes[0].get_facecolor()[:3] == (1.0, 1.0, 1.0), name  # white, not ggplot's grey
