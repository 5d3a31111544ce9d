-- Fission schema, version 9: users whose settled commission in a calendar year (in
-- commission.tax_zone) reached commission.tax_threshold_fen (个税), flagged once a year
-- by the pipeline as it settles, and listed in the marketers' tax report.

CREATE TABLE tax_flags (
    user_id     text        NOT NULL,
    year        int         NOT NULL,
    income      bigint      NOT NULL,   -- fen kept that year when the flag was raised
    flagged_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, year)
);
CREATE INDEX tax_flags_year ON tax_flags (year, user_id);
-- A user's settled commission by time, what a year's income sums.
CREATE INDEX commissions_settled ON commissions (beneficiary, closed_at) WHERE status = 'settled';
