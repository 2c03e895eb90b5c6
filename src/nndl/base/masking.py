"""Secrets never reach a file or the terminal: one module finds them and masks them in any text nndl
writes or prints (CLI errors and warnings, ``environment.json``, ``tune.json``, ``study.json``, reports).

Credentials are found by parsing them as the programs that use them read them, never by a pattern
that guesses where a password ends:

- a URL ``scheme://user:password@host/db?password=...``: the password runs from the ``:`` after the
  user name to the *last* ``@`` of the URL, so a raw ``@``, ``:`` or ``/`` inside it is masked too
  (SQLAlchemy itself would split at the first ``@``: nndl refuses such a storage URL, see
  :mod:`nndl.search.storage`); query values of password keys are masked as well;
- a libpq connection string ``host=db password='a b\\'c'``: libpq's ``key = value`` rules, quoted
  values and backslash escapes included (:func:`parse_dsn`).

A storage string nndl is given is also remembered (:func:`remember_secrets`): its password, as
written, percent-decoded and re-encoded, is then masked wherever it appears later, e.g. inside a
database driver's error message. Only passwords of at least :data:`MIN_REMEMBERED` characters are
masked that way (a shorter one would turn every matching letter of every line into ``***``); every
password is masked where it stands in a URL or connection string.
"""
from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
MIN_REMEMBERED = 4
# Connection options that carry a secret: libpq's own, and the names other drivers and ODBC use.
SECRET_KEYS = frozenset({"password", "sslpassword", "passwd", "pwd"})
# libpq's connection options (PostgreSQL 17, libpq-connect "Parameter Key Words"): a string of
# key=value pairs with these keys is a connection string, not a file name.
LIBPQ_KEYS = frozenset("""
    host hostaddr port dbname user password passfile require_auth channel_binding connect_timeout
    client_encoding options application_name fallback_application_name keepalives keepalives_idle
    keepalives_interval keepalives_count tcp_user_timeout replication gssencmode sslmode sslnegotiation
    sslcompression sslcert sslkey sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni requirepeer
    ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation service
    target_session_attrs load_balance_hosts requiressl authtype tty
""".split())
URL_START = re.compile(r"[\w+]+://")  # SQLAlchemy's ``name://``: letters, digits, _ and +
_remembered: set[str] = set()


def mask_secrets(text: str | None) -> str | None:
    """``text`` with every password in it replaced by ``***``: remembered secrets anywhere, URL
    passwords (user info and query), and libpq ``password=`` values. ``None`` stays ``None``.

    A line that is one storage string (no whitespace around its start) is read as a whole, so a
    URL password with raw spaces is masked too; in longer text a URL ends at whitespace.
    """
    if not text:
        return text
    for secret in sorted(_remembered, key=len, reverse=True):
        text = text.replace(secret, MASK)
    if URL_START.match(text) and "\n" not in text:
        return _mask_url(text)
    out, at = [], 0
    for start in URL_START.finditer(text):
        if start.start() < at:
            continue
        end = _token_end(text, start.start())
        out += [_mask_dsn(text[at:start.start()]), _mask_url(text[start.start():end])]
        at = end
    return "".join(out + [_mask_dsn(text[at:])])


def remember_secrets(storage: str | None) -> None:
    """Mask the passwords of ``storage`` (a URL or a connection string) in every later text, in any form."""
    for secret in storage_secrets(storage):
        if len(secret) >= MIN_REMEMBERED:
            _remembered.add(secret)


def storage_secrets(storage: str | None) -> set[str]:
    """The passwords in a storage string, each as written, percent-decoded and percent-encoded."""
    if not storage:
        return set()
    if URL_START.match(storage):
        user, colon, password = (url_userinfo(storage) or "").partition(":")
        found = {password} if colon else set()
        found.update(value for key, value in _query_pairs(storage) if key in SECRET_KEYS)
    else:
        found = {value for key, value in (parse_dsn(storage) or {}).items() if key in SECRET_KEYS}
        found |= {raw for key, raw in _dsn_raw_values(storage) if key in SECRET_KEYS}
    forms = set()
    for secret in filter(None, found):
        plain = unquote(secret)
        forms |= {secret, plain, quote(plain, safe=""), quote_plus(plain), repr(plain)[1:-1]}
    return {s for s in forms if s}


def parse_dsn(text: str) -> dict[str, str] | None:
    """A libpq connection string (``key=value`` pairs, libpq's quoting) as a dict; None when ``text``
    is not one (a key that is not a libpq option, a missing ``=``, an unterminated quote)."""
    pairs = _dsn_pairs(text)
    if not pairs or any(key not in LIBPQ_KEYS for key, _, _ in pairs):
        return None
    return {key: value for key, value, _ in pairs}


# ------------------------------------------------------------------------------------------ URLs
def url_userinfo(url: str) -> str | None:
    """The ``user:password`` part of a URL, as written: from ``scheme://`` to the *last* ``@``
    (None when there is none, or when the URL's path starts right after ``scheme://``, as in
    ``sqlite:///a@b.db``). A raw ``@`` in the password thus stays inside it."""
    start = URL_START.match(url)
    if start is None:
        return None
    userinfo, at, _ = url[start.end():].rpartition("@")
    return userinfo if at and not userinfo.startswith("/") else None


def _token_end(text: str, start: int) -> int:
    match = re.compile(r"\s").search(text, start)
    return match.start() if match else len(text)


def _mask_url(url: str) -> str:
    """One URL with the password of its user info and of its query masked."""
    userinfo = url_userinfo(url)
    if userinfo is not None and ":" in userinfo:
        scheme = URL_START.match(url).end()
        url = f"{url[:scheme]}{userinfo.partition(':')[0]}:{MASK}{url[scheme + len(userinfo):]}"
    return _mask_query(url)


def _query_pairs(url: str) -> list[tuple[str, str]]:
    """(lower-cased key, raw value) of each ``key=value`` after the URL's ``?``."""
    query = url.partition("?")[2]
    return [(unquote(key).lower(), value) for key, eq, value in (p.partition("=") for p in query.split("&")) if eq]


def _mask_query(url: str) -> str:
    head, question, query = url.partition("?")
    if not question:
        return url
    parts = []
    for part in query.split("&"):
        key, eq, _ = part.partition("=")
        parts.append(f"{key}={MASK}" if eq and unquote(key).lower() in SECRET_KEYS else part)
    return f"{head}?{'&'.join(parts)}"


# ------------------------------------------------------------------------------------------ libpq strings
def _read_value(text: str, i: int) -> tuple[str, int] | None:
    """libpq's value at ``text[i]``: ``'quoted'`` (``\\'`` and ``\\\\`` escapes) or up to whitespace
    (a backslash takes the next character literally). (value, index after it); None if unterminated."""
    value = []
    quoted = i < len(text) and text[i] == "'"
    i += quoted
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            value.append(text[i + 1])
            i += 2
            continue
        if (quoted and c == "'") or (not quoted and c.isspace()):
            return "".join(value), i + quoted
        value.append(c)
        i += 1
    return None if quoted else ("".join(value), i)


def _dsn_pairs(text: str) -> list[tuple[str, str, tuple[int, int]]] | None:
    """(key, value, span of the raw value) of each pair, by libpq's ``conninfo_parse``; None on a syntax error."""
    pairs, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return pairs
        start = i
        while i < len(text) and text[i] != "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text) or text[i] != "=" or not key:
            return None
        i += 1
        while i < len(text) and text[i].isspace():
            i += 1
        read = _read_value(text, i)
        if read is None:
            return None
        pairs.append((key, read[0], (i, read[1])))
        i = read[1]


def _dsn_raw_values(text: str) -> list[tuple[str, str]]:
    return [(key, text[a:b]) for key, _, (a, b) in _dsn_pairs(text) or []]


_SECRET_KEY = re.compile(r"(?<![\w.-])(" + "|".join(sorted(SECRET_KEYS)) + r")\s*=\s*", re.IGNORECASE)


def _mask_dsn(text: str) -> str:
    """Every ``password=value`` in free text, its value read by libpq's rules (quotes, escapes)."""
    out, at = [], 0
    for key in _SECRET_KEY.finditer(text):
        if key.start() < at:
            continue
        read = _read_value(text, key.end())
        end = read[1] if read is not None else len(text)  # an unterminated quote: the rest is the value
        out += [text[at:key.end()], MASK]
        at = end
    return "".join(out + [text[at:]])
