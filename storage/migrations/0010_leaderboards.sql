-- Fission schema, version 10: leaderboards (排行榜, games.leaderboard).
--
-- `leaderboards` is the game's read model (games.leaderboard.game.READ_MODEL): per board,
-- a row per group (`all`, or a region) with the open period's top, the snapshot of its
-- topic; a row per (period, group, user) with the score and the board version it was
-- reached at (ties rank whoever reached it first higher); a row per closed (period,
-- group) with its final top (champions).
--
-- Notices gain `facts`: what a game needs to know of a paid order beyond its buyer (the
-- amount, when it was made, the buyer's referrer, who earned what, their regions),
-- written with the notice in the order's transaction (actors.notices).
--
-- `user_regions` is the region claim of each user's token, as last seen by a gateway.

CREATE TABLE leaderboards (
    campaign    text        NOT NULL,
    id          text        NOT NULL,
    status      text        NOT NULL,
    period      text        NOT NULL,
    region      text        NOT NULL,
    user_id     text,
    score       bigint,
    reached     bigint,
    top         jsonb,
    expires_at  timestamptz,
    version     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign, id)
);
-- A board's ranking of one (period, group), in rank order.
CREATE INDEX leaderboards_ranking ON leaderboards (campaign, period, region, score DESC, reached)
    WHERE status = 'entry';

ALTER TABLE game_notices ADD COLUMN facts jsonb;

CREATE TABLE user_regions (
    user_id     text        PRIMARY KEY,
    region      text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
