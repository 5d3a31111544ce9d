-- Fission schema, version 2: referrals, order refunds and the double-entry commission
-- ledger.

-- Who brought whom (分销关系): set once, by the referred user; two levels earn.
CREATE TABLE referrals (
    user_id   text        PRIMARY KEY,
    referrer  text        NOT NULL CHECK (referrer <> user_id),
    bound_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX referrals_referrer ON referrals (referrer);

ALTER TABLE orders ADD COLUMN refunded_at timestamptz;
ALTER TABLE orders ADD CONSTRAINT orders_status CHECK (status IN ('paid', 'refunded'));

-- One row per (order, level): what the order earns its buyer's referrers.
CREATE TABLE commissions (
    id           bigserial   PRIMARY KEY,
    order_id     bigint      NOT NULL REFERENCES orders (id),
    level        smallint    NOT NULL CHECK (level IN (1, 2)),
    beneficiary  text        NOT NULL,
    buyer        text        NOT NULL,
    campaign     text        NOT NULL,
    base         bigint      NOT NULL CHECK (base >= 0),      -- the order's amount, fen
    rate_bps     int         NOT NULL CHECK (rate_bps BETWEEN 0 AND 10000),
    amount       bigint      NOT NULL CHECK (amount > 0),      -- fen
    status       text        NOT NULL CHECK (status IN ('pending', 'settled', 'reversed')),
    settle_at    timestamptz NOT NULL,                         -- end of the return window
    created_at   timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz,                                  -- settled or reversed
    UNIQUE (order_id, level)
);
CREATE INDEX commissions_due ON commissions (settle_at) WHERE status = 'pending';
CREATE INDEX commissions_beneficiary ON commissions (beneficiary, id);

-- The ledger: every movement of commission money as lines that sum to zero per txn.
CREATE TABLE ledger_entries (
    id             bigserial   PRIMARY KEY,
    -- 'commissions:{first}-{last}:post' (one compound entry per pipeline batch),
    -- 'commission:{id}:settle', 'commission:{id}:reverse'
    txn            text        NOT NULL,
    account        text        NOT NULL,        -- 'shop:commission', 'user:{id}:pending', ...
    amount         bigint      NOT NULL CHECK (amount <> 0),   -- fen; negative = out
    commission_id  bigint      REFERENCES commissions (id),    -- null on the shop's sum line
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- No unique key here: a commission is written once (commissions' own unique key), and
-- its lines only with it, in the same transaction.
CREATE INDEX ledger_account ON ledger_entries (account, id);

-- The database itself refuses an unbalanced ledger: every statement that writes lines
-- writes whole transactions, and each must sum to zero.
CREATE FUNCTION ledger_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    SELECT txn INTO bad FROM written GROUP BY txn HAVING sum(amount) <> 0 LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not balance', bad
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_balanced AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION ledger_balanced();

-- Lines are never changed: a correction is a new transaction.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger lines are append-only' USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
