-- Fission schema, version 5: the bargain (砍价) read model, one row per bargain, written
-- in the same transaction as its events (games/bargain: READ_MODEL, bargain_row).

CREATE TABLE bargains (
    campaign          text        NOT NULL,
    id                text        NOT NULL,
    status            text        NOT NULL
        CHECK (status IN ('open', 'floor_reached', 'bought', 'expired')),
    initiator         text        NOT NULL,
    list_price        bigint      NOT NULL CHECK (list_price > 0),       -- fen
    floor_price       bigint      NOT NULL CHECK (floor_price >= 0),     -- fen
    price             bigint      NOT NULL,                              -- fen, now
    -- The bargain's 64-bit seed as decimal text: every cut is recomputed from it and the
    -- helpers' order (text survives any JSON a tool reads it through).
    seed              text        NOT NULL,
    helpers           jsonb       NOT NULL DEFAULT '[]',  -- [[user, cut, at_ms], ...] in order
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    hold_until        timestamptz,                        -- set while stock is held at the floor
    version           int         NOT NULL,               -- its events so far (its topic's seq)
    helpers_to_floor  int         NOT NULL CHECK (helpers_to_floor >= 1),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign, id),
    CHECK (floor_price <= price AND price <= list_price)
);
-- Live bargains by deadline: listing them, and what a restarted owner re-arms.
CREATE INDEX bargains_live ON bargains (campaign, expires_at)
    WHERE status IN ('open', 'floor_reached');
