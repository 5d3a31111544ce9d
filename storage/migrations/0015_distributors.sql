-- Fission schema, version 15: who may earn commission, and distributor grades (分销等级).
-- New tables only: existing users have no row in any of them, which means what they
-- meant before (never applied; at the first grade), so no data moves.

-- A user's application to be a distributor and the marketers' decision on it
-- (commission.earners = "approved" pays only those approved).
CREATE TABLE distributors (
    user_id     text        PRIMARY KEY,
    status      text        NOT NULL CHECK (status IN ('applied', 'approved', 'revoked')),
    applied_at  timestamptz NOT NULL DEFAULT now(),
    decided_at  timestamptz,                 -- last approved or revoked
    decided_by  text                         -- the marketer who did it
);
CREATE INDEX distributors_status ON distributors (status, applied_at, user_id);

-- Every change of a distributor's status, in order: the audit trail of decisions.
CREATE TABLE distributor_changes (
    id          bigserial   PRIMARY KEY,
    user_id     text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('applied', 'approved', 'revoked')),
    actor       text        NOT NULL,        -- the user (applied) or the marketer
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX distributor_changes_user ON distributor_changes (user_id, id);

-- A user's grade as the pipeline last raised it (no row: the first configured grade).
CREATE TABLE distributor_grades (
    user_id     text        PRIMARY KEY,
    grade       text        NOT NULL,
    since       timestamptz NOT NULL
);

-- Every grade change, with what it was judged on: commission history's grade side.
CREATE TABLE grade_changes (
    id              bigserial   PRIMARY KEY,
    user_id         text        NOT NULL,
    from_grade      text        NOT NULL,
    to_grade        text        NOT NULL,
    sales_month     bigint      NOT NULL,    -- fen, level-1 bases settled this month
    direct_buyers   int         NOT NULL,
    own_spend       bigint      NOT NULL,    -- fen
    changed_at      timestamptz NOT NULL
);
CREATE INDEX grade_changes_user ON grade_changes (user_id, id);

-- Who a user brought in (direct buyers) and a beneficiary's level-1 settled bases by
-- month are what grades are judged on: the existing indexes on referrals (referrer),
-- orders (user_id, id) and commissions (beneficiary, closed_at) serve them.
