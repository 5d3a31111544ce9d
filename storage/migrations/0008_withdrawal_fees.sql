-- Fission schema, version 8: a withdrawal's fee (fen), fixed when it is asked for (a
-- config change never alters a withdrawal already shown to its user). Paid, the payee
-- receives amount - fee and the fee is its own ledger line to shop:withdrawal_fees.

ALTER TABLE withdrawals ADD COLUMN fee bigint NOT NULL DEFAULT 0;
ALTER TABLE withdrawals ADD CONSTRAINT withdrawals_fee CHECK (0 <= fee AND fee < amount);
