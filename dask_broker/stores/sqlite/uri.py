"""SQLite catalog URIs: ``sqlite:///relative/catalog.db``, ``sqlite:////absolute/catalog.db``,
with the options ``synchronous`` and ``mode=ro``."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs

from ...errors import StoreURIError
from ...redact import mask_uri

__all__ = ["parse_sqlite_uri"]


def parse_sqlite_uri(uri: str) -> tuple[Path, dict[str, str]]:
    """Split a SQLAlchemy-style SQLite URI into an absolute path and options.

    ``sqlite:///relative/catalog.db`` is relative to the current directory,
    ``sqlite:////absolute/catalog.db`` is absolute.

    Examples
    --------
    >>> parse_sqlite_uri("sqlite:////data/cat.db?synchronous=normal")
    (PosixPath('/data/cat.db'), {'synchronous': 'normal'})
    >>> parse_sqlite_uri("sqlite:////data/cat.db?mode=ro")
    (PosixPath('/data/cat.db'), {'mode': 'ro', 'synchronous': 'full'})
    """
    prefix = "sqlite:///"
    if not isinstance(uri, str) or not uri.startswith(prefix):
        raise StoreURIError(
            f"{mask_uri(uri)!r} is not a SQLite catalog URI; write "
            "'sqlite:///relative/catalog.db' or 'sqlite:////absolute/catalog.db'"
        )
    rest, _, query = uri[len(prefix):].partition("?")
    if not rest or rest == ":memory:":
        raise StoreURIError(
            f"{mask_uri(uri)!r} names no file; the embedded store is a file on disk so that "
            "worker processes can open it (use Broker.temp() for a throwaway catalog)"
        )
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - {"synchronous", "mode"}
    if unknown:
        raise StoreURIError(f"unknown option(s) {sorted(unknown)} in {mask_uri(uri)!r}; known: "
                            "synchronous, mode")
    if options.get("mode", "ro") != "ro":
        raise StoreURIError(f"mode={options['mode']!r} in {mask_uri(uri)!r}; the only mode is "
                            "'ro' (read-only); leave it out to open the catalog for writing")
    sync = options.get("synchronous", "full").lower()
    if sync not in ("full", "normal", "extra"):
        raise StoreURIError(
            f"synchronous={sync!r} in {mask_uri(uri)!r}; use full, normal or extra")
    options["synchronous"] = sync
    return Path(os.path.abspath(rest)), options
