"""What the PostgreSQL store and the pgvector index share: naming a server without its credentials, and
turning a server that is down or refusing into one clear error of kind UNAVAILABLE (the CLI's exit 3, the
API's 503). It sits at the bottom of the package, beside errors.py, so both layers can use it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from lookalike.errors import ErrorKind, LookalikeError

CONNECT_TIMEOUT_SECONDS = 5
#: SQLSTATE classes of a server that is away or refusing us (connection, authorisation, unknown database,
#: out of resources, shutting down), as opposed to a bug or a constraint.
UNAVAILABLE_STATES = ("08", "28", "3D", "53", "57")


def is_database_url(url: str | None) -> bool:
    return bool(url) and url.split("://", 1)[0] in ("postgresql", "postgres")


def without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if not parts.hostname:
        return parts._replace(netloc="").geturl()
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()


@contextmanager
def unavailable_as_error(url: str) -> Iterator[None]:
    """Connection failures and pool timeouts inside come out as LookalikeError(UNAVAILABLE) naming the server
    without credentials; other database errors pass through."""
    import psycopg
    from psycopg_pool import PoolTimeout

    where, password = without_credentials(url), urlsplit(url).password or ""
    try:
        yield
    except PoolTimeout:
        raise LookalikeError(f"PostgreSQL at {where} is unavailable: no connection within {CONNECT_TIMEOUT_SECONDS} s",
                             ErrorKind.UNAVAILABLE) from None
    except psycopg.Error as error:
        if error.sqlstate and not error.sqlstate.startswith(UNAVAILABLE_STATES):
            raise
        message = (str(error).strip().splitlines() or [type(error).__name__])[-1][:300]
        if password:
            message = message.replace(password, "***")
        raise LookalikeError(f"PostgreSQL at {where} is unavailable: {message}", ErrorKind.UNAVAILABLE) from None


def connection_pool(url: str, max_size: int, name: str, configure=None):
    """A psycopg pool in autocommit mode that checks a connection before handing it out (a server restart
    leaves broken ones behind). Connects once first, so a bad URL is a clear error now, not a pool timeout."""
    try:
        import psycopg
        from psycopg_pool import ConnectionPool
    except ImportError:
        raise LookalikeError("PostgreSQL needs psycopg: pip install -e '.[postgresql]'") from None
    with unavailable_as_error(url):
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
    pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False, timeout=CONNECT_TIMEOUT_SECONDS, name=name,
                          kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
                          check=ConnectionPool.check_connection, configure=configure)
    pool.open(wait=False)
    return pool
