from __future__ import annotations

from tests.acceptance.conftest import pg_cluster, publisher  # noqa: F401
