"""Tuning storage, journals, search-space contradictions and secrets.

Table-driven like tests/test_bad_inputs.py: each case runs the real CLI entry point in a scratch folder
holding the user's files and asserts exit code 2, one ``nndl: error:`` line without a traceback, and a
folder hashed the same before and after (a damaged journal stays byte for byte what it was). Then a
property test: a password made of characters that break naive masking (``@ : / % ? & = ' " \\``,
spaces, unicode), in every form a storage can carry it (URL as typed, percent-encoded, in the query
string, a libpq connection string, through ``$NNDL_TUNE_STORAGE``), never appears in a printed line,
a file or a file name -- on the error paths, and on successful searches against the test PostgreSQL
(which trusts local connections, so any password is accepted and ignored).
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import nndl
from nndl.base import masking
from nndl.search import optuna_shim
from nndl.search.storage import check_journal

from conftest import ROOT
from test_bad_inputs import TRAIN_CSV, assert_one_line_error, folder_digest, run_main, scratch  # noqa: F401 (a fixture)

PG_URL = os.environ.get("NNDL_TEST_PG_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="NNDL_TEST_PG_URL unset: start a server with "
                              "`export NNDL_TEST_PG_URL=$(bash scripts/start-postgres.sh)`")
SPACE = '[fixed]\nepochs = 3\nhidden = "4"\n[params.lr]\ntype = "log-float"\nlow = 1e-3\nhigh = 1e-1\n'
REFUSED = "127.0.0.1:1"  # nothing listens on port 1: a connection is refused at once


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def tune_argv(*extra) -> list:
    return ["tune", "regress", "--space", "space.toml", "--set", "train_path=train.csv", "--trials", 1, "--folds", 2,
            "--sampler", "random", "--out", "study", *extra]


def cli_main(argv) -> int:
    from nndl import cli

    return cli.main([str(a) for a in argv])


@pytest.fixture
def user(scratch, monkeypatch):
    """The scratch folder of test_bad_inputs, with a search space and no storage in the environment."""
    (scratch / "space.toml").write_text(SPACE)
    monkeypatch.delenv("NNDL_TUNE_STORAGE", raising=False)
    return scratch


# ------------------------------------------------------------------ family: a bad --storage
needs_psycopg2 = pytest.mark.skipif(not installed("psycopg2"), reason="psycopg2 not installed")
STORAGE_CASES = [
    ("unknown scheme", ["--storage", "foo://bar/baz"], "unknown database kind 'foo'"),
    ("unknown driver", ["--storage", "postgresql+nosuch://u@h/db"], "unknown database kind 'postgresql+nosuch'"),
    ("sqlite, missing folder", ["--storage", "sqlite:///nodir/x.db"], "folder nodir does not exist"),
    ("sqlite, a folder", ["--storage", "sqlite:///mine"], "mine is a folder"),
    ("sqlite, a user's file", ["--storage", "sqlite:///notes.txt"], "notes.txt is not an SQLite database"),
    ("sqlite, in memory", ["--storage", "sqlite://"], "in-memory SQLite"),
    ("sqlite, with a password", ["--storage", "sqlite://u:pw@/x.db"], "an SQLite URL has no user, password or host"),
    pytest.param("postgres, refused", ["--storage", f"postgresql://u:pw@{REFUSED}/db"], "cannot connect",
                 marks=needs_psycopg2),
    pytest.param("postgres, unresolvable host", ["--storage", "postgresql://u:pw@nosuchhost.invalid/db"],
                 "cannot connect", marks=needs_psycopg2),
    pytest.param("mysql without a driver", ["--storage", "mysql://u:pw@127.0.0.1/db"], "pip install mysqlclient",
                 marks=pytest.mark.skipif(installed("MySQLdb"), reason="mysqlclient is installed")),
    ("port not a number", ["--storage", "postgresql://u:pw@h:port/db"], "not a database URL"),
    ("URL without //", ["--storage", "postgresql:u:pw@h/db"], "needs '://' after its scheme"),
    ("raw @ in the password", ["--storage", f"postgresql://user:ab@Secret@{REFUSED}/db"], "more than one '@'"),
    ("libpq string", ["--storage", "dbname=x password=TopSecret4"], "libpq key=value connection string"),
    ("journal, missing folder", ["--storage", "nodir/j.log"], "nodir does not exist"),
    ("journal, below a file", ["--storage", "notes.txt/j.log"], "notes.txt is not a folder"),
    ("journal, a folder", ["--storage", "mine"], "is a folder"),
    ("journal, a user's file", ["--storage", "notes.txt"], "notes.txt: line 1 is damaged (not JSON)"),
    ("journal, the training data", ["--storage", "train.csv"], "train.csv: line 1 is damaged (not JSON)"),
    ("heartbeat 0, postgres", ["--storage", f"postgresql://u@{REFUSED}/db", "--heartbeat", 0], "--heartbeat 0"),
    ("heartbeat < 0, journal", ["--heartbeat", -3], "--heartbeat -3: must be >= 1"),
]


@pytest.mark.parametrize("name,extra,expected", STORAGE_CASES, ids=[getattr(c, "values", c)[0] for c in STORAGE_CASES])
def test_bad_storage_is_refused_before_anything_is_written(user, capsys, name, extra, expected):
    before = folder_digest(user)
    code, err = run_main(tune_argv(*extra), capsys)
    assert_one_line_error(code, err, expected)
    assert "--storage" in err or "--heartbeat" in err or "line 1" in err
    assert folder_digest(user) == before


@pytest.mark.parametrize("storage,expected", [
    ("host=127.0.0.1 password='Top Secret5'", "(from $NNDL_TUNE_STORAGE): a libpq key=value"),
    (f"postgresql://u:pw@{REFUSED}/db", "(from $NNDL_TUNE_STORAGE) postgresql://u:***@"),
])
def test_a_bad_storage_from_the_environment_says_where_it_came_from(user, capsys, monkeypatch, storage, expected):
    if "postgresql" in storage and not installed("psycopg2"):
        pytest.skip("psycopg2 not installed")
    monkeypatch.setenv("NNDL_TUNE_STORAGE", storage)
    before = folder_digest(user)
    code, err = run_main(tune_argv(), capsys)
    assert_one_line_error(code, err, expected)
    assert folder_digest(user) == before


def test_libpq_strings_are_read_by_libpq_rules():
    assert masking.parse_dsn("host=h  port = 5 password='a \\'b\\\\ c' user=u\\ v") == {
        "host": "h", "port": "5", "password": "a 'b\\ c", "user": "u v"}
    for not_dsn in ("journal.log", "runs/lr=0.1/journal.log", "host=h bogus=1", "password='open", "host"):
        assert masking.parse_dsn(not_dsn) is None, not_dsn
    psycopg2 = pytest.importorskip("psycopg2.extensions")  # libpq itself, where it is here
    for dsn in ("host=h  port = 5 password='a \\'b\\\\ c' user=u\\ v", "dbname=x password=Top\\ Secret"):
        assert masking.parse_dsn(dsn) == psycopg2.parse_dsn(dsn)


# ------------------------------------------------------------------ family: a damaged journal
@pytest.fixture(scope="module")
def good_study(tmp_path_factory):
    """A finished two-trial study folder (journal storage), made once for the module."""
    root = tmp_path_factory.mktemp("good")
    (root / "space.toml").write_text(SPACE)
    (root / "train.csv").write_text(TRAIN_CSV)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        nndl.tune("regress", "space.toml", sampler="random", trials=2, folds=2, out="study",
                  overrides=["train_path=train.csv"], retrain=False, figures=False, echo=lambda s: None)
    finally:
        os.chdir(cwd)
    return root / "study"


def _cut(data: bytes) -> bytes:
    return data[:-40]  # the last record loses its end and its end of line


def _insert(line: bytes):
    def damage(data: bytes) -> bytes:
        lines = data.splitlines(keepends=True)
        return b"".join(lines[:2] + [line] + lines[2:])
    return damage


JOURNAL_CASES = [
    ("truncated last line", _cut, "its last line (line", "--repair-journal"),
    ("complete last record without end of line", lambda d: d[:-1], "is cut short", "--repair-journal"),
    ("zeros after a crash", lambda d: d + b"\0" * 512, "is cut short", "--repair-journal"),
    ("random bytes", lambda d: os.urandom(300).replace(b"\n", b"x") + b"\n", "line 1 is damaged (not UTF-8", "backup"),
    ("random bytes, no end of line", lambda d: b"\xa1" + os.urandom(300).replace(b"\n", b"x"),
     "line 1 is damaged (not UTF-8", "backup"),
    ("a garbage line", _insert(b"not json at all\n"), "line 3 is damaged (not JSON)", "backup"),
    ("a blank line", _insert(b"\n"), "line 3 is damaged (not JSON)", "backup"),
    ("a binary line", _insert(b"\xff\xfe\x00garbage\n"), "line 3 is damaged (not UTF-8 text)", "backup"),
    ("JSON that is no record", _insert(b"[1, 2, 3]\n"), "line 3 is damaged (not an Optuna journal record)", "backup"),
    ("a record Optuna cannot replay", _insert(b'{"op_code": 4, "worker_id": "w"}\n'),
     "line 3 is damaged (Optuna cannot replay it: KeyError", "backup"),
    ("garbage before a cut last line", lambda d: _insert(b"oops\n")(_cut(d)), "line 3 is damaged (not JSON)", "backup"),
]


@pytest.mark.parametrize("name,damage,expected,fix", JOURNAL_CASES, ids=[c[0] for c in JOURNAL_CASES])
@pytest.mark.parametrize("where", ["study folder", "--storage"])
def test_a_damaged_journal_is_never_written_to(user, capsys, good_study, name, damage, expected, fix, where):
    shutil.copytree(good_study, user / "study")
    journal = user / "study/journal.log"
    journal.write_bytes(damage(journal.read_bytes()))
    if where == "--storage":
        journal = journal.rename(user / "shared.log")
    damaged, before = journal.read_bytes(), folder_digest(user)
    extra = ["--trials", 3] + (["--storage", "shared.log"] if where == "--storage" else [])
    code, err = run_main(tune_argv(*extra), capsys)
    assert_one_line_error(code, err, expected)
    assert fix in err and journal.name in err
    assert journal.read_bytes() == damaged and folder_digest(user) == before


def test_repair_journal_drops_only_a_cut_last_line_and_keeps_the_damaged_file(user, capsys, good_study):
    shutil.copytree(good_study, user / "study")
    journal = user / "study/journal.log"
    intact = journal.read_bytes()
    journal.write_bytes(_cut(intact))
    intact_part = intact[: intact[:-40].rfind(b"\n") + 1]
    code = cli_main(tune_argv("--trials", 3, "--repair-journal"))
    out = capsys.readouterr().out
    assert code == 0 and "repaired study/journal.log" in out and "study/journal.log.damaged" in out, out
    assert (user / "study/journal.log.damaged").read_bytes() == _cut(intact)
    assert journal.read_bytes().startswith(intact_part)  # what was intact is untouched, the new trials follow it
    check_journal(journal)  # and the journal is whole again
    summary = json.loads((user / "study/study.json").read_text())
    # the cut record was trial 1's COMPLETE: unread by anyone, so trial 1 was lost and retried
    assert summary["counts"] == {"COMPLETE": 3} and summary["lost_and_retried"] == 1


def test_repair_journal_still_refuses_other_damage(user, capsys, good_study):
    shutil.copytree(good_study, user / "study")
    journal = user / "study/journal.log"
    journal.write_bytes(_insert(b"oops\n")(journal.read_bytes()))
    before = folder_digest(user)
    code, err = run_main(tune_argv("--trials", 3, "--repair-journal"), capsys)
    assert_one_line_error(code, err, "line 3 is damaged (not JSON)")
    assert folder_digest(user) == before


def test_the_journal_is_read_under_its_writers_lock(tmp_path, good_study, monkeypatch):
    """Another worker appending a record holds Optuna's journal lock; a reader waits for it, so a
    record being written is never mistaken for a cut-short line."""
    journal = tmp_path / "journal.log"
    whole = (good_study / "journal.log").read_bytes()
    journal.write_bytes(_cut(whole))  # mid-append, as another worker leaves it for a moment

    class WriterFinishesFirst:  # acquiring the lock means waiting for the writer, who completes the line
        def __init__(self, path):
            self.path = path

        def acquire(self):
            Path(self.path).write_bytes(whole)
            return True

        def release(self):
            pass

    monkeypatch.setattr(optuna_shim, "journal_lock", WriterFinishesFirst)
    check_journal(journal)


def test_optuna_skips_a_cut_last_line_and_then_glues_a_record_onto_it(tmp_path, good_study):
    """Why nndl refuses such a journal: Optuna's JournalFileBackend reads past a cut last line (it may be
    a record still being written), but its next append joins the fragment and the new record into one
    line: that record is lost without a word, and the next write fails on the glued line."""
    journal = tmp_path / "journal.log"
    journal.write_bytes(_cut((good_study / "journal.log").read_bytes()))

    def reopened():
        return optuna.load_study(study_name="regress-space", storage=optuna_shim.journal_storage(str(journal)))

    study = reopened()
    assert len(study.trials) == 2  # the fragment was skipped, silently
    study.set_user_attr("first", 1)
    assert "first" not in reopened().user_attrs  # glued onto the fragment: lost
    with pytest.raises(ValueError):  # JSONDecodeError: the writer reads the glued line before it appends
        study.set_user_attr("second", 2)


# ------------------------------------------------------------------ family: a setting named twice
NAMED_TWICE = [
    ('[grid]\nmax_epochs = [2, 50]\nepochs = [3]\nlr = [0.01]\n', "max_epochs is another name for epochs"),
    ('[fixed]\nepochs = 3\nmax_epochs = 4\n[grid]\nlr = [0.01]\n', "max_epochs is another name for epochs"),
    ('[params.epochs]\ntype = "int"\nlow = 2\nhigh = 5\n[grid]\nmax_epochs = [3]\n', "another name for epochs"),
    ('[fixed]\nlr = 0.01\n[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.1\n', "[fixed] value is never used"),
    ('[fixed]\nepochs = 3\n[grid]\nmax_epochs = [2, 4]\n', "[fixed] value is never used"),
    ('[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.1\n[grid]\nlr = [0.01]\n', "[params.lr] and [grid] lr"),
    ('fixed = 3\n[grid]\nlr = [0.01]\n', "fixed: needs a table"),
    ('grid = "lr"\n', "grid: needs a table"),
    ('preset = 5\n[grid]\nlr = [0.01]\n', "preset: = 5: needs a preset name"),
]


@pytest.mark.parametrize("body,expected", NAMED_TWICE, ids=[c[1][:30] + str(i) for i, c in enumerate(NAMED_TWICE)])
def test_a_setting_the_search_would_ignore_is_refused(user, capsys, body, expected):
    (user / "space.toml").write_text(body)
    before = folder_digest(user)
    code, err = run_main(tune_argv(), capsys)
    assert_one_line_error(code, err, expected)
    assert "space.toml" in err
    assert folder_digest(user) == before


def test_set_of_a_searched_key_is_refused(user, capsys):
    before = folder_digest(user)
    code, err = run_main(tune_argv("--set", "lr=0.5"), capsys)
    assert_one_line_error(code, err, "--set lr: space.toml searches lr ([params.lr])")
    assert folder_digest(user) == before


# ------------------------------------------------------------------ workers leave nothing open
def test_workers_leave_no_resource_warning_and_ignore_the_callers_storage_variable(user, monkeypatch):
    """The worker's log file is closed in the parent (it was left to the garbage collector, with a
    ResourceWarning); a worker started for the journal is not sent to $NNDL_TUNE_STORAGE."""
    monkeypatch.setenv("NNDL_TUNE_STORAGE", "sqlite://")  # a storage every worker would refuse
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = nndl.tune("regress", "space.toml", sampler="random", trials=2, folds=2, out="study", workers=2,
                      overrides=["train_path=train.csv"], retrain=False, figures=False, echo=lambda s: None)
        gc.collect()
    assert s["counts"] == {"COMPLETE": 2}
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    log = (user / "study/worker-1.log").read_text()
    assert "error" not in log and "in study/journal.log" in log, log


# ------------------------------------------------------------------ property: no password in any form leaks
chunk = st.text(alphabet="abcdefghijkmnpqrstuvwxyz", min_size=5, max_size=7).map(lambda s: "Zq" + s)
special = st.text(alphabet="@:/%?&=#'\" \\\té密€+", min_size=1, max_size=3)


@st.composite
def passwords(draw) -> tuple[str, list[str]]:
    """A password and its distinctive pieces: finding any piece anywhere is a leak, even a partial one."""
    pieces = [draw(chunk) for _ in range(3)]
    return pieces[0] + draw(special) + pieces[1] + draw(special) + pieces[2], pieces


def libpq_quoted(password: str) -> str:
    return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"


def libpq_escaped(password: str) -> str:
    """An unquoted libpq value: a backslash before each space, quote and backslash."""
    return "".join("\\" + c if c.isspace() or c in "'\\" else c for c in password)


def storage_in(form: str, password: str, hostport: str, database: str) -> str:
    """``password`` carried by a storage string of the given form."""
    host, _, port = hostport.partition(":")
    return {"url": f"postgresql://postgres:{password}@{hostport}/{database}",
            "url-encoded": f"postgresql://postgres:{quote(password, safe='')}@{hostport}/{database}",
            "query": f"postgresql://postgres@{hostport}/{database}?password={quote(password, safe='')}",
            "dsn": f"host={host} port={port} dbname={database} user=postgres password={libpq_quoted(password)}",
            "dsn-unquoted": f"password={libpq_escaped(password)} host={host}",
            "sqlite": f"sqlite://postgres:{quote(password, safe='')}@/study.db"}[form]


def assert_nowhere(pieces: list[str], printed: str, folder: Path) -> None:
    """No piece of the password in what was printed, in any file under ``folder``, or in a file's name."""
    for piece in pieces:
        assert piece not in printed, f"{piece} printed:\n{printed}"
        for path in folder.rglob("*"):
            assert piece not in str(path.relative_to(folder)), path
            if path.is_file():
                assert piece.encode() not in path.read_bytes(), f"{piece} in {path}"


FORMS = ["url", "url-encoded", "query", "dsn", "dsn-unquoted", "sqlite"]
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# Pinned examples: the raw '@', spaces and quotes (which a pattern stopping at whitespace missed).
HARD = ("Zqalpha@Zqbeta:/ Zqgamma", ["Zqalpha", "Zqbeta", "Zqgamma"])
QUOTED = ("Zqalpha '\"Zqbeta\\ é密Zqgamma", ["Zqalpha", "Zqbeta", "Zqgamma"])


@PROPERTY
@given(secret=passwords(), form=st.sampled_from(FORMS), from_env=st.booleans())
@example(secret=HARD, form="url", from_env=False)
@example(secret=HARD, form="url", from_env=True)
@example(secret=QUOTED, form="dsn", from_env=True)
@example(secret=QUOTED, form="dsn-unquoted", from_env=False)
@example(secret=QUOTED, form="url", from_env=False)
def test_property_no_password_reaches_a_line_or_a_file_on_errors(tmp_path, capfd, monkeypatch, secret, form,
                                                                 from_env):
    password, pieces = secret
    work = tmp_path / uuid.uuid4().hex
    work.mkdir()
    (work / "space.toml").write_text(SPACE)
    (work / "train.csv").write_text(TRAIN_CSV)
    monkeypatch.chdir(work)
    storage = storage_in(form, password, REFUSED, "db")
    monkeypatch.delenv("NNDL_TUNE_STORAGE", raising=False)
    if from_env:
        monkeypatch.setenv("NNDL_TUNE_STORAGE", storage)
    code = cli_main(tune_argv(*([] if from_env else ["--storage", storage])))
    out, err = capfd.readouterr()
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert_nowhere(pieces, out + err, work)


def run_tune_process(work: Path, *extra, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "nndl", *map(str, tune_argv(*extra))], capture_output=True,
                          text=True, cwd=work, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **(env or {})})
    return proc


@needs_pg
@pytest.mark.postgres
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=passwords(), form=st.sampled_from(["url", "url-encoded", "query"]), from_env=st.booleans())
@example(secret=QUOTED, form="url", from_env=False)
@example(secret=HARD, form="query", from_env=True)
def test_property_no_password_reaches_a_line_or_a_file_of_a_finished_search(tmp_path, secret, form, from_env):
    """A whole search against PostgreSQL, with a password the server ignores (it trusts local
    connections): stdout, stderr, the study folder (study.json, tune.json, report.html,
    best/environment.json with the command line, ...) and the working folder hold no piece of it."""
    import sqlalchemy

    password, pieces = secret
    if form == "url" and "@" in password:
        password = password.replace("@", "%40")  # a raw '@' is refused (see the error cases); here it must run
    url = sqlalchemy.engine.make_url(PG_URL)
    storage = storage_in(form, password, f"{url.host}:{url.port}", url.database)
    work = tmp_path / uuid.uuid4().hex
    work.mkdir()
    (work / "space.toml").write_text(SPACE)
    (work / "train.csv").write_text(TRAIN_CSV)
    study = ["--study", f"secret-{uuid.uuid4().hex[:8]}"]
    proc = run_tune_process(work, *study, *([] if from_env else ["--storage", storage]),
                            env={"NNDL_TUNE_STORAGE": storage} if from_env else None)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (work / "study/report.html").is_file() and (work / "study/best/environment.json").is_file()
    assert "postgresql://postgres" in (work / "study/study.json").read_text()
    assert_nowhere(pieces, proc.stdout + proc.stderr, work)


@needs_pg
@pytest.mark.postgres
def test_no_password_reaches_the_files_of_workers(tmp_path):
    """--workers 2 on PostgreSQL: the worker gets the URL through its environment and logs nothing secret."""
    import sqlalchemy

    url = sqlalchemy.engine.make_url(PG_URL)
    pieces = ["ZqWorkerSecret", "ZqSecondPart"]
    storage = storage_in("url", f"{pieces[0]} :/?{pieces[1]}", f"{url.host}:{url.port}", url.database)
    work = tmp_path / "w"
    work.mkdir()
    (work / "space.toml").write_text(SPACE)
    (work / "train.csv").write_text(TRAIN_CSV)
    proc = run_tune_process(work, "--storage", storage, "--workers", 2, "--trials", 2, "--study",
                            f"secret-{uuid.uuid4().hex[:8]}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (work / "study/worker-1.log").is_file()
    assert_nowhere(pieces, proc.stdout + proc.stderr, work)


def test_masking_reads_credentials_as_a_whole():
    cases = {
        "postgresql://user:ab@Secret@host/db": "postgresql://user:***@host/db",
        "postgresql://bob:s3cr:et@db.example:5432/x": "postgresql://bob:***@db.example:5432/x",
        "postgresql://u:a/b?c#d@h/db": "postgresql://u:***@h/db",
        "postgresql://u@h/db?sslmode=require&password=x%26y": "postgresql://u@h/db?sslmode=require&password=***",
        "sqlite:///runs/a@b/study.db": "sqlite:///runs/a@b/study.db",
        "postgresql://u:my secret@h/db": "postgresql://u:***@h/db",
        "error: --storage postgresql://u:pw@h/db: cannot": "error: --storage postgresql://u:***@h/db: cannot",
        "host=h password='Top \\'Secret' port=5": "host=h password=*** port=5",
        "host=h PASSWORD = plain port=5": "host=h PASSWORD = *** port=5",
        "no secret here: user=u host=h": "no secret here: user=u host=h",
    }
    for text, masked in cases.items():
        assert masking.mask_secrets(text) == masked, text


def test_a_remembered_password_is_masked_wherever_it_appears():
    masking.remember_secrets("postgresql://u:Zq%40Remembered@h/db")
    line = 'server said: "Zq@Remembered" is wrong (tried Zq%40Remembered)'
    assert "Remembered" not in masking.mask_secrets(line)


def test_a_journal_given_as_a_path_object(user):
    s = nndl.tune("regress", "space.toml", sampler="random", trials=1, folds=2, out="study", storage=user / "j.log",
                  overrides=["train_path=train.csv"], retrain=False, figures=False, echo=lambda s: None)
    assert s["counts"] == {"COMPLETE": 1} and s["storage"] == str(user / "j.log")
    check_journal(user / "j.log")
