"""PostgreSQL catalog URIs: what libpq is given, and what messages may show.

A catalog URI is a libpq connection URI (``postgresql://user@host:5432/dbname``,
``postgres://...``, or SQLAlchemy's ``postgresql+psycopg://...``), with
``?host=/path/to/socket-dir`` for a Unix socket and any libpq parameter
(``sslmode``, ``connect_timeout``, ``options=-csearch_path%3Dbeamline``, ...).
dask_broker adds one parameter of its own, ``mode=ro`` (read-only, as for
SQLite), which is taken out before libpq sees the URI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ...errors import StoreURIError
from ...redact import mask_uri

__all__ = ["PostgresURI", "parse_postgres_uri", "with_read_only", "SCHEMES",
           "DEFAULT_CONNECT_TIMEOUT_S", "APPLICATION_NAME"]

#: URI schemes of the PostgreSQL store.
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
#: Seconds a connection attempt waits for a server that does not answer (libpq's
#: ``connect_timeout``; a URI that sets it wins).
DEFAULT_CONNECT_TIMEOUT_S = 5
#: ``application_name`` of our sessions (in ``pg_stat_activity``) unless the URI sets one.
APPLICATION_NAME = "dask_broker"

_EXAMPLE = ("write 'postgresql://user@host:5432/dbname' or "
            "'postgresql:///dbname?host=/path/to/socket-dir'")


@dataclass(frozen=True)
class PostgresURI:
    """One parsed catalog URI.

    ``conninfo`` is what libpq connects with (passwords included: never shown);
    ``where`` names the server for messages (``host:port`` or the socket), without
    credentials.
    """

    uri: str
    conninfo: str
    read_only: bool
    where: str
    dbname: str
    connect_kwargs: tuple[tuple[str, Any], ...]

    def __repr__(self) -> str:
        return f"PostgresURI({mask_uri(self.uri)!r}, read_only={self.read_only})"


def _where(params: dict[str, str]) -> str:
    hosts = (params.get("host") or params.get("hostaddr") or "").split(",")
    ports = (params.get("port") or "5432").split(",")
    out = []
    for i, host in enumerate(hosts):
        port = ports[i] if i < len(ports) else ports[-1]
        if not host:
            out.append(f"the local socket (port {port})")
        elif host.startswith("/") or host.startswith("@"):
            out.append(f"the socket {host}/.s.PGSQL.{port}")
        else:
            out.append(f"{host}:{port}")
    return ", ".join(out)


def parse_postgres_uri(uri: Any) -> PostgresURI:
    """Check a PostgreSQL catalog URI; split off dask_broker's ``mode=ro``.

    Raises
    ------
    StoreURIError
        Not a PostgreSQL URI, or one libpq cannot parse (the message shows the
        URI with its password masked).

    Examples
    --------
    >>> p = parse_postgres_uri("postgresql://alice:s3cret@db.example:5433/catalog?mode=ro")
    >>> p.where, p.dbname, p.read_only
    ('db.example:5433', 'catalog', True)
    >>> p.conninfo
    'postgresql://alice:s3cret@db.example:5433/catalog'
    >>> parse_postgres_uri("postgresql:///catalog?host=/run/pg").where
    'the socket /run/pg/.s.PGSQL.5432'
    """
    if not isinstance(uri, str) or "://" not in uri:
        raise StoreURIError(f"{mask_uri(uri)!r} is not a PostgreSQL URI; {_EXAMPLE}")
    scheme, _, rest = uri.partition("://")
    if scheme.lower() not in SCHEMES:
        raise StoreURIError(f"{mask_uri(uri)!r} is not a PostgreSQL URI (scheme {scheme!r}); "
                            f"{_EXAMPLE}")
    base, _, query = rest.partition("?")
    kept, read_only = [], False
    for item in (i for i in query.split("&") if i):
        key, _, value = item.partition("=")
        if unquote(key) != "mode":
            kept.append(item)
        elif unquote(value) == "ro":
            read_only = True
        else:
            raise StoreURIError(
                f"mode={unquote(value)!r} in {mask_uri(uri)!r}; the only mode is 'ro' "
                "(read-only); leave it out to open the catalog for writing")
    conninfo = "postgresql://" + base + ("?" + "&".join(kept) if kept else "")
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError as err:
        raise StoreURIError(
            f"the PostgreSQL store needs the psycopg driver, which is not installed "
            f"({err}): pip install 'dask_broker[postgres]'") from err
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    except Exception as err:  # psycopg.ProgrammingError: libpq's parser refused it
        raise StoreURIError(
            f"{mask_uri(uri)!r} is not a valid PostgreSQL URI: "
            f"{mask_uri(str(err)).strip()}; {_EXAMPLE}") from None
    for port in (params.get("port") or "5432").split(","):
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise StoreURIError(f"{mask_uri(uri)!r} is not a valid PostgreSQL URI: the port "
                                f"{port!r} is not a number from 1 to 65535; {_EXAMPLE}")
    kwargs: dict[str, Any] = {}
    if "connect_timeout" not in params:
        kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_S
    if "application_name" not in params:
        kwargs["application_name"] = APPLICATION_NAME
    return PostgresURI(uri=uri, conninfo=conninfo, read_only=read_only,
                       where=_where(params), dbname=params.get("dbname", ""),
                       connect_kwargs=tuple(sorted(kwargs.items())))


def with_read_only(uri: str) -> str:
    """``uri`` with ``mode=ro`` (once)."""
    base, sep, query = uri.partition("?")
    items = [i for i in query.split("&") if i and unquote(i.partition("=")[0]) != "mode"]
    return base + "?" + "&".join([*items, "mode=ro"])
