"""The MongoDB store, in databroker's "mongo_normalized" layout (see :mod:`.store`).

Modules, one job each: :mod:`.uri` (URIs and this process's clients),
:mod:`.connection` (the databases of a store, failures as StoreURIError),
:mod:`.indexes` (suitcase-mongo's and dask_broker's indexes), :mod:`.values`
(values between Python and BSON), :mod:`.writes` (documents in, all-or-nothing),
:mod:`.reads` (documents and event pages out), :mod:`.search` (runs by query and
text), :mod:`.store` (the :class:`MongoStore` that joins them).
"""

from __future__ import annotations

from .store import MongoStore
from .uri import DEFAULT_SERVER_SELECTION_TIMEOUT_MS

__all__ = ["MongoStore", "DEFAULT_SERVER_SELECTION_TIMEOUT_MS"]
