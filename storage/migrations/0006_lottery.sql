-- Fission schema, version 6: the lottery (抽奖) read model, one row per lottery campaign,
-- written in the same transaction as its events (games/lottery: READ_MODEL). It is what a
-- subscriber to `lottery:{campaign}` sees first; an owner rebuilds a lottery from its
-- events (per-user tallies are not here). The secret seed is in the event stream only
-- until the reveal, when it is copied here.

CREATE TABLE lotteries (
    campaign    text        NOT NULL,
    id          text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('open', 'ended')),
    title       text        NOT NULL,
    prizes      jsonb       NOT NULL,   -- [{id, title, kind, weight, stock, stock_left}]
    commitment  text,                   -- hex SHA-256 of the seed, once drawn
    seed        text,                   -- hex, once revealed
    draws       bigint      NOT NULL CHECK (draws >= 0),
    starts_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,   -- the campaign's end, when the seed is revealed
    version     bigint      NOT NULL,   -- frames on lottery:{campaign} so far (its seq)
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign, id)
);
