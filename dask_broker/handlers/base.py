"""The handler contract, and the two helpers every caller of a handler uses.

A handler class is constructed as ``handler_class(full_path, **resource_kwargs)``
and called as ``handler(**datum_kwargs)``.  Optional methods: ``close()``
(release files), ``get_file_list(datum_kwargs_list)`` (the files a resource
covers), ``read_many(datum_kwargs_list)`` (read several datum of the resource
at once -- the fast path; see :func:`read_many`), ``read_into(datum_kwargs_list,
out)`` (the same, written straight into ``out[i]``: no intermediate copy; see
:func:`read_into`) and ``describe(**datum_kwargs)`` (the shape and dtype of a
datum's data from the file's metadata, without reading it).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

__all__ = ["Handler", "BulkHandler", "read_many", "read_into", "close_handler"]


@runtime_checkable
class Handler(Protocol):
    """What every handler does: return the data of one datum."""

    def __call__(self, **datum_kwargs: Any) -> Any: ...


@runtime_checkable
class BulkHandler(Handler, Protocol):
    """A handler that can also read many datum of its resource in one go."""

    def read_many(self, datum_kwargs_list: Sequence[Mapping[str, Any]]) -> list[Any]: ...

    def close(self) -> None: ...


def read_many(handler: Handler, datum_kwargs_list: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Read several datum of one resource, in order.

    Uses the handler's ``read_many`` method where it has one (one I/O request
    for many datum), otherwise calls the handler once per datum.

    Parameters
    ----------
    handler
        A handler instance.
    datum_kwargs_list
        The ``datum_kwargs`` of each datum.

    Returns
    -------
    list
        One value per entry of ``datum_kwargs_list``.

    Raises
    ------
    ValueError
        ``read_many`` returned the wrong number of values.

    Examples
    --------
    >>> class Double:
    ...     def __call__(self, x):
    ...         return 2 * x
    >>> read_many(Double(), [{"x": 1}, {"x": 2}])
    [2, 4]
    """
    kwargs_list = list(datum_kwargs_list)
    bulk = getattr(handler, "read_many", None)
    if bulk is None:
        return [handler(**kwargs) for kwargs in kwargs_list]
    values = list(bulk(kwargs_list))
    if len(values) != len(kwargs_list):
        raise ValueError(
            f"{type(handler).__qualname__}.read_many returned {len(values)} values "
            f"for {len(kwargs_list)} datum"
        )
    return values


def read_into(handler: Handler, datum_kwargs_list: Sequence[Mapping[str, Any]],
              out: Any) -> Any:
    """Read several datum of one resource into ``out`` (``out[i]``: datum ``i``); return it.

    Uses the handler's ``read_into`` method where it has one (reads straight into
    ``out``), else :func:`read_many` and a copy of each value into its row.

    Examples
    --------
    >>> import numpy as np
    >>> class Double:
    ...     def __call__(self, x):
    ...         return 2 * x
    >>> read_into(Double(), [{"x": 1}, {"x": 2}], np.zeros(2))
    array([2., 4.])
    """
    kwargs_list = list(datum_kwargs_list)
    bulk = getattr(handler, "read_into", None)
    if bulk is not None:
        bulk(kwargs_list, out)
        return out
    for i, value in enumerate(read_many(handler, kwargs_list)):
        out[i] = value
    return out


def close_handler(handler: Any, *, what: str = "") -> bool:
    """Call ``handler.close()`` if it has one; an error is warned, never raised.

    Parameters
    ----------
    handler
        The handler to close.
    what
        Words naming what the handler served (e.g. ``"resource 'abc'"``), for the warning.

    Returns
    -------
    bool
        False when ``close()`` raised (a :class:`RuntimeWarning` was issued).

    Examples
    --------
    >>> class Broken:
    ...     def close(self):
    ...         raise OSError("disk gone")
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     close_handler(Broken())
    False
    """
    close = getattr(handler, "close", None)
    if close is None:
        return True
    try:
        close()
    except Exception as err:  # a handler's close() must never break eviction or exit
        warnings.warn(
            f"closing handler {type(handler).__qualname__}"
            + (f" of {what}" if what else "")
            + f" raised {type(err).__name__}: {err}; ignored",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True
