"""Where a study lives: a journal file (default), SQLite, or a PostgreSQL/MySQL server.

- no ``--storage``: ``DIR/journal.log``, Optuna's ``JournalStorage`` on a file (appends under a
  file lock), for several worker processes on one machine;
- a file path (no ``scheme://``): a journal file at that path;
- ``sqlite:///PATH``: one machine (SQLite over NFS is unsafe);
- ``postgresql://...`` / ``mysql://...`` (with an optional ``+driver``): workers on many
  machines, all pointing at the same server.

Everything that can go wrong on opening (unparsable URL, unknown scheme, missing driver,
server unreachable, wrong credentials) becomes one :class:`StorageError` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TransmodalError

RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
DRIVERS = {"postgresql": "psycopg 3 (pip install 'transmodal[postgresql]')",
           "mysql": "a MySQL driver such as PyMySQL (pip install pymysql; URL mysql+pymysql://...)"}
CONNECT_TIMEOUT_S = 10  # a server that does not answer is reported, not waited on for minutes


class StorageError(TransmodalError):
    """The --storage URL cannot be parsed, opened or reached."""


def locator(storage: str | None, folder: Path) -> str:
    """A string every worker process can open: an RDB URL or ``journal:ABSOLUTE_PATH``."""
    if storage is None:
        return f"journal:{(folder / 'journal.log').resolve()}"
    storage = storage.strip()
    if "://" not in storage:  # a journal file path (``journal:`` in front is allowed)
        path = storage[len("journal:"):] if storage.startswith("journal:") else storage
        if not path:
            raise StorageError("--storage needs a URL or a journal file path, e.g. "
                               "--storage search/journal.log or sqlite:///search.db")
        return f"journal:{Path(path).resolve()}"
    scheme = storage.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in RDB_SCHEMES:
        raise StorageError(f"--storage {storage}: unknown scheme {scheme!r}; use a journal file path, "
                           "sqlite:///PATH, postgresql://USER@HOST/DB or mysql://USER@HOST/DB")
    return storage


def open_storage(where: str) -> Any:
    """The Optuna storage behind a :func:`locator` string."""
    import optuna

    if where.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(where.partition(":")[2])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise StorageError(f"--storage {path}: cannot open the journal file ({e.strerror}); "
                               "pass a writable path") from None
    scheme = where.split("://", 1)[0].split("+", 1)[0].lower()
    scheme = "postgresql" if scheme == "postgres" else scheme
    url = where.replace("postgres://", "postgresql://", 1) if where.startswith("postgres://") else where
    kwargs: dict[str, Any] = {}
    if scheme == "postgresql":
        kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    elif scheme == "mysql":
        kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    shown = _hide_password(url)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except ImportError:  # Optuna wraps the driver's ModuleNotFoundError
        need = DRIVERS.get(scheme, "its database driver")
        raise StorageError(f"--storage {shown}: the database driver is not installed; install "
                           f"{need}") from None
    except Exception as e:  # sqlalchemy: ArgumentError (parse), OperationalError (connect), ...
        kind = type(e).__name__
        what = "cannot be parsed" if kind in ("ArgumentError", "ValueError") else "cannot be opened"
        detail = _one_line(getattr(e, "orig", None) or e)[:200]
        raise StorageError(f"--storage {shown} {what} ({kind}: {detail}); check the URL, that the "
                           "server is running and reachable, and the user's rights") from None


def _hide_password(url: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` (messages and files)."""
    head, sep, rest = url.partition("://")
    cred, at, host = rest.rpartition("@")
    if not at or ":" not in cred:
        return url
    return f"{head}{sep}{cred.split(':', 1)[0]}:***@{host}"


def _one_line(e: Any) -> str:
    return " ".join(str(e).split())
