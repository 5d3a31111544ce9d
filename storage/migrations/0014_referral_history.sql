-- Fission schema, version 14: referral binding modes. A buyer may now be taken over by
-- another referrer ([commission] binding_mode "expiring" or "latest"); `referrals` stays
-- the one binding in force per user (what earns, what GET /api/referrals shows), and
-- every binding ever made is kept here, from when to when, for an operator to audit.
CREATE TABLE referral_history (
    id         bigserial   PRIMARY KEY,
    user_id    text        NOT NULL,
    referrer   text        NOT NULL CHECK (referrer <> user_id),
    bound_at   timestamptz NOT NULL,
    -- When another referrer took the user over (null: the binding in force), and who.
    ended_at   timestamptz CHECK (ended_at >= bound_at),
    ended_by   text,
    CHECK ((ended_at IS NULL) = (ended_by IS NULL))
);
-- At most one binding in force per user, as in `referrals`.
CREATE UNIQUE INDEX referral_history_in_force ON referral_history (user_id)
    WHERE ended_at IS NULL;
CREATE INDEX referral_history_user ON referral_history (user_id, bound_at);
CREATE INDEX referral_history_referrer ON referral_history (referrer, bound_at);

-- Bindings made before this version are in force since they were made.
INSERT INTO referral_history (user_id, referrer, bound_at)
    SELECT user_id, referrer, bound_at FROM referrals ORDER BY bound_at, user_id;
