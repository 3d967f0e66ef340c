"""The test PostgreSQL cluster itself starts and answers queries."""

from __future__ import annotations

import sqlalchemy as sa


def test_fresh_database_answers_queries(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select 1 + 1")).scalar() == 2
    engine.dispose()
