-- Fission schema, version 16: refunds in pieces, and after settlement with debt.
--
-- An order refunds in pieces (`order_refunds`, one row per piece, numbered from 1 per
-- order) until `refunded_amount` reaches its `amount`; only then is its status
-- 'refunded'. Each piece is its own money movement (`payments.piece`) and its own
-- provider refund (refund id `r{payment}` for the first piece, as before this version,
-- `r{payment}-{n}` for the n-th). A commission goes back in proportion
-- (`commissions.reversed`, fen taken back so far, pending or settled), and settles only
-- its rest (`commissions.settled`, fen moved out of pending when it settled). Existing
-- data: a refunded order was refunded whole in one piece; a reversed commission was
-- reversed whole; a settled one settled whole.

ALTER TABLE orders ADD COLUMN refunded_amount bigint NOT NULL DEFAULT 0;
UPDATE orders SET refunded_amount = amount WHERE status = 'refunded';
ALTER TABLE orders ADD CONSTRAINT orders_refunded_amount
    CHECK (refunded_amount BETWEEN 0 AND amount
           AND (status <> 'refunded' OR refunded_amount = amount));

CREATE TABLE order_refunds (
    order_id     bigint      NOT NULL REFERENCES orders (id),
    piece        int         NOT NULL CHECK (piece >= 1),
    amount       bigint      NOT NULL CHECK (amount >= 0),   -- fen (0: a 0-fen order)
    asked_by     text        NOT NULL,        -- the buyer, or the marketer after sales
    after_sales  boolean     NOT NULL,        -- by the marketers' route
    key          text,                        -- the request's idempotency key, if any
    note         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, piece),
    UNIQUE (order_id, asked_by, key)
);
INSERT INTO order_refunds (order_id, piece, amount, asked_by, after_sales, created_at)
    SELECT id, 1, amount, user_id, false, coalesce(refunded_at, now())
    FROM orders WHERE status = 'refunded';

ALTER TABLE payments ADD COLUMN piece int NOT NULL DEFAULT 1 CHECK (piece >= 1);
ALTER TABLE payments DROP CONSTRAINT payments_source;
ALTER TABLE payments ADD CONSTRAINT payments_source UNIQUE (kind, campaign, instance, line, piece);

ALTER TABLE commissions ADD COLUMN reversed bigint NOT NULL DEFAULT 0;
ALTER TABLE commissions ADD COLUMN settled bigint;
UPDATE commissions SET reversed = amount WHERE status = 'reversed';
UPDATE commissions SET settled = amount WHERE status = 'settled';
ALTER TABLE commissions ADD CONSTRAINT commissions_reversed CHECK (
    reversed BETWEEN 0 AND amount
    AND (status <> 'reversed' OR reversed = amount)
    AND ((status = 'settled') = (settled IS NOT NULL))
    AND (settled IS NULL OR settled BETWEEN 0 AND amount));
