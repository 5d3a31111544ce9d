-- Fission schema, version 7: commands the pipeline owes games' owners about the shop's
-- orders (a lottery's extra draw per paid order, taken back on refund; games.core.Method
-- `on`). Written in the transaction that paid or refunded the order, delivered after it
-- commits, at least once: the owner takes each (campaign, method, order) once.

CREATE TABLE game_notices (
    id          bigserial   PRIMARY KEY,
    campaign    text        NOT NULL,
    method      text        NOT NULL,
    user_id     text        NOT NULL,
    order_key   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    UNIQUE (campaign, method, order_key)
);
CREATE INDEX game_notices_unsent ON game_notices (id) WHERE sent_at IS NULL;
