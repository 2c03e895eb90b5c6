"""The trial lock that keeps ``--trials`` exact, for every kind of storage.

Two locks on the same study are taken from two threads (two connections or two open files, as
two worker processes would hold them): the second waits until the first is released. The
end-to-end checks (N workers, exactly N trials) are in test_tune.py for the journal, SQLite
and PostgreSQL.
"""
import os
import threading
import uuid
from pathlib import Path

import pytest

from nndl.base.errors import NndlError
from nndl.search.storage import lock_kind, trial_lock

PG_URL = os.environ.get("NNDL_TEST_PG_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="NNDL_TEST_PG_URL unset: start a server with "
                              "`export NNDL_TEST_PG_URL=$(bash scripts/start-postgres.sh)`")


@pytest.mark.parametrize("url, journal, kind, lock_file", [
    (None, "/s/journal.log", "file", "/s/journal.log.slot-lock"),
    ("sqlite:////data/study.db", None, "file", "/data/study.db.slot-lock"),
    ("sqlite:///study.db", None, "file", "study.db.slot-lock"),  # relative to the working folder, as SQLite reads it
    ("postgresql://u:pw@db/optuna", None, "advisory", None),
    ("postgresql+psycopg2://u@db/optuna", None, "advisory", None),
    ("mysql+pymysql://u:pw@db/optuna", None, "row", None),
    ("mariadb+mariadbconnector://u@db/optuna", None, "row", None),
    ("oracle+oracledb://u@db/optuna", None, "row", None),
    ("mssql+pyodbc://u@dsn", None, "row", None),
])
def test_every_backend_gets_a_lock(url, journal, kind, lock_file):
    got, path = lock_kind(url, Path(journal) if journal else None)
    assert got == kind and (str(path) if path else None) == lock_file


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_refused_in_one_line(url):
    with pytest.raises(NndlError, match="in-memory SQLite database vanishes with the process"):
        lock_kind(url, None)


def assert_exclusive(make) -> None:
    """A second lock on the same study waits while the first is held, and gets it once released."""
    first, second = make(), make()
    got = threading.Event()

    def take():
        second.acquire()
        got.set()
        second.release()

    first.acquire()
    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    try:
        assert not got.wait(1.0), "the second worker took the lock while the first held it"
    finally:
        first.release()
    assert got.wait(120), "the second worker never got the lock after the first released it"
    thread.join(120)
    first.acquire()  # and it can be taken again
    first.close(), second.close()


def test_journal_file_lock_is_exclusive(tmp_path):
    assert_exclusive(lambda: trial_lock(None, tmp_path / "journal.log", "s"))


def test_sqlite_file_lock_is_exclusive_and_lies_beside_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert_exclusive(lambda: trial_lock(url, None, "s"))
    assert (tmp_path / "study.db.slot-lock").exists()


def test_sqlite_lock_in_a_folder_that_cannot_be_written_is_one_line(tmp_path):
    with pytest.raises(NndlError, match=r"missing/study\.db\.slot-lock: cannot create the trial lock file"):
        trial_lock(f"sqlite:///{tmp_path / 'missing' / 'study.db'}", None, "s")


@needs_pg
@pytest.mark.postgres
def test_postgres_advisory_lock_is_exclusive():
    name = f"lock-{uuid.uuid4().hex[:8]}"
    assert_exclusive(lambda: trial_lock(PG_URL, None, name))


@needs_pg
@pytest.mark.postgres
def test_row_lock_of_other_databases_is_exclusive_per_study():
    """The lock row that MySQL, MariaDB, Oracle, SQL Server... get, checked on PostgreSQL (row locks
    behave alike); another study's row is not blocked."""
    name = f"row-{uuid.uuid4().hex[:8]}"
    assert_exclusive(lambda: trial_lock(PG_URL, None, name, rows=True))
    held, other = trial_lock(PG_URL, None, name, rows=True), trial_lock(PG_URL, None, name + "-b", rows=True)
    held.acquire()
    other.acquire()  # returns at once: a different row
    other.close(), held.close()
