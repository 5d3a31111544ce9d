-- Fission schema, version 11: pay to join. A group-buy's seats are held until paid
-- (`groups.seats`); orders are made when money is taken and confirmed when the deal
-- completes (`orders.confirmed_at`); refunds go to the provider after the commit that
-- decides them (`provider_refunds`); the provider's word on a payment reaches the game
-- as a notice with its params (`game_notices.params`). The sandbox provider keeps what
-- it knows in its own tables, apart from ours, as a real provider would.

ALTER TABLE groups ADD COLUMN seats jsonb NOT NULL DEFAULT '[]';

-- Orders made before this version were made when their deal completed.
ALTER TABLE orders ADD COLUMN confirmed_at timestamptz;
UPDATE orders SET confirmed_at = created_at;
CREATE INDEX orders_waiting ON orders (campaign, instance) WHERE confirmed_at IS NULL;

-- The provider's payment (out_trade_no) a movement took or gives back.
ALTER TABLE payments ADD COLUMN payment_id text;

ALTER TABLE game_notices ADD COLUMN params jsonb;

CREATE TABLE provider_refunds (
    refund_id    text        PRIMARY KEY,
    payment_id   text        NOT NULL,
    user_id      text        NOT NULL,
    amount       bigint      NOT NULL CHECK (amount > 0),
    total        bigint      NOT NULL CHECK (total >= amount),
    status       text        NOT NULL DEFAULT 'requested'
                             CHECK (status IN ('requested', 'processing', 'succeeded',
                                               'closed', 'abnormal')),
    attempts     int         NOT NULL DEFAULT 0,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_refunds_due ON provider_refunds (created_at) WHERE status = 'requested';

-- The sandbox provider's own books (it plays WeChat Pay; see actors/paysandbox.py).
CREATE TABLE sandbox_payments (
    payment_id      text        PRIMARY KEY,
    payer           text        NOT NULL,
    amount          bigint      NOT NULL CHECK (amount > 0),
    status          text        NOT NULL
                                CHECK (status IN ('pending', 'paid', 'refunded', 'closed')),
    expires_at      bigint      NOT NULL,
    paid_at         bigint,
    refunded        bigint      NOT NULL DEFAULT 0 CHECK (refunded <= amount),
    refunds         jsonb       NOT NULL DEFAULT '{}',  -- refund id -> fen
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sandbox_keys (
    id              int         PRIMARY KEY CHECK (id = 1),
    private_pem     text        NOT NULL,
    api_v3_key      text        NOT NULL
);
