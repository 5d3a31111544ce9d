-- Fission schema, version 12: a bargain's purchase is paid through the payment step
-- (held until paid where the provider's payer does not pay within the command): its
-- purchases, newest last, as [user, payment, amount, until, status], and whether the one
-- waiting took a unit of stock of its own.

ALTER TABLE bargains ADD COLUMN purchases jsonb NOT NULL DEFAULT '[]';
ALTER TABLE bargains ADD COLUMN purchase_unit bool NOT NULL DEFAULT false;
