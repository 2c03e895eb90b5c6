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
from nndl.errors import NndlError
from nndl.data.regression import bundled_path
from nndl.report import compare, compare_table, condense, write_report

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


# ----------------------------------------------------------------------------- a real browser
CHECK_JS = """<script>window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-images', imgs.length);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  document.body.setAttribute('data-broken', broken.length);
  document.body.setAttribute('data-overflow', document.documentElement.scrollWidth > window.innerWidth ? 'yes' : 'no');
});</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,2000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def browser_check(report: Path, tmp_path: Path) -> dict[str, str]:
    """Open a copy of ``report`` with a probe script; return the attributes it set on <body>."""
    probe = tmp_path / f"probe-{report.parent.name}.html"
    probe.write_text(report.read_text().replace("</body>", CHECK_JS + "</body>"))
    proc = chromium(tmp_path, "--dump-dom", probe.as_uri())
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body, f"chromium printed no DOM (rc {proc.returncode}): {proc.stderr[-1500:]}"
    return dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="headless browser check needs Chromium (Debian package `chromium`)")
def test_report_in_chromium(reg_run, tmp_path, request):
    # A negative control first: the probe must notice a broken image.
    bad = tmp_path / "bad" / "report.html"
    bad.parent.mkdir()
    bad.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA"></body></html>')
    assert browser_check(bad, tmp_path)["broken"] == "1"

    runs = [reg_run]
    if (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        runs.append(request.getfixturevalue("cls_run"))
    ARTIFACTS.mkdir(exist_ok=True)
    for run in runs:
        report = run / "report.html"
        state = browser_check(report, tmp_path)
        n_figs = len(list((run / "figures").glob("*.png")))
        assert state == {"images": str(n_figs), "broken": "0", "overflow": "no"}, state
        # Screenshots for humans: the classification report (when there is one) is test-artifacts/report.png.
        name = "report.png" if run is runs[-1] else "report-regression.png"
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        proc = chromium(tmp_path, f"--screenshot={shot}", report.as_uri())
        assert shot.exists(), proc.stderr[-1500:]
        im = Image.open(shot)
        assert im.size == (1280, 2000)
        assert len(set(im.convert("L").resize((64, 100)).tobytes())) > 20  # not a blank page
        shutil.copy(report, ARTIFACTS / name.replace(".png", ".html"))
