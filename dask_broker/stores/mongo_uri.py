"""Moved to :mod:`dask_broker.stores.mongo.uri`; this name stays for old imports.

The module object itself is that module (not a copy), so its state is shared.
"""

import sys

from .mongo import uri as _module

sys.modules[__name__] = _module
