"""Existing data survives the move to game-neutral deals (migration 0004), not a reset.

A database at version 3 holds a group-buy's order, its payment, a deal the pipeline has
processed, a deal and a refund it has not; after migrating, the pipeline turns the old
pending rows into orders and payments as it always did, and replaying every row creates
nothing twice (the migrated order and payment are the same (campaign, instance, line)).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from actors.payments import Movement, SandboxPayments
from actors.pipeline_worker import PipelineWorker
from storage import db
from storage.config import parse
from storage.migrate import available, migrate
from tests.support import configs, ledger
from tests.support.services import Services

pytestmark = pytest.mark.integration


@pytest.fixture
async def old_database(migrated: Services) -> AsyncIterator[str]:
    url = db.with_database(migrated.database_url, "fission_migration_check")
    admin = await asyncpg.connect(db.with_database(url, "postgres"))
    try:
        await admin.execute('DROP DATABASE IF EXISTS "fission_migration_check"')
        await admin.execute('CREATE DATABASE "fission_migration_check"')
    finally:
        await admin.close()
    yield url
    admin = await asyncpg.connect(db.with_database(url, "postgres"))
    try:
        await admin.execute('DROP DATABASE IF EXISTS "fission_migration_check" WITH (FORCE)')
    finally:
        await admin.close()


async def test_old_orders_payments_and_outbox_rows_move_to_deal_lines(
        old_database: str) -> None:
    conn = await asyncpg.connect(old_database)
    try:
        assert await migrate(conn, up_to=3) == [1, 2, 3]
        old_ref = SandboxPayments.reference(Movement("payment", "c1", "g1", "alice", "alice",
                                                     6000))
        await conn.execute(
            "INSERT INTO orders (campaign, group_id, user_id, sku, amount, status, payment_ref)"
            " VALUES ('c1', 'g1', 'alice', 'SKU-c1', 6000, 'paid', $1)", old_ref)
        await conn.execute(
            "INSERT INTO payments (kind, campaign, group_id, user_id, amount, adapter,"
            " reference) VALUES ('payment', 'c1', 'g1', 'alice', 6000, 'sandbox', $1)",
            old_ref)
        deal = {"group": "g1", "seq": 3, "campaign": "c1", "sku": "SKU-c1", "price": 6000,
                "members": ["alice"], "at": 1, "type": "deal_completed"}
        pending = {**deal, "group": "g2", "members": ["bob", "carol"]}
        refund = {"group": "g3", "seq": 3, "campaign": "c1", "user": "dave", "amount": 6000,
                  "at": 1, "type": "refunded"}
        await conn.executemany(
            "INSERT INTO outbox (stream, version, type, data, processed_at)"
            " VALUES ('groupbuy:c1', $1, $2, $3::jsonb, $4)",
            [(1, "deal_completed", json.dumps(deal), None), (2, "deal_completed",
             json.dumps(pending), None), (3, "refunded", json.dumps(refund), None)])
        await conn.execute("UPDATE outbox SET processed_at = now() WHERE version = 1")

        # Every later migration, whatever number the newest has by now.
        assert await migrate(conn) == [m.version for m in available() if m.version > 3]
        kinds = [r["type"] for r in await conn.fetch("SELECT type FROM outbox ORDER BY id")]
        assert kinds == ["deal", "deal", "refund"]
        lines = json.loads(await conn.fetchval("SELECT data FROM outbox WHERE version = 2"))
        assert lines["lines"] == [
            {"user": u, "sku": "SKU-c1", "amount": 6000, "instance": "g2", "line": u}
            for u in ("bob", "carol")]
        config = parse(configs.document([configs.campaign("c1", size=2, pay=False)],
                                        database_url=old_database), {}, "test")
        worker = PipelineWorker(config, old_database)
        await worker.start()
        try:
            await worker.drain()

            async def state() -> list[tuple[object, ...]]:
                rows = await conn.fetch(
                    "SELECT o.kind, o.instance, o.line, o.user_id, o.amount, o.payment_ref"
                    " FROM orders o ORDER BY o.id")
                return [tuple(r) for r in rows]

            first = await state()
            assert [row[:5] for row in first] == [
                ("groupbuy", "g1", "alice", "alice", 6000),
                ("groupbuy", "g2", "bob", "bob", 6000),
                ("groupbuy", "g2", "carol", "carol", 6000)]
            assert first[0][5] == old_ref  # the same reference, derived the same way
            refunds = await conn.fetch("SELECT user_id, amount FROM payments"
                                       " WHERE kind = 'refund'")
            assert [tuple(r) for r in refunds] == [("dave", 6000)]
            # Replaying every row, the migrated one too, creates nothing twice.
            await conn.execute("UPDATE outbox SET processed_at = NULL")
            await worker.drain()
            assert await state() == first
            assert await conn.fetchval("SELECT count(*) FROM payments") == 4
        finally:
            await worker.stop()
    finally:
        await conn.close()


async def test_bindings_made_before_binding_modes_are_in_force_in_the_history(
        old_database: str) -> None:
    conn = await asyncpg.connect(old_database)
    try:
        assert (await migrate(conn, up_to=13))[-1] == 13
        await conn.execute(
            "INSERT INTO referrals (user_id, referrer, bound_at) VALUES"
            " ('bob', 'alice', '2026-01-02T00:00:00Z'), ('alice', 'zed', '2026-01-01T00:00:00Z')")
        assert (await migrate(conn))[0] == 14
        rows = await conn.fetch("SELECT user_id, referrer, bound_at, ended_at FROM"
                                " referral_history ORDER BY bound_at")
        assert [(r["user_id"], r["referrer"], r["ended_at"]) for r in rows] == [
            ("alice", "zed", None), ("bob", "alice", None)]
        assert rows[0]["bound_at"] == await conn.fetchval(
            "SELECT bound_at FROM referrals WHERE user_id = 'alice'")
        assert await ledger.referral_problems(conn) == []
        # One binding in force per user, in the history as in `referrals`.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO referral_history (user_id, referrer, bound_at)"
                               " VALUES ('bob', 'carol', now())")
    finally:
        await conn.close()


async def test_refunded_orders_and_their_commissions_move_to_refund_pieces(
        old_database: str) -> None:
    """Migration 0016: a refunded order was refunded whole, in one piece; its reversed
    commission was reversed whole; a settled one settled whole; the ledger stays sound."""
    conn = await asyncpg.connect(old_database)
    try:
        await migrate(conn, up_to=13)
        await conn.execute(
            "INSERT INTO orders (campaign, kind, instance, line, user_id, sku, amount, status,"
            " payment_ref, refunded_at, confirmed_at) VALUES"
            " ('c1', 'groupbuy', 'g1', 'bob', 'bob', 'S', 6000, 'refunded', 'p1', now(), now()),"
            " ('c1', 'groupbuy', 'g1', 'cat', 'cat', 'S', 6000, 'paid', 'p2', NULL, now())")
        await conn.execute(
            "INSERT INTO payments (kind, campaign, instance, line, user_id, amount, adapter,"
            " reference, payment_id) VALUES"
            " ('payment', 'c1', 'g1', 'bob', 'bob', 6000, 'sandbox', 'a', 'pay1'),"
            " ('refund', 'c1', 'g1', 'bob', 'bob', 6000, 'sandbox', 'b', 'pay1'),"
            " ('payment', 'c1', 'g1', 'cat', 'cat', 6000, 'sandbox', 'c', NULL)")
        await conn.execute(
            "INSERT INTO provider_refunds (refund_id, payment_id, user_id, amount, total)"
            " VALUES ('rpay1', 'pay1', 'bob', 6000, 6000)")
        await conn.execute(
            "INSERT INTO commissions (order_id, level, beneficiary, buyer, campaign, base,"
            " rate_bps, amount, status, settle_at) VALUES"
            " (1, 1, 'alice', 'bob', 'c1', 6000, 1000, 600, 'reversed', now()),"
            " (2, 1, 'alice', 'cat', 'c1', 6000, 1000, 600, 'settled', now())")
        await conn.execute(
            "INSERT INTO ledger_entries (txn, commission_id, account, amount) VALUES"
            " ('commissions:1-2:post', NULL, 'shop:commission', -1200),"
            " ('commissions:1-2:post', 1, 'user:alice:pending', 600),"
            " ('commissions:1-2:post', 2, 'user:alice:pending', 600),"
            " ('commission:1:reverse', 1, 'user:alice:pending', -600),"
            " ('commission:1:reverse', 1, 'shop:commission', 600),"
            " ('commission:2:settle', 2, 'user:alice:pending', -600),"
            " ('commission:2:settle', 2, 'user:alice:available', 600)")
        assert 16 in await migrate(conn)
        orders = await conn.fetch("SELECT status, refunded_amount FROM orders ORDER BY id")
        assert [tuple(r) for r in orders] == [("refunded", 6000), ("paid", 0)]
        pieces = await conn.fetch("SELECT order_id, piece, amount FROM order_refunds")
        assert [tuple(r) for r in pieces] == [(1, 1, 6000)]
        rows = await conn.fetch("SELECT reversed, settled FROM commissions ORDER BY id")
        assert [tuple(r) for r in rows] == [(600, None), (0, 600)]
        assert set(await conn.fetch("SELECT DISTINCT piece FROM payments")) == {(1,)}
        assert await ledger.problems(conn) == []
    finally:
        await conn.close()
