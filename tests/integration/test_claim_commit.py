"""The dispatcher's claims commit without waiting for the WAL flush; every
other write waits (tasker.db.Database.held, flush_wait=False)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from tasker import db


def _setting(held: db.HeldConnection) -> str:
    with held.transaction() as conn:
        return str(conn.execute(sa.text("SHOW synchronous_commit")).scalar_one())


def test_only_the_claims_connection_skips_the_flush_wait(pg_url: str) -> None:
    database = db.Database(pg_url)
    try:
        claims = database.held(autocommit=True, flush_wait=False)
        publishes = database.held(autocommit=True)
        writer = database.held()
        assert _setting(claims) == "off"
        assert _setting(publishes) == "on"  # a single publish must be durable
        assert _setting(writer) == "on"  # starts and outcomes must be durable
        claims.close()
        assert _setting(database.held(autocommit=True)) == "on"  # nothing leaks via the pool
        for held in (claims, publishes, writer):
            held.close()
    finally:
        database.dispose()


def test_sqlite_ignores_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = db.Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        held = database.held(autocommit=True, flush_wait=False)
        with held.transaction() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        held.close()
    finally:
        database.dispose()


def test_a_pooled_connection_the_server_ended_is_replaced_without_a_ping(pg_url: str) -> None:
    """No `SELECT 1` per checkout: a connection the server terminated is
    seen on its socket and replaced, so the next publish works."""
    database = db.Database(pg_url)
    try:
        engine = database.autocommit_engine()
        assert engine is not None and not engine.pool._pre_ping
        with engine.connect() as conn:
            victim = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with database.engine.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": victim})
            gone = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p")
            deadline = time.monotonic() + 10
            while other.execute(gone, {"p": victim}).scalar_one():  # its process has exited
                assert time.monotonic() < deadline, "the backend did not end"
                time.sleep(0.01)
        with engine.connect() as conn:  # the pool's idle connection is the ended one
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        assert pid != victim
    finally:
        database.dispose()
