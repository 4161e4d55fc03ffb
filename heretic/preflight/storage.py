"""Preflight of a shared study storage (`--storage URL`): driver, server, login, in seconds.

`check_storage(url)` connects once with a short timeout and runs `SELECT 1`; it raises
StorageError (exit 16) with one paragraph saying which of the three failed and what to do.
`heretic run` calls it before any weight loads, and `heretic preflight` shows it as a row.

Guaranteed: the password never appears in a message (the URL is shown masked, and the
driver's text is redacted). Not checked: that the login may create tables (the first run
creates Optuna's schema; a read-only role fails then, with the database's own message).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from heretic.errors import StorageError, StorageRefusedError
from heretic.preflight.report import Check, Status
from heretic.secrets import mask_url_password, redact, url_password

if TYPE_CHECKING:
    import sqlalchemy

CONNECT_TIMEOUT_S = 5
RDB_SCHEMES = ("postgresql", "mysql", "sqlite")
DRIVER_HINT = {
    "postgresql": "pip install 'heretic[postgres]' (the image has it)",
    "mysql": "pip install pymysql and write the URL as mysql+pymysql://...",
}
_CREDENTIALS = re.compile(
    r"password authentication failed|no password supplied|"
    r"authentication failed|access denied|role \S+ does not exist",
    re.I,
)
_NO_DATABASE = re.compile(r"database \S+ does not exist|unknown database", re.I)


def _fail(url: str, what: str, hint: str, *, permanent: bool = True) -> StorageError:
    kind = StorageRefusedError if permanent else StorageError
    return kind(f"The study storage {mask_url_password(url)} {what}", hint)


def _engine(url: str) -> sqlalchemy.Engine:
    """An engine for one probe connection; StorageError if the dialect or driver is missing."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.pool import NullPool

    scheme = url.split(":", 1)[0]
    family = scheme.split("+", 1)[0]
    if family not in RDB_SCHEMES:
        raise _fail(
            url,
            f"has the scheme '{scheme}', which is not a database heretic can share "
            "a study through.",
            "Use postgresql://USER:PASSWORD@HOST:5432/DB (or sqlite:///PATH for one machine).",
        )
    try:
        parsed = sqlalchemy.make_url(url)
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except (ArgumentError, ValueError) as exc:
        raise _fail(
            url,
            f"is not a valid database URL ({redact(str(exc))}).",
            "Write it as postgresql://USER:PASSWORD@HOST:5432/DB; percent-encode "
            "special characters in the password.",
        ) from None
    except (NoSuchModuleError, ImportError) as exc:
        raise _fail(
            url,
            f"needs a Python database driver that is not installed ({exc}).",
            f"Install it: {DRIVER_HINT.get(family, 'pip install the driver')}.",
        ) from None
    if family == "sqlite" and (parsed.username or parsed.password or parsed.host):
        raise _fail(
            url,
            "is a SQLite URL with a login or a host, which SQLite (a local file) does not have.",
            "Write it as sqlite:///relative/path.db or sqlite:////absolute/path.db, or use "
            "postgresql://USER:PASSWORD@HOST:5432/DB to share a study between machines.",
        )
    connect_args = {} if family == "sqlite" else {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return sqlalchemy.create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    except (ArgumentError, ValueError, TypeError) as exc:
        raise _fail(
            url,
            f"is not a URL its database accepts ({redact(str(exc).splitlines()[0])}).",
            "Write it as postgresql://USER:PASSWORD@HOST:5432/DB (or sqlite:///PATH for one "
            "machine).",
        ) from None


def check_storage(url: str) -> str:
    """Connect to the storage and run SELECT 1; returns what was reached, or raises."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    engine = _engine(url)
    password = url_password(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (DBAPIError, SQLAlchemyError) as exc:
        said = redact(" ".join(str(getattr(exc, "orig", None) or exc).split()), (password,))
        raise _classify(url, said) from None
    finally:
        engine.dispose()
    return f"{engine.dialect.name} reachable, login accepted"


def _classify(url: str, said: str) -> StorageError:
    if _CREDENTIALS.search(said):
        return _fail(
            url,
            f"refused the login: {said}",
            "Check the user and password in the URL (percent-encode special "
            "characters) and that this role may log in from this machine.",
        )
    if _NO_DATABASE.search(said):
        return _fail(
            url,
            f"has no such database: {said}",
            "Create it first (CREATE DATABASE ... OWNER ...), or fix the name after the last '/'.",
        )
    return _fail(
        url,
        f"cannot be reached within {CONNECT_TIMEOUT_S} s: {said}",
        "Check host and port, that the server runs and accepts connections from "
        "this machine (firewall, listen_addresses, pg_hba.conf).",
        permanent=False,
    )


def storage_check_row(url: str | None) -> Check:
    """The preflight table's row for the storage."""
    if not url:
        return Check("storage", Status.OK, "journal file in the study folder", "-")
    try:
        measured = check_storage(url)
    except StorageError as exc:
        return Check(
            "storage", Status.FAIL, mask_url_password(url), "driver, server, login", exc.paragraph()
        )
    return Check("storage", Status.OK, measured, "driver, server, login")
