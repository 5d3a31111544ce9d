-- Fission schema, version 13: the provider is asked only after the transaction that
-- decided to ask it commits. A lapsed hold's check waits in `provider_checks`, as a
-- refund waits in `provider_refunds`; both are tried again with a growing pause until
-- the provider answers, so an outage of the provider never holds the outbox up.

CREATE TABLE provider_checks (
    payment_id       text        PRIMARY KEY,
    campaign         text        NOT NULL,
    user_id          text        NOT NULL,
    attempts         int         NOT NULL DEFAULT 0,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    answered_at      timestamptz
);
CREATE INDEX provider_checks_due ON provider_checks (next_attempt_at)
    WHERE answered_at IS NULL;

ALTER TABLE provider_refunds ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now();
DROP INDEX provider_refunds_due;
CREATE INDEX provider_refunds_due ON provider_refunds (next_attempt_at)
    WHERE status = 'requested';
