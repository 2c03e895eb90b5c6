"""Storage: checking it before anything is written (:func:`check_storage`: a database connected to
once, a journal read to its end without writing), opening it, the trial lock that keeps
``--trials`` exact, and recovering lost trials.

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

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
from abc import ABC, abstractmethod
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nndl.base.errors import NndlError
from nndl.base.masking import MASK, SECRET_KEYS, mask_secrets, parse_dsn, url_userinfo
from nndl.search import optuna_shim

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


def is_url(storage: str | None) -> bool:
    """Whether a storage string is a database URL (else it is a journal file path, or the default journal)."""
    return bool(storage) and "://" in storage


def open_storage(url: str | None, folder: Path | None, heartbeat: int):
    """(storage, journal path or None). Default: ``journal.log`` in the study folder. The storage was
    checked by :func:`check_storage` first."""
    if is_url(url):
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


def close_storage(storage) -> None:
    """Close a database storage's connections (the process may live on: a notebook, the Python API)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


# --------------------------------------------------------------------------- checking it first
CONNECT_TIMEOUT = 5  # seconds: a host that does not answer is reported, not waited for
TIMEOUT_ARG = {"psycopg2": "connect_timeout", "psycopg": "connect_timeout", "mysqldb": "connect_timeout",
               "pymysql": "connect_timeout", "pg8000": "timeout"}
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "'psycopg[binary]'", "MySQLdb": "mysqlclient",
                   "pymysql": "PyMySQL"}
URL_FORM = "DIALECT://USER:PASSWORD@HOST:PORT/DATABASE, e.g. postgresql://tuner:PASSWORD@db.example/optuna"
ENCODE = "percent-encode @ : / % ? # and spaces in the user name and password as %40 %3A %2F %25 %3F %23 %20"
# A database scheme with a ':' but no '//': the start of a URL missing its slashes, not a file name.
SCHEME_WITHOUT_SLASHES = re.compile(r"(postgres(ql)?|mysql|mariadb|sqlite|oracle|mssql)(\+\w+)?:(?!//)", re.I)


def check_storage(storage: str | None, out, repair: bool = False) -> None:
    """Refuse a storage a study cannot live in, before anything is written: one line naming
    ``--storage`` (or the journal file) and the fix. A database is connected to once, with a short
    timeout; a journal is read to the end, changing nothing.

    ``out`` is the study folder (``--out``): the default journal lives there, and a journal path
    inside it may name a folder that is yet to be made. ``repair``: a journal whose last line was
    cut short is accepted, to be repaired when it is opened (:func:`repair_journal`).
    """
    if not storage:
        default = Path(out) / "journal.log" if out is not None else None
        if default is not None and (default.parent / "tune.json").is_file() and default.is_file():
            check_journal(default, repair)
        return
    dsn = parse_dsn(storage)
    if dsn is not None:
        raise NndlError(f"--storage: a libpq key=value connection string is not a storage URL; write it as "
                        f"{_dsn_as_url(dsn)}, your password in place of {MASK}, and {ENCODE}")
    if SCHEME_WITHOUT_SLASHES.match(storage):
        raise NndlError(f"--storage {mask_url(storage.split(':', 1)[0])}:...: a database URL needs '://' after its "
                        f"scheme: {URL_FORM}")
    if is_url(storage):
        _check_url(storage)
    else:
        _check_journal_path(Path(storage), out, repair)


def _dsn_as_url(dsn: dict[str, str]) -> str:
    """The URL form of a libpq connection string, its password a placeholder (the URL is printed)."""
    from urllib.parse import quote, urlencode

    user = quote(dsn.get("user", "USER"), safe="") + (f":{MASK}" if "password" in dsn else "")
    host = dsn.get("host") or dsn.get("hostaddr") or "localhost"
    port = f":{dsn['port']}" if dsn.get("port") else ""
    extra = {k: v for k, v in dsn.items() if k not in ("user", "password", "host", "hostaddr", "port", "dbname")
             and k not in SECRET_KEYS}
    query = f"?{urlencode(extra)}" if extra else ""
    return f"postgresql://{user}@{host}{port}/{quote(dsn.get('dbname', 'DATABASE'))}{query}"


def _check_url(url: str) -> None:
    import sqlalchemy

    shown = mask_url(url)
    if "@" in (url_userinfo(url) or ""):
        raise NndlError(f"--storage {shown}: more than one '@' before the host: {ENCODE}")
    try:
        parsed = sqlalchemy.engine.make_url(driver_url(url))
    except Exception:  # noqa: BLE001 - SQLAlchemy says ArgumentError or ValueError (a port that is no number)
        raise NndlError(f"--storage {shown}: not a database URL; write {URL_FORM} and {ENCODE}, "
                        "or give a journal file path") from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite(parsed, url, shown)
        return
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise NndlError(f"--storage {shown}: unknown database kind '{parsed.drivername}'; use postgresql://, "
                        "mysql:// or sqlite:///, or give a journal file path") from None
    try:
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
    except ImportError as e:
        package = DRIVER_PACKAGES.get(e.name or "", e.name or "its driver")
        raise NndlError(f"--storage {shown}: the Python driver for {parsed.drivername} is not installed "
                        f"(no module {e.name!r}); pip install {package}") from None
    _try_connect(parsed, shown)


def _try_connect(parsed, shown: str) -> None:
    """Connect once, with a timeout: a refused, unknown or silent host is one line, not a study folder."""
    import sqlalchemy

    timeout = TIMEOUT_ARG.get(parsed.get_driver_name())
    engine = sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.pool.NullPool,
                                      connect_args={timeout: CONNECT_TIMEOUT} if timeout else {})
    try:
        with engine.connect():
            pass
    except Exception as e:  # noqa: BLE001 - every driver has its own errors; the first line says what
        why = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]
        raise NndlError(f"--storage {shown}: cannot connect ({mask_url(why)}); check the host, port, user, "
                        f"password and database name, and that the server is running") from None
    finally:
        engine.dispose()


def _check_sqlite(parsed, url: str, shown: str) -> None:
    if parsed.username or parsed.password or parsed.host:
        raise NndlError(f"--storage {shown}: an SQLite URL has no user, password or host; write sqlite:///study.db "
                        "(a relative path) or sqlite:////absolute/path/study.db")
    database = sqlite_file(driver_url(url))
    if database is None:
        raise NndlError(f"--storage {shown}: an in-memory SQLite database vanishes with the process (and its "
                        "heartbeats cannot reach it); give a file: sqlite:///study.db")
    if database.is_dir():
        raise NndlError(f"--storage {shown}: {database} is a folder; give a database file in it: "
                        f"sqlite:///{database}/study.db")
    if not database.parent.is_dir():
        raise NndlError(f"--storage {shown}: folder {database.parent} does not exist (SQLite creates the database "
                        "file, not its folder); create it first or choose another path")
    try:
        with open(database, "rb") as fh:
            head = fh.read(16)
    except FileNotFoundError:
        return
    except OSError as e:
        raise NndlError(f"--storage {shown}: cannot read {database} ({e.strerror})") from None
    if head and head != b"SQLite format 3\x00":
        raise NndlError(f"--storage {shown}: {database} is not an SQLite database; give a new or an SQLite file")


def sqlite_file(url: str) -> Path | None | bool:
    """The database file of a ``sqlite://`` URL; None for an in-memory database; False if not SQLite."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: check_storage says so in one line
        return False
    if parsed.get_backend_name() != "sqlite":
        return False
    db = parsed.database or ""
    in_memory = db in ("", ":memory:") or parsed.query.get("mode") == "memory"
    return None if in_memory else Path(db[5:] if db.startswith("file:") else db)


# --------------------------------------------------------------------------- the journal file
def _check_journal_path(path: Path, out, repair: bool) -> None:
    if path.is_dir():
        raise NndlError(f"--storage {path}: is a folder; give a journal file path, e.g. {path / 'journal.log'}")
    folder = path.parent
    inside_out = out is not None and folder.resolve() == Path(out).resolve()  # study_folder makes it
    if not folder.is_dir() and not inside_out:
        what = "is not a folder" if folder.exists() else "does not exist"
        raise NndlError(f"--storage {path}: {folder} {what}; create the folder first or choose another journal path")
    if path.exists():
        check_journal(path, repair)


def check_journal(path: Path, repair: bool = False) -> None:
    """Refuse a damaged journal before Optuna opens it for writing (it would append to it), changing nothing."""
    with _journal_locked(path):
        intact = scan_journal(path)
    if intact is not None and not repair:
        raise NndlError(f"{path}: its last line (line {_line_count(path, intact) + 1}) is cut short, as a crash "
                        f"mid-write leaves it; rerun with --repair-journal to drop that line (the file is kept as "
                        f"{_damaged_name(path)}), or restore the journal from a backup")


def repair_journal(path: Path) -> str | None:
    """Drop the cut-short last line of a journal, after saving the file beside it; a note of what was
    done, or None when the journal was intact. Any other damage is still refused (:func:`scan_journal`)."""
    import shutil

    with _journal_locked(path):
        intact = scan_journal(path)
        if intact is None:
            return None
        kept = _damaged_name(path)
        tmp = kept.with_name(kept.name + ".tmp")
        try:
            shutil.copy2(path, tmp)
            os.replace(tmp, kept)
        finally:
            tmp.unlink(missing_ok=True)
        dropped = path.stat().st_size - intact
        os.truncate(path, intact)
    return f"repaired {path}: dropped its cut-short last line ({dropped} bytes); the damaged file is {kept}"


def scan_journal(path: Path) -> int | None:
    """Read a journal file, changing nothing, and raise :class:`NndlError` at its first damaged line
    (not UTF-8, not JSON, not a record Optuna can replay). Returns the length in bytes of its intact
    part when only the last line is cut short (no end of line: Optuna skips such a line, but its next
    append would glue a record onto it), else None."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NndlError(f"{path}: cannot read the journal ({e.strerror})") from None
    lines = data.split(b"\n")
    records = [_journal_record(path, number, line) for number, line in enumerate(lines[:-1], 1)]
    bad = optuna_shim.first_unreplayable(records)
    if bad is not None:
        raise _damaged(path, bad[0] + 1, f"Optuna cannot replay it: {type(bad[1]).__name__}: {bad[1]}")
    cut = lines[-1]
    if not cut:
        return None
    # What a crash mid-append leaves: the start of a record (Optuna writes ASCII JSON objects), or the
    # zeros a file system may leave in blocks it had allocated but not written. Anything else is damage.
    if not (cut.strip(b"\0") == b"" or (cut.startswith(b"{") and cut.isascii())):
        _journal_record(path, len(lines), cut)  # raises: not UTF-8, not JSON...
        raise _damaged(path, len(lines), "no end of line")
    return len(data) - len(cut)


def _journal_record(path: Path, number: int, line: bytes) -> dict:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise _damaged(path, number, "not UTF-8 text") from None
    except ValueError:
        raise _damaged(path, number, "not JSON") from None
    if not isinstance(record, dict) or "op_code" not in record:
        raise _damaged(path, number, "not an Optuna journal record")
    return record


def _damaged(path: Path, number: int, why: str) -> NndlError:
    return NndlError(f"{path}: line {number} is damaged ({mask_url(why)[:200]}); nndl does not write to a "
                     "journal it cannot read: restore it from a backup, or move it away to start the study afresh")


def _line_count(path: Path, length: int) -> int:
    with open(path, "rb") as fh:
        return fh.read(length).count(b"\n")


def _damaged_name(path: Path) -> Path:
    """``JOURNAL.damaged``, or ``JOURNAL.damaged-2``, ... when that exists."""
    kept, n = path.with_name(path.name + ".damaged"), 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.name}.damaged-{n}")
    return kept


@contextlib.contextmanager
def _journal_locked(path: Path):
    """Hold Optuna's journal lock, which every writer holds while it appends, so that a record being
    written by another worker is not read as cut short. A folder nndl cannot write to cannot hold
    the lock, nor can any writer append there: then the journal is read without it."""
    lock = optuna_shim.journal_lock(str(path))
    try:
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


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
        check_storage(url, None)  # raises
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
        # So does this process's own PID: between trials it runs none (its trial's end was lost,
        # e.g. with the cut-short last line of a repaired journal).
        lost = (journal is not None and t.state == TrialState.RUNNING and h == host and pid.isdigit()
                and (int(pid) == os.getpid() or not _alive(int(pid))))
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
