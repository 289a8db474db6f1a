"""PostgresStore: the shipped conformance suite, URIs, errors, schema versions, searches
in SQL, concurrency (several writer processes), fork safety."""

from __future__ import annotations

import pytest

from dask_broker.stores.conformance import StoreConformance
from dask_broker.stores.postgres import PostgresStore

pytestmark = pytest.mark.postgres


class TestPostgresStoreConformance(StoreConformance):
    @pytest.fixture
    def make_store(self, postgres_uri):
        return PostgresStore.from_uri(postgres_uri)
