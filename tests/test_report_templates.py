"""The report pages' Jinja2 templates: escaping, strictness, no dead template, well-formed pages, shipped.

Every folder here is written by hand (no training), so the module runs in seconds.
"""
import csv
import io
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest
from PIL import Image

import nndl.runfolder.report as report
from nndl.base import config as config_mod

from conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TEMPLATE_DIR = Path(report.__file__).parent / report.TEMPLATES
EVIL = "<script>alert(1)</script>"
AMP_QUOTE = 'a&b "q"'
EVIL_FILE = "<img src=x onerror=alert(1)>.png"  # a file name cannot hold the "/" of </script>


def png(path: Path, size=(120, 80)) -> None:
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def write_run(folder: Path, task: str, changes: dict, metrics: dict) -> Path:
    """A run folder as nndl lays it out: config, metrics, environment, history and two figures."""
    (folder / "figures").mkdir(parents=True)
    cfg = {**config_mod.to_dict(config_mod.TASK_CONFIGS[task]()), **changes}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "metrics.json").write_text(json.dumps({"device": "cpu", **metrics}))
    (folder / "environment.json").write_text(json.dumps({"nndl": "0.1.0", "torch": "2.x", "python": "3.x"}))
    with open(folder / "history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "train_loss", "val_loss"])
        w.writerows([[e, 1.0 / e, 1.5 / e] for e in range(1, 4)])
    png(folder / "figures" / "losses.png")
    png(folder / "figures" / EVIL_FILE)
    (folder / "figures" / "broken.png").write_bytes(b"not a png")
    return folder


@pytest.fixture
def hostile_run(tmp_path):
    """A classifier run whose class names, config values and folder name are markup."""
    return write_run(tmp_path / 'run<b>&"q"', "classify",
                     {"optimizer": "sgd", "momentum": 0.0, "train_path": EVIL, "model": "mlp"},
                     {"test_accuracy": 0.75, "epochs": 3, "diverged": True, "stop_reasons": [EVIL, AMP_QUOTE],
                      "per_class_accuracy": {EVIL: 0.5, AMP_QUOTE: 1.0}, "extra": {"k<": AMP_QUOTE}})


@pytest.fixture
def study_folder(tmp_path):
    """A study folder with trials, a retrained best run and a study.json with problems."""
    study = tmp_path / "study"
    (study / "figures").mkdir(parents=True)
    png(study / "figures" / "history.png")
    write_run(study / "best", "regress", {}, {"test_mse": 0.5})
    (study / "best" / "report.html").write_text("<!DOCTYPE html>")
    with open(study / "trials.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["number", "state", "value", "params_hidden", "fail_reason"])
        w.writerows([[0, "COMPLETE", 2.0, "32", ""], [1, "COMPLETE", 1.0, "64,64", ""], [2, "FAIL", "", "32", EVIL]])
    (study / "study.json").write_text(json.dumps({
        "study": AMP_QUOTE, "direction": "minimize", "metric": "val_mse", "trials": 3, "folds": 2,
        "counts": {"COMPLETE": 2, "FAIL": 1}, "best": {"number": 1, "value": 1.0, "params": {"hidden": "64,64"}},
        "ok": False, "warnings": [EVIL]}))
    return study


@pytest.fixture
def compare_page(tmp_path, hostile_run):
    other = write_run(tmp_path / "other", "classify", {"model": AMP_QUOTE}, {"test_accuracy": 0.5})
    (hostile_run / "report.html").write_text("<!DOCTYPE html>")
    return report.compare([hostile_run, other], out=tmp_path / "compare.html", echo=None)


class Text(HTMLParser):
    """Text nodes and attribute values of a page, as a browser reads them (entities decoded)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.texts, self.attrs, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [v for _, v in attrs if v is not None]

    def handle_data(self, data):
        self.texts.append(data)


def parsed(text: str) -> Text:
    parser = Text()
    parser.feed(text)
    parser.close()
    return parser


# ----------------------------------------------------------------------------- escaping
@pytest.mark.parametrize("page", ["run", "study", "compare"])
def test_hostile_values_show_as_text(page, hostile_run, study_folder, compare_page):
    path = {"run": lambda: report.write_report(hostile_run), "study": lambda: report.write_report(study_folder),
            "compare": lambda: compare_page}[page]()
    text = path.read_text()
    assert EVIL not in text and AMP_QUOTE not in text and 'run<b>&"q"' not in text
    doc = parsed(text)
    assert "script" not in doc.tags
    shown = "".join(doc.texts)
    assert EVIL in shown  # it reads as the text it is, not as markup and not double-escaped
    assert "&lt;" not in shown and "&amp;" not in shown
    assert AMP_QUOTE in shown and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    if page == "run":
        assert 'run<b>&"q"' in shown
        assert EVIL_FILE in doc.attrs and "<img src=x" not in text  # the figure's alt text, escaped in the attribute
    if page == "compare":
        assert any(a.startswith("file://") and 'run%3Cb%3E' in a for a in doc.attrs)


def test_style_sheet_is_included_unescaped(hostile_run):
    text = report.render_report(hostile_run)
    css = (TEMPLATE_DIR / "report.css").read_text()
    assert css.strip() in text  # quotes in font names stay quotes inside <style>
    assert '"Segoe UI"' in text.split("</style>", 1)[0]


# ----------------------------------------------------------------------------- strictness
def test_every_report_context_key_is_needed(hostile_run):
    context = report.report_context(hostile_run)
    report.render_page("report.html", context)
    for key in context:
        with pytest.raises(jinja2.UndefinedError):
            report.render_page("report.html", {k: v for k, v in context.items() if k != key})


def test_every_compare_context_key_is_needed(hostile_run, tmp_path):
    other = write_run(tmp_path / "other", "classify", {"model": "cnn"}, {"test_accuracy": 0.5})
    runs, _, notes = report.comparable_runs([hostile_run, other])
    names, rows = report.compare_table([hostile_run, other])
    context = report.compare_context(runs, names, notes, rows)
    report.render_page("compare.html", context)
    for key in context:
        with pytest.raises(jinja2.UndefinedError):
            report.render_page("compare.html", {k: v for k, v in context.items() if k != key})


def test_a_missing_key_deep_in_a_section_raises(hostile_run):
    context = report.report_context(hostile_run)
    config = next(s for row in context["rows"] for s in row if s["id"] == "config")
    del config["table"]["rows"][0]["cells"][0]["badge"]
    with pytest.raises(jinja2.UndefinedError, match="badge"):
        report.render_page("report.html", context)


# ----------------------------------------------------------------------------- no dead template
def test_every_template_file_is_used(hostile_run, study_folder, tmp_path, monkeypatch):
    report.template_environment.cache_clear()  # a fresh environment loads every template again
    env = report.template_environment()
    loaded = set()
    get_source = env.loader.get_source
    monkeypatch.setattr(env.loader, "get_source", lambda e, name: (loaded.add(name), get_source(e, name))[1])
    try:
        report.render_report(hostile_run)
        report.render_report(study_folder)
        report.compare([hostile_run, write_run(tmp_path / "other", "classify", {}, {})], out=tmp_path / "c.html",
                       echo=None)
    finally:
        report.template_environment.cache_clear()
    files = {p.name for p in TEMPLATE_DIR.iterdir() if p.is_file()}
    assert loaded == files, ("never used" if files - loaded else "not a file", files ^ loaded)


def test_templates_ship_as_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package_dir = ROOT / "src" / "nndl" / "runfolder"
    shipped = {p for pattern in data["nndl.runfolder"] for p in package_dir.glob(pattern)}
    assert {p for p in TEMPLATE_DIR.rglob("*") if p.is_file()} <= shipped


# ----------------------------------------------------------------------------- well-formed
VOID = {"meta", "img", "br", "hr", "link", "input"}


class Balance(HTMLParser):
    """Every element closed in the order it was opened (void elements aside)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.seen, self.doctype = [], [], set(), None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.seen.add(tag)
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag, attrs):
        self.seen.add(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> at {self.getpos()} closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


@pytest.mark.parametrize("page", ["run", "study", "compare"])
def test_pages_are_well_formed(page, hostile_run, study_folder, compare_page):
    text = {"run": lambda: report.render_report(hostile_run), "study": lambda: report.render_report(study_folder),
            "compare": lambda: compare_page.read_text()}[page]()
    checker = Balance()
    checker.feed(text)
    checker.close()
    assert checker.doctype == "DOCTYPE html" and text.lstrip().startswith("<!DOCTYPE html>")
    assert not checker.errors, checker.errors[:3]
    assert not checker.stack, checker.stack
    assert {"html", "head", "title", "style", "body", "main", "header", "h1", "nav", "section", "h2", "table",
            "thead", "tbody", "tr", "th", "td", "footer"} <= checker.seen
    assert {"img", "figure", "figcaption", "code"} <= checker.seen
