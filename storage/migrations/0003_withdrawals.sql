-- Fission schema, version 3: withdrawals of settled commission, reviewed when large.

CREATE TABLE withdrawals (
    id          bigserial   PRIMARY KEY,
    user_id     text        NOT NULL,
    key         text        NOT NULL,          -- the request's idempotency key
    amount      bigint      NOT NULL CHECK (amount > 0),   -- fen
    status      text        NOT NULL CHECK (status IN ('reviewing', 'paid', 'rejected')),
    payout_ref  text,                          -- the payment adapter's, once paid
    reviewer    text,                          -- the marketer who decided, if reviewed
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz,
    UNIQUE (user_id, key)
);
CREATE INDEX withdrawals_user ON withdrawals (user_id, id);
CREATE INDEX withdrawals_reviewing ON withdrawals (id) WHERE status = 'reviewing';
