-- Fission schema, version 1: event store, group read model, idempotency, outbox,
-- and the pipeline's orders and payments.

CREATE TABLE events (
    stream      text        NOT NULL,              -- 'groupbuy:{campaign}'
    version     bigint      NOT NULL,              -- position in the stream, from 1
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, version)
);

-- Read model of every group, written in the same transaction as its events.
CREATE TABLE groups (
    campaign        text        NOT NULL,
    id              text        NOT NULL,
    status          text        NOT NULL,
    leader          text        NOT NULL,
    members         text[]      NOT NULL,
    size            int         NOT NULL,
    virtual_members int         NOT NULL DEFAULT 0,
    price           bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    version         int         NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign, id)
);
CREATE INDEX groups_open ON groups (campaign, expires_at) WHERE status = 'open';

-- First answer to each client command, keyed by the client's idempotency key.
CREATE TABLE command_results (
    stream      text        NOT NULL,
    user_id     text        NOT NULL,
    key         text        NOT NULL,
    result      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, user_id, key)
);

-- Deals and refunds for the pipeline, written with the events that caused them.
CREATE TABLE outbox (
    id            bigserial   PRIMARY KEY,
    stream        text        NOT NULL,
    version       bigint      NOT NULL,
    type          text        NOT NULL,
    data          jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    UNIQUE (stream, version)
);
CREATE INDEX outbox_pending ON outbox (id) WHERE processed_at IS NULL;

CREATE TABLE orders (
    id          bigserial   PRIMARY KEY,
    campaign    text        NOT NULL,
    group_id    text        NOT NULL,
    user_id     text        NOT NULL,
    sku         text        NOT NULL,
    amount      bigint      NOT NULL CHECK (amount >= 0),   -- fen
    status      text        NOT NULL,                       -- paid
    payment_ref text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign, group_id, user_id)
);
CREATE INDEX orders_user ON orders (user_id, id);

-- Every movement recorded through the payment adapter; one row per (kind, member).
CREATE TABLE payments (
    id          bigserial   PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('payment', 'refund')),
    campaign    text        NOT NULL,
    group_id    text        NOT NULL,
    user_id     text        NOT NULL,
    amount      bigint      NOT NULL CHECK (amount >= 0),   -- fen
    adapter     text        NOT NULL,
    reference   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, campaign, group_id, user_id)
);
