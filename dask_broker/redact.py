"""Passwords out of what people read: :func:`mask_uri`.

A store URI may carry credentials (``mongodb://user:password@host/db``, the
asset registry's URI percent-encoded in its ``asset_registry_uri`` option,
``postgresql://user:password@host/db``, ``?password=...``).  The real URI is
kept only where a connection is made and in the picklable recipe a worker
needs; every repr, error message, log record and CLI line formats it through
:func:`mask_uri`.
"""

from __future__ import annotations

import re

__all__ = ["mask_uri", "MASK"]

#: What a password is replaced with.
MASK = "***"

# What ends a URI in running text.
_END = r"\s'\"<>`"
# scheme://user:password@ -- the password runs to the last "@" before the query, so
# one with an unescaped "@" or "/" (which a parser rejects) is still masked whole.
_USERINFO = re.compile(
    rf"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*:/+(?P<user>[^:@/?#{_END}]*):)"
    rf"(?P<secret>[^?#{_END}]*)(?=@)")
# The same inside a percent-encoded URI (an option's value): %3A%2F%2Fuser%3Apassword%40
_ENCODED_USERINFO = re.compile(
    rf"(?P<head>%3A(?:%2F)+(?P<user>(?:(?!%3A|%40|%2F|%3F)[^&;#{_END}])*)%3A)"
    rf"(?P<secret>(?:(?!%3F)[^&;#{_END}])*)(?=%40)", re.IGNORECASE)
# key=value where the key names a secret: ?password=, &tlsCertificateKeyFilePassword=,
# libpq's "password=..." (also percent-encoded: %26password%3D...).
_SECRET_KEY = r"[A-Za-z_]*(?:password|passwd|pwd|secret|token)[A-Za-z_]*"
_OPTION = re.compile(
    rf"(?P<head>(?:^|[?&;\s])(?:{_SECRET_KEY})=)(?P<secret>[^&;#{_END}]*)", re.IGNORECASE)
_ENCODED_OPTION = re.compile(
    rf"(?P<head>(?:%3F|%26)(?:{_SECRET_KEY})%3D)(?P<secret>(?:(?!%26)[^&;#{_END}])*)",
    re.IGNORECASE)
# KEY:value pairs of authMechanismProperties (AWS_SESSION_TOKEN:...), plain or encoded.
_PROPERTY = re.compile(
    rf"(?P<head>(?:=|,|%3D|%2C)(?:{_SECRET_KEY})(?::|%3A))"
    rf"(?P<secret>(?:(?!%2C|%26)[^,&;#{_END}])*)", re.IGNORECASE)
_PATTERNS = (_USERINFO, _ENCODED_USERINFO, _OPTION, _ENCODED_OPTION, _PROPERTY)


def _mask(match: re.Match) -> str:
    return match["head"] + MASK if match["secret"] else match[0]


def mask_uri(text: str) -> str:
    """``text`` (a URI, or a message holding URIs) with every password replaced by ``***``.

    Masks ``scheme://user:password@`` (any scheme: ``mongodb``, ``mongodb+srv``,
    ``postgresql``, ...), the same in a percent-encoded URI given as an option's
    value (``asset_registry_uri=mongodb%3A%2F%2Fuser%3Apassword%40...``), options
    whose name says they are secret (``password=``, ``tlsCertificateKeyFilePassword=``,
    ``sslpassword=``, ``...token=``), and secret ``authMechanismProperties``
    (``AWS_SESSION_TOKEN:...``).  The user, hosts, database and other options stay,
    so the text still says where the data is.  A value that is not a ``str`` is
    returned as it is.

    Use it wherever a URI is shown; connect with the real one.

    Examples
    --------
    >>> mask_uri("mongodb://alice:s3cret@db1:27017,db2/mds?replicaSet=rs0")
    'mongodb://alice:***@db1:27017,db2/mds?replicaSet=rs0'
    >>> mask_uri("postgresql://db/catalog?user=alice&password=s3cret")
    'postgresql://db/catalog?user=alice&password=***'
    >>> mask_uri("mongodb://h/mds?asset_registry_uri=mongodb%3A%2F%2Fbob%3As3cret%40h2%2Fassets")
    'mongodb://h/mds?asset_registry_uri=mongodb%3A%2F%2Fbob%3A***%40h2%2Fassets'
    """
    if not isinstance(text, str):
        return text
    for pattern in _PATTERNS:
        text = pattern.sub(_mask, text)
    return text
