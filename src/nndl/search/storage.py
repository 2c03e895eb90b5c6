"""Storage: opening it, the trial lock that keeps ``--trials`` exact, and recovering lost trials.

A process counts the study's trials and creates the next one only while it holds the study's
trial lock (:func:`trial_lock`), so parallel workers never overshoot. The lock, by backend:

=====================  ====================================================================
journal file           ``flock`` on ``JOURNAL.slot-lock`` beside it (one machine)
SQLite file            ``flock`` on ``DATABASE.slot-lock`` beside the database file (one machine)
PostgreSQL             a session advisory lock keyed by the study name (any number of machines)
any other RDB          a row of the table ``nndl_trial_slots`` (one per study), locked by an
(MySQL, MariaDB, ...)  ``UPDATE`` in an open transaction: every RDB with row locks blocks a
                       second writer of that row until the first commits (any number of machines)
=====================  ====================================================================

Every kind is released by the operating system or the database server when its process dies,
so a killed worker never leaves the study locked.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
from abc import ABC, abstractmethod
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..errors import NndlError
from ..masking import mask_secrets
from . import optuna_shim

mask_url = mask_secrets  # the name search callers and tests know
SLOT_TABLE = "nndl_trial_slots"


def driver_url(url: str) -> str:
    """SQLAlchemy >= 2.1 reads ``postgresql://`` as psycopg 3; fall back to psycopg2 when that is what is here."""
    if re.match(r"postgres(ql)?://", url):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", url)
    return url


def open_storage(url: str | None, folder: Path | None, heartbeat: int):
    """(storage, journal path or None). Default: ``journal.log`` in the study folder."""
    if url and "://" in url:
        url = driver_url(url)
        # SQLite: a writer waits for another process's write instead of failing after 5 s.
        extra = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        try:  # heartbeats fail a killed worker's trial after the grace period; it is retried once
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"pool_pre_ping": True, **extra}, heartbeat_interval=heartbeat,
                grace_period=3 * heartbeat, heartbeat_stale_trial_callback=optuna_shim.retry_callback()), None
        except Exception as e:
            raise NndlError(f"--storage {mask_url(url)}: cannot open it ({mask_url(str(e).splitlines()[0])})") from None
    path = Path(url) if url else folder / "journal.log"
    return optuna_shim.journal_storage(str(path)), path


def check_storage(url: str | None) -> None:
    """Refuse a storage a study cannot live in, before the study folder is written."""
    if url and "://" in url and sqlite_file(driver_url(url)) is None:
        raise NndlError(f"--storage {mask_url(url)}: an in-memory SQLite database vanishes with the process (and its "
                        "heartbeats cannot reach it); give a file: sqlite:///study.db")


def sqlite_file(url: str) -> Path | None | bool:
    """The database file of a ``sqlite://`` URL; None for an in-memory database; False if not SQLite."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: open_storage says so in one line
        return False
    if parsed.get_backend_name() != "sqlite":
        return False
    db = parsed.database or ""
    in_memory = db in ("", ":memory:") or parsed.query.get("mode") == "memory"
    return None if in_memory else Path(db[5:] if db.startswith("file:") else db)


# --------------------------------------------------------------------------- the trial lock
class Slot(ABC):
    """A cross-process lock around "count the trials, create one", so that --trials is exact.

    ``acquire`` and ``release`` may each be called when already in that state (no-ops).
    Each storage kind supplies ``_lock``/``_unlock`` (see :func:`trial_lock` for which is used).
    """

    def __init__(self):
        self.held = False

    def acquire(self) -> None:
        if not self.held:
            self._lock()
            self.held = True

    def release(self) -> None:
        if self.held:
            self._unlock()
            self.held = False

    def close(self) -> None:
        """Release, and free the file or connection."""
        self.release()

    @abstractmethod
    def _lock(self) -> None:
        """Block until this process holds the lock."""

    @abstractmethod
    def _unlock(self) -> None:
        """Let the next process in."""


class FileSlot(Slot):
    """``flock`` on a file: the journal's, or a SQLite database's, next to it."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        try:
            self.fh = open(self.path, "a")
        except OSError as e:
            raise NndlError(f"{self.path}: cannot create the trial lock file ({e.strerror}); the storage's "
                            "folder must be writable") from None

    def _lock(self) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)

    def close(self) -> None:
        super().close()
        self.fh.close()


class AdvisorySlot(Slot):
    """PostgreSQL: a session advisory lock keyed by the study name."""

    def __init__(self, url: str, study: str):
        super().__init__()
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.NullPool)
        self.conn, self.text = engine.connect(), sqlalchemy.text
        self.key = int(hashlib.sha1(study.encode()).hexdigest()[:15], 16)  # fits a signed bigint

    def _lock(self) -> None:
        self.conn.execute(self.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})

    def _unlock(self) -> None:
        self.conn.execute(self.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})

    def close(self) -> None:
        super().close()
        self.conn.close()


class RowSlot(Slot):
    """Any RDB with row locks: the study's row of ``nndl_trial_slots``, updated in a transaction that
    stays open while the lock is held (another worker's ``UPDATE`` of the row waits for its commit)."""

    def __init__(self, url: str, study: str):
        super().__init__()
        import sqlalchemy as sa

        self.sa, self.study = sa, study
        self.engine = sa.create_engine(url, poolclass=sa.NullPool)
        meta = sa.MetaData()
        self.table = sa.Table(SLOT_TABLE, meta, sa.Column("study_name", sa.String(512), primary_key=True),
                              sa.Column("holder", sa.String(255)))
        try:
            meta.create_all(self.engine, checkfirst=True)
        except sa.exc.DBAPIError:  # another worker created it at the same moment
            if not sa.inspect(self.engine).has_table(SLOT_TABLE):
                raise
        try:
            with self.engine.begin() as conn:
                if conn.execute(self._row(sa.select(self.table.c.study_name))).first() is None:
                    conn.execute(self.table.insert().values(study_name=study, holder=""))
        except sa.exc.IntegrityError:  # another worker inserted the row first
            pass
        self.conn, self.tx = self.engine.connect(), None

    def _row(self, statement):
        return statement.where(self.table.c.study_name == self.study)

    def _lock(self) -> None:
        holder = f"{socket.gethostname()}:{os.getpid()}"
        while True:
            self.tx = self.conn.begin()
            try:
                self.conn.execute(self._row(self.table.update()).values(holder=holder))
                return
            except self.sa.exc.OperationalError as e:  # e.g. MySQL's lock wait timeout (50 s): wait again
                self.tx.rollback()
                if "lock" not in str(e).lower():
                    raise

    def _unlock(self) -> None:
        self.tx.commit()

    def close(self) -> None:
        super().close()
        self.conn.close()
        self.engine.dispose()


def lock_kind(storage_url: str | None, journal: Path | None) -> tuple[str, Path | None]:
    """Which trial lock a storage gets: ("file", lock file) | ("advisory", None) | ("row", None)."""
    if journal is not None:
        return "file", Path(f"{journal}.slot-lock")
    url = driver_url(storage_url)
    database = sqlite_file(url)
    if database is None:
        check_storage(url)  # raises
    if database is not False:
        return "file", Path(f"{database}.slot-lock")
    return ("advisory" if url.startswith("postgres") else "row"), None


def trial_lock(storage_url: str | None, journal: Path | None, study: str, rows: bool = False) -> Slot:
    """The trial lock for a study's storage (see the table at the top of this module).

    ``rows=True`` takes the row lock on PostgreSQL too (the tests check the generic kind with it).
    """
    kind, path = lock_kind(storage_url, journal)
    if kind == "file":
        return FileSlot(path)
    url = driver_url(storage_url)
    return AdvisorySlot(url, study) if kind == "advisory" and not rows else RowSlot(url, study)


# --------------------------------------------------------------------------- lost trials
def counted(trials) -> list:
    """The trials --trials counts: all but attempts lost with their worker and already retried."""
    retried = {n for t in trials for n in optuna_shim.retry_history(t)}
    return [t for t in trials if t.number not in retried]


def recover(study, journal: Path | None) -> None:
    """Fail trials whose worker is gone and queue one retry of each lost or interrupted trial."""
    if journal is None:
        optuna_shim.fail_stale_trials(study)  # RDB heartbeat; its retry callback queues the retry
    host = socket.gethostname()
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in optuna_shim.retry_history(t)}
    for t in trials:
        h, _, pid = (t.user_attrs.get("worker") or "").rpartition(":")
        # The journal has no heartbeat: on this host a dead PID tells a lost trial.
        lost = (journal is not None and t.state == TrialState.RUNNING and h == host and pid.isdigit()
                and not _alive(int(pid)))
        if lost:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        interrupted = t.state == TrialState.FAIL and (t.user_attrs.get("fail_reason") or "").startswith("interrupt")
        if (lost or interrupted) and t.number not in retried:
            optuna_shim.queue_retry(study, study.get_trials()[t.number])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
