"""A stream_resource's ``uri``: to a local path, and through a ``root_map``.

event-model writes ``file://localhost/<absolute path>`` (a directory ends in
``/``); ``file:///<absolute path>`` and a bare absolute path are accepted too.
Anything that is not a local absolute path is an
:class:`~dask_broker.errors.InvalidArgumentError` naming the uri.

A ``root_map`` (``{path prefix as stored: where it is mounted now}``, as
databroker applies to a resource's ``root``) is applied to the *path* of a uri:
the longest prefix that ends on a path-component boundary wins, the
``file://localhost`` form of the uri and a directory's trailing ``/`` are kept.
"""

from __future__ import annotations

import os
import re
from typing import Mapping
from urllib.parse import quote, unquote

from ..errors import InvalidArgumentError
from ..redact import mask_uri

__all__ = ["uri_to_path", "path_to_uri", "remap_uri"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_LOCAL_HOSTS = ("", "localhost")


def _split(uri: str) -> tuple[str, str]:
    """``(prefix, path)``: ``prefix`` is ``""`` for a bare path, else ``file://host``.

    ``path`` is still percent-encoded for a uri, verbatim for a bare path.
    """
    if not isinstance(uri, str):
        raise TypeError(f"a stream_resource uri must be a str, got {mask_uri(uri)!r}")
    match = _SCHEME.match(uri)
    if match is None:
        if not uri.startswith("/"):
            raise InvalidArgumentError(
                f"uri {mask_uri(uri)!r} is neither a file:// uri nor an absolute path; write it as "
                f"'file://localhost/<absolute path>'"
            )
        return "", uri
    if match.group(1).lower() != "file":
        raise InvalidArgumentError(
            f"uri {mask_uri(uri)!r} has scheme {match.group(1)!r}; only local "
            "'file://localhost/...' "
            f"uris (or absolute paths) can be read. Copy the data to a local or mounted "
            f"filesystem and point the uri there (a root_map can remap its path)"
        )
    rest = uri[match.end():]
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host.lower() not in _LOCAL_HOSTS:
            raise InvalidArgumentError(
                f"uri {mask_uri(uri)!r} names host {host!r}; only local files "
                "('file://localhost/...' "
                f"or 'file:///...') can be read. Mount that host's files here and remap "
                f"them with a root_map"
            )
        if not slash:
            raise InvalidArgumentError(
                f"uri {mask_uri(uri)!r} has no path; write it as "
                "'file://localhost/<absolute path>'")
        return uri[:match.end() + 2 + len(host)], slash + path
    if rest.startswith("/"):  # file:/abs/path (RFC 8089 allows it)
        return uri[:match.end()], rest
    raise InvalidArgumentError(
        f"uri {mask_uri(uri)!r} has a relative path; write it as "
        "'file://localhost/<absolute path>'"
    )


def uri_to_path(uri: str) -> str:
    """The local absolute path a stream_resource ``uri`` points at.

    Percent-escapes are decoded; a trailing ``/`` (a directory uri) is kept.

    Parameters
    ----------
    uri
        ``file://localhost/<path>``, ``file:///<path>`` or an absolute path.

    Returns
    -------
    str

    Raises
    ------
    InvalidArgumentError
        Another scheme (``http://``), a remote host, or a relative path.

    Examples
    --------
    >>> uri_to_path("file://localhost/data/scan%201/det.h5")
    '/data/scan 1/det.h5'
    >>> uri_to_path("file:///data/tiffs/")
    '/data/tiffs/'
    >>> uri_to_path("/data/det.h5")
    '/data/det.h5'
    """
    prefix, path = _split(uri)
    return unquote(path) if prefix else path


def path_to_uri(path: str | os.PathLike) -> str:
    """``file://localhost`` + the percent-encoded absolute ``path`` (a trailing ``/`` is kept).

    Raises
    ------
    InvalidArgumentError
        ``path`` is relative.

    Examples
    --------
    >>> path_to_uri("/data/scan 1/")
    'file://localhost/data/scan%201/'
    """
    path = os.fspath(path)
    if not path.startswith("/"):
        raise InvalidArgumentError(f"path {path!r} must be absolute to be written as a file uri")
    return "file://localhost" + quote(path)


def _components(path: str) -> list[str]:
    return path.rstrip("/").split("/")[1:] if path.rstrip("/") else []


def remap_uri(uri: str, root_map: Mapping[str, str]) -> str:
    """Apply a databroker-style ``root_map`` to the path of ``uri``.

    Parameters
    ----------
    uri
        A stream_resource uri (or absolute path), as :func:`uri_to_path` accepts.
    root_map
        ``{old path prefix: new path prefix}``.  A prefix matches whole path
        components only (``/a/b`` remaps ``/a/b/c`` but not ``/a/bc``); the
        longest matching prefix wins.

    Returns
    -------
    str
        ``uri`` with its path prefix replaced, in the same form as the input
        (``file://localhost``, ``file://`` or a bare path) and with its trailing
        ``/`` if it had one; ``uri`` itself when no prefix matches.

    Raises
    ------
    InvalidArgumentError
        ``uri`` is not a local uri, or a root_map entry is not an absolute path.

    Examples
    --------
    >>> remap_uri("file://localhost/GPFS/xf23id/2024/scan/", {"/GPFS/xf23id": "/mnt/xf23id"})
    'file://localhost/mnt/xf23id/2024/scan/'
    >>> remap_uri("file://localhost/GPFS/xf23id2/a.h5", {"/GPFS/xf23id": "/mnt/xf23id"})
    'file://localhost/GPFS/xf23id2/a.h5'
    """
    prefix, path = _split(uri)
    decoded = [unquote(c) for c in path.split("/")] if prefix else path.split("/")
    encoded = path.split("/")  # [""] + components (+ [""] for a trailing "/")
    best: tuple[int, str] | None = None
    for old, new in root_map.items():
        for which, value in (("key", old), ("value", new)):
            if not isinstance(value, str) or not value.startswith("/"):
                raise InvalidArgumentError(
                    f"root_map {which} {value!r} (entry {old!r}: {new!r}) must be an "
                    f"absolute path"
                )
        old_parts = _components(old)
        n = len(old_parts)
        if decoded[1:n + 1] == old_parts and len(decoded) > n and (best is None or n > best[0]):
            best = (n, new)
    if best is None:
        return uri
    n, new = best
    new_root = new.rstrip("/")
    tail = encoded[n + 1:]
    new_path = new_root + ("/" + "/".join(tail) if tail else "")
    if not new_path:
        new_path = "/"
    return prefix + (quote(new_root) + new_path[len(new_root):] if prefix else new_path)
